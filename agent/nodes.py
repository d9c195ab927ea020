"""Graph nodes. Each is a plain function of (state, runtime) wrapped by :func:`step`, which times
it, writes its trace event, and reports it to whoever streams the run."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.context import Context
from agent.followup import standalone_question, topic_of_turn
from agent.router import RouteDecision
from agent.state import TURN_RESET, State, add_timings, no_image_notice
from agent.trace import TraceEvent, append_event, summarise
from tools.answer import AnswerWriter, citation, content_words, with_citation
from tools.common import Cancelled, ToolError, cancellable
from tools.image_prompt import PromptRewriter, request_subject, source_for_answer


class StepError(RuntimeError):
    """A step failed in a way the run cannot recover from; the message is for the user."""


TRACE_NOT_WRITTEN = "the trace could not be written"


def _context(runtime: Runtime[Context] | None) -> Context:
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context()  # runtime.context is None without context=


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def step(name: str, tool: str | None = None) -> Callable:
    """Wrap a node: ``fn(state, ctx, event) -> dict | Command``; ``event`` is the trace event's
    fields for the node to fill (input, output, decision, reason, model, data)."""

    def decorate(fn: Callable[[State, Context, dict[str, Any]], Any]) -> Callable:
        def node(state: State, runtime: Runtime[Context]) -> Any:
            ctx = _context(runtime)
            if ctx.cancel is not None and ctx.cancel.is_set():
                raise Cancelled("cancelled")
            ensured: dict[str, Any] = {}
            # On a conversation thread (LangGraph's server, a checkpointer) the previous turn's
            # run_id/run_dir are still in the state when a caller sends only a question: a turn
            # whose run already finished is a new run, with its own id and folder.
            if not state.get("run_id") or state["run_id"] == state.get("done_run"):
                ensured["run_id"] = new_run_id()
            if not state.get("run_dir") or ensured or state["run_dir"] == state.get("done_dir"):
                run_id = ensured.get("run_id") or state["run_id"]
                ensured["run_dir"] = str(Path(ctx.settings.out_dir) / run_id)
            run_id = ensured.get("run_id") or state["run_id"]
            # The first step of a turn starts from clean per-turn fields (a conversation thread's
            # checkpoint still holds the previous turn's).
            reset = TURN_RESET if state.get("turn_of") != run_id else {}
            merged: State = {**state, **reset, **ensured}  # type: ignore[typeddict-item]
            fields: dict[str, Any] = {"tool": tool}
            start = time.perf_counter()
            error: BaseException | None = None
            out: Any = {}
            try:
                with cancellable(ctx.cancel):
                    out = fn(merged, ctx, fields)
            except BaseException as exc:  # recorded in the trace, then re-raised to stop the run
                error = exc
            ms = round((time.perf_counter() - start) * 1000, 1)
            handled = fields.pop("error", None)  # a failure the node recovered from (it still shows)
            event = TraceEvent(run_id=run_id, step=name, ms=ms,
                               error=error_message(error) if error else handled, **fields)
            try:
                append_event(merged["run_dir"], event)
            except OSError as exc:  # the run goes on; Agent.stream turns this into a result notice
                ctx.progress(type="notice", kind="unsaved", step=name, text=f"{TRACE_NOT_WRITTEN} to {merged['run_dir']}: "
                             f"{exc.strerror or exc}")
            _emit(event)
            if error is not None:
                raise error
            update = dict((out.update if isinstance(out, Command) else out) or {})
            update = {
                **reset, **update, **ensured, "turn_of": run_id,
                "notices": [*(merged.get("notices") or []), *update.get("notices", [])],
                "timings_ms": add_timings(merged.get("timings_ms"), {name: ms}),
            }
            if isinstance(out, Command):
                return Command(goto=out.goto, update=update)
            return update

        # Not functools.wraps: LangGraph reads the signature to pass `runtime`, and __wrapped__
        # would show it fn's own (state, ctx, event) instead.
        node.__name__, node.__qualname__, node.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return node

    return decorate


def _emit(event: TraceEvent) -> None:
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a graph run
        return
    writer({"type": "step", "event": event.model_dump()})


def error_message(exc: BaseException) -> str:
    """One line for the user: our own errors as they are, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, Cancelled):
        return "cancelled"
    return text if isinstance(exc, (ToolError, StepError, ValueError)) else f"{type(exc).__name__}: {text}"


def ensure_loaded(tool: Any, ev: dict[str, Any], key: str) -> None:
    """Load a model now if it is not loaded yet, and record how long that took in the trace
    (``data.load_ms``), so a cold step's time is not mistaken for its work."""
    if getattr(tool, "loaded", True) or not hasattr(tool, "load"):
        return
    start = time.perf_counter()
    tool.load()
    ev.setdefault("data", {})[f"load_{key}_ms"] = round((time.perf_counter() - start) * 1000, 1)


def within_limit(text: str, limit: int, what: str, detail: str = "") -> tuple[str, list[str]]:
    """``text`` cut to ``limit`` characters, and the notice saying so (none when it fits): typed
    questions and transcripts obey the same limit (``max_question_chars``)."""
    if len(text) <= limit:
        return text, []
    return text[:limit].rstrip(), [f"the {what} was {len(text)} characters long{detail}; only the first {limit} were used"]


def question_of(state: State) -> str:
    """The question this turn answers: the standalone rewrite of a follow-up, else what was said."""
    return (state.get("standalone_question") or state.get("transcript") or state.get("question") or "").strip()


# --------------------------------------------------------------------------------------------


@step("transcribe", tool="asr")
def transcribe(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    asr = ctx.toolbox.asr
    ev["model"] = asr.name
    ev["input"] = state["audio_path"]
    from tools.asr import SAMPLE_RATE, load_audio

    samples = load_audio(state["audio_path"])  # bad audio fails here, before the model loads
    ctx.progress(type="status", step="transcribe", text="transcribing")
    ensure_loaded(asr, ev, "asr")
    text = asr.transcribe(samples).strip()
    ev["output"] = summarise(text)
    if not text:
        raise StepError("no speech recognised in the audio")
    # A long recording is not one question: the typed question's limit applies.
    limit = ctx.settings.max_question_chars
    transcript, notices = within_limit(text, limit, "transcript", f" ({samples.size / SAMPLE_RATE:.0f} s of audio)")
    if notices:
        ev["data"] = {**ev.get("data", {}), "transcript_chars": len(text), "used_chars": limit}
    return {"transcript": transcript, "notices": notices}


@step("decide", tool="llm")
def decide(state: State, ctx: Context, ev: dict[str, Any]) -> Command[Literal["search_wikipedia", "answer", "draw"]]:
    asked = question_of(state)
    router = ctx.toolbox.router
    ev["model"] = getattr(router.llm, "name", None)
    ev["input"] = summarise(asked)
    ensure_loaded(router.llm, ev, "llm")
    ev["model"] = getattr(router.llm, "name", None)  # an endpoint learns its model's name on loading
    history = state.get("history") or []
    question, how = standalone_question(asked, history[-3:], router.llm)
    forced = state.get("force_route")
    if forced:
        decision = RouteDecision(route=forced, reason=f"the route was forced by the caller (route={forced}); "
                                 "the LLM did not decide")
    else:
        decision = router.decide(question)
    ev["decision"], ev["reason"] = decision.route, decision.reason
    ev["data"] = {**ev.get("data", {}), "scores": decision.scores, "attempts": decision.attempts, "fallback": decision.fallback,
                  "errors": decision.errors, "label_method": router.method}
    if getattr(router.llm, "label_fallbacks", None):  # an endpoint: why better scoring methods were given up
        ev["data"]["label_fallbacks"] = list(router.llm.label_fallbacks)
    ctx.progress(type="status", step="decide", text=f"decided: {decision.route}", reason=decision.reason)
    if how:
        ev["data"]["standalone_question"] = question
        ev["data"]["standalone_how"] = how
        ev["input"] = summarise(f"{asked} -> standalone: {question}")
    update: dict[str, Any] = {
        "standalone_question": question if how else None,
        "route": decision.route,
        "route_reason": decision.reason,
        "route_scores": decision.scores,
        "route_fallback": decision.fallback,
    }
    if decision.fallback:
        update["notices"] = [f"route decision fell back to '{decision.route}': {decision.errors[-1]}"]
    goto = {"search": "search_wikipedia", "answer": "answer", "draw": "draw"}[decision.route]
    return Command(goto=goto, update=update)


def keyword_query(text: str) -> str:
    """A looser query for a second search: content words only, names first."""
    words = content_words(text)
    names = [w for w in re.findall(r"\b[A-Z][\w'-]+", text) if w.lower() in words]
    ordered = list(dict.fromkeys([n.lower() for n in names] + words))
    return " ".join(ordered)


@step("search_wikipedia", tool="wikipedia")
def search_wikipedia(state: State, ctx: Context, ev: dict[str, Any]) -> Command[Literal["search_wikipedia", "answer"]]:
    settings = ctx.settings
    attempt = state.get("search_attempts", 0) + 1
    query = state.get("search_query") if attempt > 1 else question_of(state).rstrip("?!. ")
    ev["input"] = summarise(query)
    ev["data"] = {"attempt": attempt}
    ctx.progress(type="status", step="search_wikipedia", text=f'searching Wikipedia for "{query}"')
    try:
        wiki = ctx.toolbox.wiki
        ev["model"] = getattr(wiki, "name", None)
        ensure_loaded(wiki, ev, "wiki")
        passages = wiki.search(query, k=settings.search_k)
    except ToolError as exc:
        ev["error"] = str(exc)
        ev["output"] = "search failed; answering directly"
        return Command(goto="answer", update={
            "search_query": query, "search_attempts": attempt, "passages": [],
            "notices": [f"Wikipedia search failed ({exc}); answered without it"],
        })
    found = [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in passages]
    ev["output"] = summarise([f"{p['title']} ({p.get('score', 0):.2f})" for p in found]) if found else "no results"
    update: dict[str, Any] = {"search_query": query, "search_attempts": attempt, "passages": found}
    if not found and attempt < settings.max_search_attempts:
        retry = keyword_query(question_of(state))
        if retry and retry != query:
            ev["decision"], ev["reason"] = "search again", f'nothing found; retrying with keywords "{retry}"'
            return Command(goto="search_wikipedia", update={**update, "search_query": retry})
    if not found:
        update["notices"] = [f'No Wikipedia article matched "{summarise(query, 80)}"; answered directly without a source']
    return Command(goto="answer", update=update)


@step("answer", tool="llm")
def answer(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    question = question_of(state)
    llm = ctx.toolbox.llm
    writer = AnswerWriter(llm, max_new_tokens=ctx.settings.max_answer_tokens)
    ev["model"] = getattr(llm, "name", None)
    passages = state.get("passages") or []

    def on_token(piece: str) -> None:
        ctx.progress(type="token", text=piece)

    ctx.progress(type="status", step="answer", text="writing the answer")
    if state.get("route") == "search" and passages:
        ev["input"] = summarise(f"{question} | passage: {passages[0]['title']}")
        result = writer.grounded(question, passages, on_token=on_token)
        text = with_citation(result)
        found: bool | None = result.found
        ev["reason"] = result.how
        ev["data"] = {"grounded": True, "found": result.found, "quote": result.quote,
                      "model_reply": summarise(result.model_reply)}
    else:
        ev["input"] = summarise(question)
        result = writer.direct(question, on_token=on_token)
        text, found = result.text, None
        ev["data"] = {"grounded": False}
        if result.how:
            ev["reason"] = result.how
            ev["data"]["model_reply"] = summarise(result.model_reply)
    if not text.strip():
        raise StepError("the language model returned an empty answer")
    ev["output"] = summarise(text)
    sources = [
        {"title": p["title"], "url": p.get("url", ""), "snippet": summarise(p.get("text", ""), 200) or ""}
        for p in passages
    ]
    return {"answer": text, "answer_body": result.text, "citation": citation(result), "answer_found": found,
            "sources": sources}


@step("draw", tool="image_prompt")
def draw(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    """The draw route pictures the request itself: its subject becomes the image prompt."""
    subject = request_subject(question_of(state))
    if not will_draw(ctx):
        return _plain(subject, ctx, ev, "the request")
    return _rewrite(subject, ctx, ev, min_share=0.8)


@step("rewrite_image_prompt", tool="image_prompt")
def rewrite_image_prompt(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    passages = state.get("passages") or []
    title = passages[0]["title"] if passages and state.get("route") == "search" else None
    # Nothing found in the passages: picture the question's topic only.
    answer_text = "" if state.get("answer_found") is False else state.get("answer_body") or ""
    source = source_for_answer(question_of(state), answer_text, title)
    if not will_draw(ctx):
        return _plain(source, ctx, ev, "the answer")
    return _rewrite(source, ctx, ev, min_share=0.5)


def _plain(source: str, ctx: Context, ev: dict[str, Any], what: str) -> dict[str, Any]:
    """No image model: nothing will be drawn and the prompt only labels the card, so the LLM's
    1-4 s rewrite is skipped and the prompt is built from ``source`` as it is."""
    result = PromptRewriter(ctx.toolbox.llm).plain(
        source, f"no image model is configured, so the LLM did not rewrite the prompt; built from {what}")
    ev["input"], ev["output"], ev["reason"] = summarise(source), summarise(result.prompt), result.note
    ev["data"] = {"rewritten": False, "skipped": "no image model"}
    return {"image_prompt": result.prompt}


def will_draw(ctx: Context) -> bool:
    """Is an image model configured (so an image prompt will really be drawn)?"""
    return getattr(ctx.toolbox.image, "model", True) is not None


def _rewrite(source: str, ctx: Context, ev: dict[str, Any], *, min_share: float) -> dict[str, Any]:
    llm = ctx.toolbox.llm
    ev["model"] = getattr(llm, "name", None)
    ev["input"] = summarise(source)
    ctx.progress(type="status", step="rewrite_image_prompt", text="writing the image prompt")
    result = PromptRewriter(llm).rewrite(source, min_share=min_share)
    ev["output"] = summarise(result.prompt)
    ev["reason"] = result.note
    ev["data"] = {"rewritten": result.rewritten, "model_reply": summarise(result.model_reply)}
    return {"image_prompt": result.prompt}


@step("generate_image", tool="diffusion")
def generate_image(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    image = ctx.toolbox.image
    prompt = state["image_prompt"]
    seed = state.get("seed", ctx.settings.seed)
    ev["model"] = image.name or "none"
    ev["input"] = summarise(f"{prompt} (seed {seed})")
    out_path = Path(state["run_dir"]) / "image.png"
    ctx.progress(type="status", step="generate_image", text="drawing")

    def progress(done: int, total: int) -> None:
        ctx.progress(type="image_step", step="generate_image", done=done, total=total,
                     text=f"drawing, step {done}/{total}")

    try:
        result = image.generate(prompt, out_path, seed=seed, progress=progress)
    except OSError as exc:  # the picture (or its card) cannot be written: the answer still stands
        why = f"No image was saved: {out_path} could not be written ({exc.strerror or exc})"
        ev["error"], ev["output"] = why, "no image saved"
        return {"image_path": None, "image_model": image.name, "image_generated": False, "notices": [why],
                "no_image_kind": "unsaved", "no_image_reason": why}
    ev["output"] = f"{result.path} ({'generated' if result.generated else 'NOT generated: labelled card'})"
    ev["data"] = {"generated": result.generated, "steps": result.steps, "size": [result.width, result.height]}
    update: dict[str, Any] = {
        "image_path": str(result.path), "image_model": result.model, "image_generated": result.generated,
    }
    if not result.generated:
        ev["reason"] = result.notice
        why = result.reason
        update.update(notices=[no_image_notice(why)], no_image_kind=result.missing, no_image_reason=why)
    return update


@step("finish")
def finish(state: State, ctx: Context, ev: dict[str, Any]) -> dict[str, Any]:
    update: dict[str, Any] = {}
    if state.get("route") == "draw":
        prompt = state.get("image_prompt", "")
        if state.get("want_image") is False:
            text = f"Images are off for this question, so nothing was drawn. The picture would show: {prompt}"
        elif state.get("image_generated"):
            text = f"I drew: {prompt}"
        else:
            text = f"I could not draw it: no image was generated (see the notice). The picture would show: {prompt}"
        update["answer"] = text
        ev["output"] = summarise(text)
    else:
        ev["output"] = summarise(state.get("answer"))
    final = {**state, **update}
    # Mark the run finished and drop its one-shot inputs, so the next turn on this thread starts
    # a new run and does not re-use this one's audio, forced route or image switch.
    update.update(done_run=state.get("run_id"), done_dir=state.get("run_dir"), audio_path=None,
                  force_route=None, want_image=None)
    update["history"] = [{
        "run_id": state.get("run_id"),
        "question": question_of(state),
        "route": state.get("route"),
        "answer": (final.get("answer_body") or final.get("answer") or "").split("\n\n")[0][:500],
        "topic": topic_of_turn(final),
    }]
    return update
