"""Graph nodes: ``start_turn`` opens a turn; every other node is a plain function of
(state, ctx, record) wrapped by :func:`agent.step.step`, which times it, writes its trace event
from ``record`` and reports it to whoever streams the run."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite

from agent.context import Context
from agent.followup import standalone_question, topic_of_turn
from agent.messages import (as_messages, legacy_messages, message_text, pending_question, thread_turns, trimmed,
                            turn_messages, turns_of)
from agent.router import RouteDecision
from agent.state import TURN_RESET, State, no_image_notice
from agent.step import (StepError, StepRecord, check_cancelled, context_of, ensure_loaded, error_message, step,
                        timed_load)
from agent.trace import summarise
from tools.answer import GROUNDED_PASSAGES, Answer, AnswerWriter, citation, with_citation
from tools.arithmetic import compute
from tools.chat import NOSTREAM, tagged
from tools.common import Cancelled, ToolError
from tools.image_prompt import PromptRewriter, request_subject, source_for_answer
from tools.source_image import picture_source
from tools.text import content_words


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def start_turn(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Open a turn: its run id and folder, and clean per-turn fields. On a conversation thread
    (a checkpointer, LangGraph's server) the previous turn's results and ids are still in the
    state when a caller sends only a question: a turn whose run already finished is a new run.
    A chat client sends no ``question`` but ``messages``: the turn answers the last human one."""
    ctx = context_of(runtime)
    check_cancelled(ctx)
    run_id = state.get("run_id")
    if not run_id or run_id == state.get("done_run"):
        run_id = new_run_id()
    run_dir = state.get("run_dir")
    if not run_dir or run_id != state.get("run_id") or run_dir == state.get("done_dir"):
        run_dir = str(Path(ctx.settings.out_dir) / run_id)
    reset = {k: Overwrite(v) if k in ("notices", "timings_ms") else v for k, v in TURN_RESET.items()}
    update: dict[str, Any] = {**reset, "run_id": run_id, "run_dir": run_dir, "turn_of": run_id, "asked_message": None}
    messages = as_messages(state.get("messages"))
    if state.get("history") and not turns_of(messages):  # a checkpoint from before messages
        update["messages"] = [RemoveMessage(id=REMOVE_ALL_MESSAGES), *legacy_messages(state["history"]), *messages]
        update["history"] = None
    pending = None if state.get("audio_path") else pending_question(messages, state.get("question"))
    if pending is not None:
        text = " ".join(message_text(pending).split())
        question, cut = within_limit(text, ctx.settings.max_question_chars, "question")
        update.update(question=question, asked_message=pending.id)
        if cut:
            update["notices"] = Overwrite(cut)
    return update


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
def transcribe(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    asr = ctx.toolbox.asr
    rec.model = asr.name
    rec.input = state["audio_path"]
    from tools.audio import SAMPLE_RATE, load_audio

    samples = load_audio(state["audio_path"])  # bad audio fails here, before the model loads
    ensure_loaded(asr, rec, "asr", ctx, "speech model")  # "loading the speech model" while it loads
    if getattr(asr, "runtime", ""):  # where the local Whisper runs, and why where it is a choice
        rec.data["asr_runtime"] = asr.runtime
        if asr.runtime_note:
            rec.data["asr_runtime_note"] = asr.runtime_note
    if getattr(asr, "device", ""):
        rec.data["asr_device"] = f"{asr.device} {asr.dtype}".strip()
        if getattr(asr, "device_note", ""):
            rec.data["asr_device_note"] = asr.device_note
    ctx.progress(type="status", step="transcribe", text="transcribing")
    text = asr.transcribe(samples).strip()
    rec.output = summarise(text)
    if not text:
        raise StepError("no speech recognised in the audio")
    # A long recording is not one question: the typed question's limit applies.
    limit = ctx.settings.max_question_chars
    transcript, notices = within_limit(text, limit, "transcript", f" ({samples.size / SAMPLE_RATE:.0f} s of audio)")
    if notices:
        rec.data.update({"transcript_chars": len(text), "used_chars": limit})
    return {"transcript": transcript, "notices": notices}


@step("decide", tool="llm")
def decide(state: State, ctx: Context, rec: StepRecord) -> Command[Literal["search_wikipedia", "answer", "draw"]]:
    asked = question_of(state)
    router = ctx.toolbox.router
    rec.model = router.llm.name
    rec.input = summarise(asked)
    fresh = not getattr(router.llm, "loaded", True)
    ensure_loaded(router.llm, rec, "llm", ctx, "LLM")
    rec.model = router.llm.name  # an endpoint learns its model's name on loading
    if getattr(router.llm, "runtime", ""):  # which runtime the LLM is on, and why where it is a choice
        rec.data["llm_runtime"] = router.llm.runtime
        if router.llm.runtime_note:
            rec.data["llm_runtime_note"] = router.llm.runtime_note
        if getattr(router.llm, "device", ""):
            rec.data["llm_device"] = router.llm.device
            if getattr(router.llm, "dtype", ""):
                rec.data["llm_dtype"] = router.llm.dtype
            if getattr(router.llm, "device_note", ""):
                rec.data["llm_device_note"] = router.llm.device_note
        if getattr(router.llm, "threads", 0):
            rec.data["llm_threads"] = router.llm.threads
            if router.llm.threads_note:
                rec.data["llm_threads_note"] = router.llm.threads_note
    if not state.get("force_route"):
        _warm_up(router, rec, ctx, calibrate=fresh)
    embedder = getattr(getattr(router, "_classifier", None), "_embedder", None)
    if getattr(embedder, "runtime", ""):  # the route classifier's (and the search's) embedding model
        rec.data["embeddings_runtime"] = embedder.runtime
        rec.data["embeddings_device"] = embedder.device
        if embedder.runtime_note:
            rec.data["embeddings_runtime_note"] = embedder.runtime_note
    history = thread_turns(state)
    if history:
        ctx.progress(type="status", step="decide", text="rewriting the follow-up")
    with tagged("askdraw:followup", NOSTREAM):  # the rewrite is not part of the answer's token stream
        question, how = standalone_question(asked, history[-3:], router.llm)
    if not state.get("force_route"):
        ctx.progress(type="status", step="decide", text="deciding the route")
    forced = state.get("force_route")
    if forced:
        decision = RouteDecision(route=forced, reason=f"the route was forced by the caller (route={forced}); "
                                 "the LLM did not decide")
    else:
        decision = router.decide(question)
    rec.decision, rec.reason = decision.route, decision.reason
    rec.data.update({"scores": decision.scores, "attempts": decision.attempts, "fallback": decision.fallback,
                     "errors": decision.errors, "label_method": router.method})
    if decision.evidence:  # the LLM's scores, the classifier's, and how they were combined
        rec.data["evidence"] = decision.evidence
    if getattr(router.llm, "label_fallbacks", None):  # an endpoint: why better scoring methods were given up
        rec.data["label_fallbacks"] = list(router.llm.label_fallbacks)
    ctx.progress(type="status", step="decide", text=f"decided: {decision.route}", reason=decision.reason)
    if how:
        rec.data["standalone_question"] = question
        rec.data["standalone_how"] = how
        rec.input = summarise(f"{asked} -> standalone: {question}")
    update: dict[str, Any] = {
        "standalone_question": question if how else None,
        "route": decision.route,
        "route_reason": decision.reason,
        "route_scores": decision.scores,
        "route_fallback": decision.fallback,
    }
    if decision.tool_args:  # the route tool call's arguments: the search query, the scene to draw
        rec.data["tool_args"] = decision.tool_args
        if decision.route == "search" and decision.tool_args.get("query"):
            update["search_query"] = decision.tool_args["query"]
        if decision.route == "draw" and decision.tool_args.get("scene"):
            update["image_prompt"] = decision.tool_args["scene"]
    if decision.fallback:
        update["notices"] = [f"route decision fell back to '{decision.route}': {decision.errors[-1]}"]
    goto = {"search": "search_wikipedia", "answer": "answer", "draw": "draw"}[decision.route]
    return Command(goto=goto, update=update)


def _warm_up(router: Any, rec: StepRecord, ctx: Context, *, calibrate: bool) -> None:
    """The route decision's one-time setup, timed as loading: the classifier's embedding model, and
    (``calibrate``: the LLM was just loaded) the LLM's label calibration, its scores on content-free
    inputs (~5 s with the starter model; ``Agent.preload`` does the same). A failure here is left
    for ``router.decide`` to meet again and report."""
    if getattr(router, "_classifier", None) is not None:
        try:
            embedder = router.classifier.embedder
        except Exception:  # noqa: BLE001 - decide() says why the classifier is missing
            embedder = None
        if embedder is not None and not getattr(embedder, "loaded", True):
            timed_load(router.load_classifier, rec, "route_classifier", ctx, "route classifier")
    uses_tools = getattr(router, "uses_tools", None)
    if uses_tools is not None and uses_tools():
        return  # a tool-call decision: no label calibration
    if (calibrate and getattr(router, "calibrate", False) and getattr(router, "_bias", True) is None
            and getattr(router, "method", None) in ("logits", "logprobs")):
        try:  # the LLM's label bias, measured once per model: setup, not this decision's work
            timed_load(router.bias, rec, "route_calibration", ctx, "route calibration",
                       text="calibrating the route decision (first use of the LLM)")
        except Exception:  # noqa: BLE001 - decide() meets it again and falls back, saying why
            pass


def keyword_query(text: str) -> str:
    """A looser query for a second search: content words only, names first."""
    words = content_words(text)
    names = [w for w in re.findall(r"\b[A-Z][\w'-]+", text) if w.lower() in words]
    ordered = list(dict.fromkeys([n.lower() for n in names] + words))
    return " ".join(ordered)


@step("search_wikipedia", tool="wikipedia")
def search_wikipedia(state: State, ctx: Context, rec: StepRecord) -> Command[
        Literal["search_wikipedia", "source_image", "answer"]]:
    settings = ctx.settings
    attempt = state.get("search_attempts", 0) + 1
    # the first search: the route tool call's query where the model gave one, else the question
    query = state.get("search_query") or question_of(state).rstrip("?!. ")
    rec.input = summarise(query)
    rec.data.update({"attempt": attempt})
    ctx.progress(type="status", step="search_wikipedia", text=f'searching Wikipedia for "{query}"')
    try:
        wiki = ctx.toolbox.wiki
        rec.model = wiki.name
        ensure_loaded(wiki, rec, "wiki", ctx, "Wikipedia index")
        passages = wiki.search(query, k=settings.search_k)
    except ToolError as exc:
        rec.error = str(exc)
        rec.output = "search failed; answering directly"
        return Command(goto="answer", update={
            "search_query": query, "search_attempts": attempt, "passages": [],
            "notices": [f"Wikipedia search failed ({exc}); answered without it"],
        })
    found = [p.model_dump() if hasattr(p, "model_dump") else dict(p) for p in passages]
    rec.output = summarise([f"{p['title']} ({p.get('score', 0):.2f})" for p in found]) if found else "no results"
    update: dict[str, Any] = {"search_query": query, "search_attempts": attempt, "passages": found}
    if not found and attempt < settings.max_search_attempts:
        retry = keyword_query(question_of(state))
        if retry and retry != query:
            rec.decision, rec.reason = "search again", f'nothing found; retrying with keywords "{retry}"'
            return Command(goto="search_wikipedia", update={**update, "search_query": retry})
    if not found:
        update["notices"] = [f'No Wikipedia article matched "{summarise(query, 80)}"; answered directly without a source']
    # The top source's own picture, where the corpus has pictures (a ZIM file, live Wikipedia) and
    # the turn is not text only.
    wants_picture = found and state.get("want_image") is not False and picture_source(ctx.toolbox.wiki) is not None
    return Command(goto="source_image" if wants_picture else "answer", update=update)


@step("source_image", tool="wikipedia")
def source_image(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    """The top source's lead image, saved in the run folder (tools.source_image). A failure (no
    picture in the article, a network error, bad bytes) never fails the turn: the step says why."""
    title = state["passages"][0]["title"]
    wiki = ctx.toolbox.wiki
    rec.model, rec.input = getattr(wiki, "name", None), summarise(title)
    ctx.progress(type="status", step="source_image", text=f'fetching the picture of "{title}"')
    try:
        picture = picture_source(wiki).lead_image(title, Path(state["run_dir"]))
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - NoPicture says why; anything else is reported the same way
        rec.output, rec.reason = "no picture", error_message(exc)
        return {"source_image": None}
    rec.output = f"{picture.path} (Wikipedia's picture: {picture.file})"
    rec.reason = picture.credit
    rec.data.update({"file": picture.file, "origin": picture.origin, "url": picture.url,
                     "size": [picture.width, picture.height]})
    return {"source_image": picture.model_dump()}


@step("answer", tool="llm")
def answer(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    question = question_of(state)
    llm = ctx.toolbox.llm
    writer = AnswerWriter(llm, max_new_tokens=ctx.settings.max_answer_tokens)
    rec.model = llm.name
    passages = state.get("passages") or []

    def on_token(piece: str) -> None:
        # A cancelled turn stops mid-answer: raising here ends the generation, whatever the model
        # (askdraw's own models also check the cancel event between tokens).
        check_cancelled(ctx)
        ctx.progress(type="token", text=piece)

    ctx.progress(type="status", step="answer", text="writing the answer")
    with tagged("askdraw:answer"):
        return _answer(state, ctx, rec, writer, question, passages, on_token)


def _answer(state: State, ctx: Context, rec: StepRecord, writer: AnswerWriter, question: str, passages: list,
            on_token: Any) -> dict[str, Any]:
    if state.get("route") == "search" and passages:
        read = passages[:GROUNDED_PASSAGES]
        rec.input = summarise(f"{question} | passages: " + "; ".join(p["title"] for p in read))
        _load_parser(rec, ctx)
        result = writer.grounded(question, passages, on_token=on_token)
        text = with_citation(result)
        found: bool | None = result.found
        rec.reason = result.how
        rec.data.update({"grounded": True, "found": result.found, "quote": result.quote, "short": result.short,
                         "source": result.source, "passages_read": len(read)})
    else:
        rec.input = summarise(question)
        result = _direct(question, writer, rec, on_token)
        text, found = result.text, None
    if not text.strip():
        raise StepError("the language model returned an empty answer")
    rec.output = summarise(text)
    sources = [
        {"title": p["title"], "url": p.get("url", ""), "snippet": summarise(p.get("text", ""), 200) or ""}
        for p in passages
    ]
    return {"answer": text, "answer_body": result.text, "citation": citation(result), "answer_found": found,
            "sources": sources}


def _load_parser(rec: StepRecord, ctx: Context) -> None:
    """spaCy's pipeline for the short answer, loaded (and timed as loading) on its first use."""
    import tools.short_answer as short_answer

    if not short_answer.spacy_pipeline_tried():
        timed_load(short_answer.spacy_pipeline, rec, "short_answer", ctx, "short-answer parser")


def _direct(question: str, writer: AnswerWriter, rec: StepRecord, on_token: Any) -> Answer:
    """A direct answer: computed for arithmetic (a small LLM gets it wrong), else the LLM's."""
    rec.data.update({"grounded": False})
    computed = compute(question)
    if computed is not None:
        rec.reason = "arithmetic: computed, not asked of the LLM (small models get arithmetic wrong)"
        rec.data["computed"] = computed.expression
        on_token(computed.answer)
        return Answer(text=computed.answer, found=True)
    result = writer.direct(question, on_token=on_token)
    if result.how:
        rec.reason = result.how
        rec.data["model_reply"] = summarise(result.model_reply)
    return result


@step("draw", tool="image_prompt")
def draw(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    """The draw route pictures the request itself: its subject becomes the image prompt."""
    scene = state.get("image_prompt")  # the route tool call's scene (decide="tools")
    if scene:
        subject = request_subject(scene)
        result = PromptRewriter(ctx.toolbox.llm).plain(
            subject, "the scene the LLM gave in its draw tool call; no separate rewrite")
        rec.input, rec.output, rec.reason = summarise(scene), summarise(result.prompt), result.note
        rec.data.update({"rewritten": False, "from_tool_call": True})
        return {"image_prompt": result.prompt}
    subject = request_subject(question_of(state))
    if not will_draw(ctx):
        return _plain(subject, ctx, rec, "the request")
    return _rewrite(subject, ctx, rec, min_share=0.8)


@step("rewrite_image_prompt", tool="image_prompt")
def rewrite_image_prompt(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    skipped = _picture_decision(state, ctx, rec)
    if skipped is not None:
        return skipped
    passages = state.get("passages") or []
    found = state.get("answer_found") is not False
    # The article the answer came from (the citation's number), its lead saying what the subject
    # is; nothing found in the passages: picture the question's topic only.
    cited = re.match(r"\[(\d+)\]", state.get("citation") or "")
    top = passages[int(cited.group(1)) - 1] if cited and int(cited.group(1)) <= len(passages) else (passages or [{}])[0]
    title = top.get("title") if passages and state.get("route") == "search" and found else None
    answer_text = (state.get("answer_body") or "") if found else ""
    source = source_for_answer(question_of(state), answer_text, title, passages[:GROUNDED_PASSAGES] if title else ())
    if not will_draw(ctx):
        return _plain(source, ctx, rec, "the answer")
    return _rewrite(source, ctx, rec, min_share=0.5)


def _picture_decision(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any] | None:
    """Does a picture help this answer (tools/picture_helps.py)? The trace records the decision and
    its reason; when none helps, the update that ends the turn without one (else None)."""
    from tools.picture_helps import decide_picture, default_model

    question, forced = question_of(state), state.get("want_image") is True
    # the classifier's MiniLM (shared with the router and the offline Wikipedia), timed as loading, and
    # only when the classifier will decide (not for a forced picture, the draw route or arithmetic)
    if not forced and state.get("route") != "draw" and compute(question) is None:
        try:
            embedder = default_model().embedder
            if not getattr(embedder, "loaded", True):
                timed_load(embedder.load, rec, "picture_classifier", ctx, "picture classifier")
        except Exception:  # noqa: BLE001 - decide_picture meets it again and says why in its reason
            pass
    decision = decide_picture(question, state.get("route"), forced=forced)
    rec.data["picture"] = decision.as_dict()
    if decision.helps:
        return None
    rec.decision, rec.reason = "no picture", decision.reason
    rec.output = "no image prompt: no picture helps"
    return {"image_prompt": None, "image_skipped_reason": decision.reason,
            "notices": [decision.reason[:1].upper() + decision.reason[1:]]}


def _plain(source: str, ctx: Context, rec: StepRecord, what: str) -> dict[str, Any]:
    """No image model: nothing will be drawn and the prompt only labels the card, so the LLM's
    1-4 s rewrite is skipped and the prompt is built from ``source`` as it is."""
    result = PromptRewriter(ctx.toolbox.llm).plain(
        source, f"no image model is configured, so the LLM did not rewrite the prompt; built from {what}")
    rec.input, rec.output, rec.reason = summarise(source), summarise(result.prompt), result.note
    rec.data.update({"rewritten": False, "skipped": "no image model"})
    return {"image_prompt": result.prompt}


def will_draw(ctx: Context) -> bool:
    """Is an image model configured (so an image prompt will really be drawn)?"""
    return ctx.toolbox.image.model is not None


def _rewrite(source: str, ctx: Context, rec: StepRecord, *, min_share: float) -> dict[str, Any]:
    llm = ctx.toolbox.llm
    rec.model = llm.name
    rec.input = summarise(source)
    ctx.progress(type="status", step="rewrite_image_prompt", text="writing the image prompt")
    with tagged("askdraw:image_prompt", NOSTREAM):  # not part of the answer's token stream
        result = PromptRewriter(llm).rewrite(source, min_share=min_share)
    rec.output = summarise(result.prompt)
    rec.reason = result.note
    rec.data.update({"rewritten": result.rewritten, "model_reply": summarise(result.model_reply)})
    return {"image_prompt": result.prompt}


@step("generate_image", tool="diffusion")
def generate_image(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
    image = ctx.toolbox.image
    prompt = state["image_prompt"]
    seed = state.get("seed", ctx.settings.seed)
    rec.model = image.name or "none"
    rec.input = summarise(f"{prompt} (seed {seed})")
    out_path = Path(state["run_dir"]) / "image.png"
    ctx.progress(type="status", step="generate_image", text="drawing")

    said: list[str] = []  # how long it will take (a slow model on this CPU), once the first step is timed

    def progress(done: int, total: int) -> None:
        ctx.progress(type="image_step", step="generate_image", done=done, total=total,
                     text=f"drawing, step {done}/{total}" + (f" ({said[-1]})" if said else ""))

    def status(text: str) -> None:
        said.append(text)
        rec.data.setdefault("image_status", []).append(text)
        ctx.progress(type="status", step="generate_image", text=f"drawing: {text}")

    try:
        result = image.generate(prompt, out_path, seed=seed, progress=progress, status=status)
    except OSError as exc:  # the picture (or its card) cannot be written: the answer still stands
        why = f"No image was saved: {out_path} could not be written ({exc.strerror or exc})"
        rec.error, rec.output = why, "no image saved"
        return {"image_path": None, "image_model": image.name, "image_generated": False, "notices": [why],
                "no_image_kind": "unsaved", "no_image_reason": why}
    rec.output = f"{result.path} ({'generated' if result.generated else 'NOT generated: labelled card'})"
    rec.data.update({"generated": result.generated, "steps": result.steps, "size": [result.width, result.height]})
    placement = getattr(image, "placement_text", None)
    if isinstance(placement, str) and placement:  # device, dtype and GPU memory options, and why
        rec.data["image_device"] = placement
    update: dict[str, Any] = {
        "image_path": str(result.path), "image_model": result.model, "image_generated": result.generated,
    }
    if not result.generated:
        rec.reason = result.notice
        why = result.reason
        update.update(notices=[no_image_notice(why)], no_image_kind=result.missing, no_image_reason=why)
    return update


@step("finish")
def finish(state: State, ctx: Context, rec: StepRecord) -> dict[str, Any]:
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
        rec.output = summarise(text)
    else:
        rec.output = summarise(state.get("answer"))
    final = {**state, **update}
    # Mark the run finished and drop its one-shot inputs, so the next turn on this thread starts
    # a new run and does not re-use this one's audio, forced route or image switch.
    update.update(done_run=state.get("run_id"), done_dir=state.get("run_dir"), audio_path=None,
                  force_route=None, want_image=None)
    # The turn joins the conversation's messages (agent.messages): the question, unless the chat
    # client sent it as a message, and the answer with what the turn knows in its metadata.
    source_picture = final.get("source_image") or {}
    turn = turn_messages(state["run_id"], None if state.get("asked_message") else (
        state.get("transcript") or state.get("question") or ""), final.get("answer") or "", {
        "route": state.get("route"), "standalone_question": question_of(state), "topic": topic_of_turn(final),
        "sources": list(final.get("sources") or []), "image_path": final.get("image_path"),
        "image_generated": bool(final.get("image_generated")), "source_image": source_picture.get("path"),
    })
    messages = as_messages(state.get("messages"))
    update["messages"] = [*turn, *trimmed(messages, turn)]
    return update
