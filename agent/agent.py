"""The Python API: ``Agent(settings).ask(text=... | audio=...) -> Result`` and ``Agent.stream``, and
their async twins ``Agent.aask`` / ``Agent.astream`` (the same events, on the caller's event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import queue
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from agent.context import Context, Toolbox
from agent.graph import build_graph
from agent.memory import Memory
from agent.nodes import new_run_id, within_limit
from agent.step import error_message
from tools.base import Loadable
from tools.common import Cancelled, atomic_write, signals_to_main_thread
from tools.source_image import SourceImage
from agent.settings import Settings
from agent.state import NoImageKind, Source, no_image_notice, this_turn
from agent.trace import TraceEvent, append_event


class Result(BaseModel):
    """What one question produced (also what ``askdraw ask --json`` prints).

    ``image_path`` is the generated picture (or the labelled "NO IMAGE GENERATED" card).
    ``source_image`` is Wikipedia's own picture of the top source, on the search route with a
    ZIM corpus or live Wikipedia (:class:`tools.source_image.SourceImage`: ``path`` in the run
    folder, ``title`` of the article, ``url`` to see it with its author and licence, ``credit``
    line, ``file``, ``origin`` "zim"/"live", ``author``/``licence`` when known); None when the
    corpus has no pictures (the starter leads), the article has none, or it could not be fetched
    (the trace's ``source_image`` step says why). It is never a generated picture.
    """

    run_id: str
    question: str = ""
    transcript: str | None = None
    route: Literal["search", "answer", "draw"] | None = None
    route_reason: str | None = None
    search_query: str | None = None
    sources: list[Source] = Field(default_factory=list)
    answer: str | None = None
    citation: str | None = None
    answer_found: bool | None = None
    image_prompt: str | None = None
    image_path: str | None = None
    image_model: str | None = None
    image_generated: bool = False
    no_image_kind: NoImageKind | None = None
    no_image_reason: str | None = None
    image_skipped_reason: str | None = None  # no picture because none would help (tools/picture_helps.py)
    source_image: SourceImage | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    trace_path: str | None = None
    notices: list[str] = Field(default_factory=list)
    error: str | None = None
    thread_id: str | None = None
    standalone_question: str | None = None
    devices: dict[str, str] = Field(default_factory=dict)  # where each loaded local model runs: {"llm": "cpu", ...}

    @property
    def image_notice(self) -> str | None:
        """The notice saying why there is no picture (None when there is none)."""
        return no_image_notice(self.no_image_reason) if self.no_image_kind and self.no_image_kind != "unsaved" else None

    @property
    def other_notices(self) -> list[str]:
        """The notices besides :attr:`image_notice` (for a view that shows that one with the image)."""
        return [n for n in self.notices if n != self.image_notice]

    @property
    def ok(self) -> bool:
        """True when the question got an answer (an image failure alone does not count)."""
        return bool(self.answer) and not (self.error and not self.answer)


#: What :meth:`Agent.stream` reads from the graph: the state after each step, and what the nodes
#: write to LangGraph's stream writer (``stream_mode="custom"``).
STREAM_MODES = ("custom", "values")


class StepEvent(BaseModel):
    """One item of :meth:`Agent.stream`: a finished step (``kind='step'``), fine-grained progress
    (``kind='progress'``: answer tokens, image steps, status lines), or the final result.

    Progress events are dicts with a ``type``: ``{"type": "status", "text": ...}`` (what the turn
    is doing now: "loading the LLM", "rewriting the follow-up", ...), ``{"type": "token", "text":
    ...}`` (a piece of the answer as it is generated), ``{"type": "image_step", ...}``,
    ``{"type": "notice", ...}`` and ``{"type": "replace", "text": ...}``.

    The token contract: the ``token`` texts of a turn, joined, either are ``result.answer``
    (leading and trailing whitespace aside), or are followed by one ``{"type": "replace",
    "text": result.answer or "", "kept": bool}`` just before the result event. Streamed text is a
    draft: the answer may be cut (a looping or long direct reply), get its citation, or become a
    refusal or an error; a front end replaces the shown draft with the replace event's text.
    ``kept`` is true when the answer begins with the whole draft (the search route's short answer,
    then its citation): nothing streamed was thrown away, so no "draft replaced" note is due."""

    kind: Literal["step", "progress", "result"]
    step: TraceEvent | None = None
    progress: dict[str, Any] | None = None
    result: Result | None = None


@dataclass
class _Turn:
    """One question while it runs: what :meth:`Agent.stream` (or :meth:`Agent.astream`) collects."""

    run_id: str
    run_dir: Path
    cancel: threading.Event | None
    progress: bool
    notices: list[str] = field(default_factory=list)
    unsaved: list[str] = field(default_factory=list)  # notices that the trace could not be written
    values: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    events: queue.Queue = field(default_factory=queue.Queue)  # stream's worker thread -> its caller
    streamed: list[str] = field(default_factory=list)  # the answer's token texts, as sent

    def on_progress(self, event: dict[str, Any]) -> StepEvent | None:
        """Take in one progress item; returns the event to send (None without ``progress``)."""
        # (A cancelled turn stops mid-answer in the answer step itself: see agent.nodes.answer.)
        if event.get("type") == "token":
            self.streamed.append(str(event.get("text", "")))
        if event.get("type") == "notice" and event.get("text") and event["text"] not in self.notices:
            self.notices.append(str(event["text"]))  # e.g. the trace could not be written: once per run
            if event.get("kind") == "unsaved":
                self.unsaved.append(str(event["text"]))
        return StepEvent(kind="progress", progress=event) if self.progress else None


class Agent:
    """A local question-answering agent. Models load on first use and are reused across calls.

    >>> agent = Agent()                                  # starter models, offline Wikipedia
    >>> result = agent.ask(text="Who painted the Mona Lisa?")
    >>> result.route, result.answer, result.image_path
    """

    def __init__(self, settings: Settings | None = None, *, tools: Toolbox | None = None,
                 callbacks: list[Any] | None = None, **overrides: Any) -> None:
        """``settings`` (or keyword overrides of it, e.g. ``Agent(wiki="live")``). ``llm`` may also be a
        LangChain chat model (``Agent(llm=ChatOpenAI(base_url=...))``, ``ChatOllama``, any
        ``BaseChatModel``): every LLM call then goes to it. ``callbacks``: LangChain callback handlers
        for every run (each LLM call reports to them; LangSmith's environment variables work too)."""
        model = overrides.pop("llm") if not isinstance(overrides.get("llm", ""), str) else None
        if tools is not None and model is not None:
            raise ValueError("give the LLM in tools= or llm=, not both")
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        self.settings = settings
        self.tools = tools or Toolbox(settings, llm=model)
        self.callbacks = list(callbacks or [])
        self.graph = build_graph()
        self._memory: Memory | None = None
        self._memory_lock = threading.Lock()

    # -- conversations ------------------------------------------------------------------------
    @property
    def memory(self) -> "Memory":
        """Conversation threads in SQLite (opened on first use)."""
        with self._memory_lock:
            if self._memory is None:
                from tools.common import cache_dir

                self._memory = Memory(self.settings.memory_path or cache_dir() / "conversations.sqlite")
            return self._memory

    @staticmethod
    def new_thread_id() -> str:
        return new_run_id()

    def claim_thread(self, thread_id: str) -> None:
        """Hold conversation ``thread_id`` for this process until :meth:`release_thread` (as a chat
        session does while it is open). Raises ``agent.memory.ThreadBusy`` when another process
        holds it. Each turn holds its thread anyway; a claim keeps other processes out between turns."""
        self.memory.claim(thread_id)

    def release_thread(self, thread_id: str) -> None:
        self.memory.release(thread_id)

    def conversations(self) -> list[dict[str, Any]]:
        """Past conversation threads, newest first."""
        return self.memory.threads()

    def langchain_tools(self) -> list:
        """This agent's tools as langchain-core tools (same settings, same loaded models)."""
        from agent.langchain_tools import langchain_tools

        return langchain_tools(self.tools)

    def devices(self) -> dict[str, str]:
        """Where each local model that has loaded runs (the ``device`` setting resolved): e.g.
        ``{"llm": "cpu", "embeddings": "cpu", "asr": "cuda:0 float16"}``; models behind an endpoint
        and models not loaded yet are left out."""
        out: dict[str, str] = {}
        built = dict(self.tools._tools)
        for role in ("llm", "asr"):
            tool = built.get(role)
            device = getattr(tool, "device", "") if tool is not None and getattr(tool, "loaded", False) else ""
            if isinstance(device, str) and device:
                dtype = getattr(tool, "dtype", "")
                out[role] = f"{device} {dtype}" if isinstance(dtype, str) and dtype else device
        placement = getattr(built.get("image"), "placement", None)
        if isinstance(placement, dict) and placement.get("device"):  # the pipeline has loaded
            out["image"] = f"{placement['device']} {placement.get('dtype', '')}".strip()
        router = built.get("router")
        embedder = getattr(getattr(router, "_classifier", None), "_embedder", None)
        if embedder is None and "wiki" in built:
            embedder = getattr(built["wiki"], "_embedder", None)
        if getattr(embedder, "loaded", False) and getattr(embedder, "device", ""):
            out["embeddings"] = embedder.device
        return out

    def preload(self) -> dict[str, float]:
        """Load the models every turn needs now (LLM + route calibration, the route classifier's
        embedding model, Wikipedia index, the short-answer parser); returns how long each took in ms. Speech and image models still
        load on first use."""
        import time

        from tools.short_answer import spacy_pipeline

        timings = {}
        for name, load in (("llm", lambda: (self.tools.llm.load(), self.tools.router.bias())),
                           ("route_classifier", self.tools.router.load_classifier),
                           ("wikipedia", lambda: self.tools.wiki.load() if isinstance(self.tools.wiki, Loadable) else None),
                           ("short_answer", spacy_pipeline)):
            start = time.perf_counter()
            load()
            timings[name] = round((time.perf_counter() - start) * 1000, 1)
        return timings

    # -- input ------------------------------------------------------------------------------
    def _prepare(self, text: str | None, audio: Any, run_dir: Path, notices: list[str]) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if audio is not None:
            if isinstance(audio, (str, os.PathLike)):
                path = os.fspath(audio)
                try:
                    path.encode("utf-8")
                except UnicodeEncodeError:
                    # A file name with bytes that are not UTF-8 cannot go into the trace, the result
                    # or a checkpoint (all UTF-8): the run reads the file through a link of its own.
                    run_dir.mkdir(parents=True, exist_ok=True)
                    link = run_dir / ("input" + "".join(Path(path).suffixes[-1:]).encode("ascii", "ignore").decode())
                    try:
                        link.symlink_to(Path(path).absolute())
                    except OSError:  # no symlinks here (or the file is missing: reading it says so)
                        if Path(path).is_file():
                            shutil.copyfile(path, link)
                    notices.append(f"the audio file's name is not valid UTF-8; it is read as {link.name} in the run folder")
                    path = str(link)
                state["audio_path"] = path
            else:  # an array (16 kHz mono) or (array, sample_rate): kept as a file beside the run
                import soundfile as sf

                from tools.audio import SAMPLE_RATE, load_audio

                samples = load_audio(audio)
                run_dir.mkdir(parents=True, exist_ok=True)
                path = run_dir / "input.wav"
                sf.write(path, samples, SAMPLE_RATE)
                state["audio_path"] = str(path)
        if text is not None:
            # Control characters (terminal escapes, bell, NUL) and bidi overrides are not part of a
            # question, and would be echoed to the user's terminal and the trace: they become spaces.
            question = " ".join(re.sub(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", " ", str(text)).split())
            question, cut = within_limit(question, self.settings.max_question_chars, "question")
            notices.extend(cut)
            state["question"] = question
        if not state.get("audio_path") and not state.get("question"):
            raise ValueError("empty question: type a question or give an audio file")
        return state

    # -- running ----------------------------------------------------------------------------
    def stream(self, text: str | None = None, audio: Any = None, *, seed: int | None = None,
               run_id: str | None = None, progress: bool = False, thread_id: str | None = None,
               cancel: threading.Event | None = None, route: str | None = None,
               image: bool | None = None, config: dict[str, Any] | None = None) -> Iterator[StepEvent]:
        """Run one question, yielding a ``StepEvent`` per finished step (and, with
        ``progress=True``, status lines, answer tokens and image steps as they happen, and a
        ``replace`` event when the streamed tokens are not the answer: see :class:`StepEvent`);
        the last event carries the :class:`Result`. The run's trace and result are written even when it fails.

        ``thread_id``: the turn belongs to that conversation (kept in SQLite), so follow-ups
        ("and what do they eat?") are understood in context. ``cancel``: set it to stop the turn
        (between steps, and mid-answer); the result then has ``error == "cancelled"``.
        ``route`` ('search' | 'answer' | 'draw'; default ``settings.route``) skips the decision;
        ``image=False`` (default ``settings.image``) answers in text only; ``image=True`` always draws;
        ``None`` draws where a picture helps (``Result.image_skipped_reason`` says why not).
        ``config``: a LangChain ``RunnableConfig`` for the graph run (``callbacks``, ``tags``,
        ``metadata``, ``run_name``; ``configurable.thread_id`` is the same as ``thread_id``)."""
        turn, inputs, config, thread_id = self._begin(run_id, seed, progress, thread_id, cancel, route, image, config)
        worker = threading.Thread(target=self._work, args=(turn, text, audio, inputs, thread_id, config),
                                  name=f"askdraw-{turn.run_id}", daemon=True)
        worker.start()
        while (item := turn.events.get()) is not None:
            yield item
        worker.join()
        yield from self._end(turn, thread_id)

    async def astream(self, text: str | None = None, audio: Any = None, *, seed: int | None = None,
                      run_id: str | None = None, progress: bool = False, thread_id: str | None = None,
                      cancel: threading.Event | None = None, route: str | None = None,
                      image: bool | None = None, config: dict[str, Any] | None = None) -> AsyncIterator[StepEvent]:
        """:meth:`stream` for asyncio: the same arguments and the same events, with the graph run by
        ``graph.astream`` on the caller's event loop (its steps run in LangGraph's executor, so
        several turns go on at once: ``asyncio.gather(agent.aask(...), agent.aask(...))``).
        A conversation thread is read and written with LangGraph's async SQLite checkpointer, in
        the same file as :meth:`stream`'s, so a thread goes on across both.

        Cancelling the task that iterates it (or closing it early) cancels the turn: its step
        stops as with ``cancel``, the trace and result are written (``error == "cancelled"``),
        then ``CancelledError`` goes on up."""
        turn, inputs, config, thread_id = self._begin(run_id, seed, progress, thread_id,
                                                      cancel or threading.Event(), route, image, config)
        events: asyncio.Queue[StepEvent | None] = asyncio.Queue()
        # The graph runs in a task of its own, so that cancelling the caller stops the turn the way
        # `cancel` does (the running step ends, its trace is written) instead of tearing it down.
        run = asyncio.ensure_future(self._arun(turn, text, audio, inputs, thread_id, config, events.put_nowait))
        try:
            while (item := await events.get()) is not None:
                yield item
            await run
        except (asyncio.CancelledError, GeneratorExit):
            assert turn.cancel is not None
            turn.cancel.set()
            try:
                await asyncio.shield(run)
            except asyncio.CancelledError:  # cancelled again while the step was stopping: stop waiting
                run.cancel()
            turn.error = turn.error or Cancelled("cancelled")
            self._end(turn, thread_id)  # the trace and result are written all the same
            raise
        for event in await asyncio.to_thread(self._end, turn, thread_id):
            yield event

    def _begin(self, run_id: str | None, seed: int | None, progress: bool, thread_id: str | None,
               cancel: threading.Event | None, route: str | None, image: bool | None,
               config: dict[str, Any] | None) -> tuple[_Turn, dict[str, Any], dict[str, Any], str | None]:
        """A new turn, the graph's inputs (without the question), the run's config and its thread."""
        run_id = run_id or new_run_id()
        config, thread_id = self._config(config, thread_id)
        route = self.settings.route if route is None else route
        allowed = get_args(Settings.model_fields["route"].annotation)
        if route not in allowed:
            raise ValueError(f"route must be one of {', '.join(map(repr, allowed))}, not {route!r}")
        turn = _Turn(run_id=run_id, run_dir=Path(self.settings.out_dir) / run_id, cancel=cancel, progress=progress)
        inputs = {"run_id": run_id, "run_dir": str(turn.run_dir), "seed": self.settings.seed if seed is None else seed,
                  "force_route": None if route == "auto" else route,
                  "want_image": self.settings.image if image is None else bool(image)}
        return turn, inputs, config, thread_id

    def _end(self, turn: _Turn, thread_id: str | None) -> list[StepEvent]:
        """The turn's last events: its :class:`Result` (written to the run folder, and remembered by
        the thread), after a ``replace`` event when what was streamed is not the answer."""
        result = self._result(turn.run_id, turn.run_dir, turn.values, turn.notices, turn.error, turn.unsaved)
        events = []
        if thread_id:
            result.thread_id = thread_id
            if result.answer and not result.error:  # only turns the thread's history remembers
                self.memory.record_turn(thread_id, result)
        draft = "".join(turn.streamed)
        if turn.progress and draft and draft.strip() != (result.answer or "").strip():
            # What was streamed is not the answer: every front end shows the answer instead.
            kept = (result.answer or "").strip().startswith(draft.strip())
            events.append(StepEvent(kind="progress", progress={"type": "replace", "text": result.answer or "",
                                                               "kept": kept}))
        events.append(StepEvent(kind="result", result=result))
        return events

    def _config(self, config: dict[str, Any] | None, thread_id: str | None) -> tuple[dict[str, Any], str | None]:
        """The run's RunnableConfig (this agent's callbacks added) and its conversation thread."""
        config = dict(config or {})
        configurable = dict(config.get("configurable") or {})
        given = configurable.get("thread_id")
        if thread_id and given and str(given) != thread_id:
            raise ValueError(f"thread_id {thread_id!r} and config's thread_id {given!r} differ")
        thread_id = thread_id or (str(given) if given else None)
        if self.callbacks:
            extra = config.get("callbacks")
            if extra is not None and not isinstance(extra, list):
                raise ValueError("config['callbacks'] must be a list of handlers to add to the agent's own")
            config["callbacks"] = [*self.callbacks, *(extra or [])]
        configurable.pop("thread_id", None)
        config["configurable"] = configurable
        return config, thread_id

    def _work(self, turn: _Turn, text: str | None, audio: Any, inputs: dict[str, Any], thread_id: str | None,
              config: dict[str, Any]) -> None:
        """The worker thread of :meth:`stream`: check the input, run the graph, pass on what it
        streams. (A thread of its own so that Ctrl-C always reaches the caller's main thread, never
        the model code: the threads LangGraph and torch start from here inherit its signal mask.)"""
        signals_to_main_thread()  # Ctrl-C goes to the caller's main thread, never to the models'
        try:
            state = self._prepare(text, audio, turn.run_dir, turn.notices)
            turn.values.update(state)
            self._run_graph(turn, {"question": None, "audio_path": None, **state, **inputs}, thread_id, config)
        except BaseException as exc:  # reported in the result; the caller decides what to show
            turn.error = exc
        finally:
            turn.events.put(None)

    def _run_graph(self, turn: _Turn, inputs: dict[str, Any], thread_id: str | None, config: dict[str, Any]) -> None:
        ctx = Context(tools=self.tools, cancel=turn.cancel)
        graph = self.graph
        with contextlib.ExitStack() as held:
            if thread_id:
                # One turn at a time on a thread, across processes: a turn that read the thread
                # while another was writing it would drop that one's update.
                held.enter_context(self.memory.turn(thread_id, cancel=turn.cancel,
                                                    on_wait=lambda who: self._put(turn, _waiting(who), turn.events.put)))
                graph = self.memory.graph()
                config = _on_thread(config, thread_id)
            for mode, chunk in graph.stream(inputs, config, context=ctx, stream_mode=list(STREAM_MODES)):
                self._take(turn, mode, chunk, turn.events.put)
            if thread_id:
                self.memory.compact(thread_id)

    async def _arun(self, turn: _Turn, text: str | None, audio: Any, inputs: dict[str, Any], thread_id: str | None,
                    config: dict[str, Any], put: Callable[[StepEvent | None], None]) -> None:
        """:meth:`_work` for :meth:`astream`, as a task on the caller's event loop."""
        try:
            state = await asyncio.to_thread(self._prepare, text, audio, turn.run_dir, turn.notices)
            turn.values.update(state)
            await self._arun_graph(turn, {"question": None, "audio_path": None, **state, **inputs}, thread_id,
                                   config, put)
        except asyncio.CancelledError:  # cancelled twice: the caller stopped waiting for the step to end
            turn.error = Cancelled("cancelled")
        except BaseException as exc:  # reported in the result; the caller decides what to show
            turn.error = exc
        finally:
            put(None)

    async def _arun_graph(self, turn: _Turn, inputs: dict[str, Any], thread_id: str | None, config: dict[str, Any],
                          put: Callable[[StepEvent | None], None]) -> None:
        ctx = Context(tools=self.tools, cancel=turn.cancel)
        graph = self.graph
        async with contextlib.AsyncExitStack() as held:
            if thread_id:
                loop = asyncio.get_running_loop()
                lock = self.memory.turn(thread_id, cancel=turn.cancel, on_wait=lambda who: loop.call_soon_threadsafe(
                    self._put, turn, _waiting(who), put))
                await _enter_in_thread(lock, turn.cancel)  # waiting for the thread's lock, off the event loop
                held.push(lock)
                graph = await held.enter_async_context(self.memory.agraph())
                config = _on_thread(config, thread_id)
            async for mode, chunk in graph.astream(inputs, config, context=ctx, stream_mode=list(STREAM_MODES)):
                self._take(turn, mode, chunk, put)
            if thread_id:
                await asyncio.to_thread(self.memory.compact, thread_id)

    @staticmethod
    def _take(turn: _Turn, mode: str, chunk: Any, put: Callable[[StepEvent], None]) -> None:
        """One item of the graph's stream (sync or async): ``values`` (the state so far) and
        ``custom`` (what the nodes write with LangGraph's stream writer: finished steps, status
        lines, answer tokens, image steps, notices) become this turn's values and step events."""
        if mode == "values":
            turn.values.update(this_turn(chunk, turn.run_id))
        elif isinstance(chunk, dict) and chunk.get("type") == "step":
            put(StepEvent(kind="step", step=TraceEvent(**chunk["event"])))
        elif isinstance(chunk, dict) and chunk.get("type"):
            Agent._put(turn, chunk, put)

    @staticmethod
    def _put(turn: _Turn, progress: dict[str, Any], put: Callable[[StepEvent], None]) -> None:
        if (event := turn.on_progress(progress)) is not None:
            put(event)

    def ask(self, text: str | None = None, audio: Any = None, *, seed: int | None = None,
            run_id: str | None = None, thread_id: str | None = None,
            cancel: threading.Event | None = None, route: str | None = None,
            image: bool | None = None, config: dict[str, Any] | None = None) -> Result:
        """Answer one question (typed ``text``, or ``audio``: a file path, a 16 kHz mono array,
        or an ``(array, sample_rate)`` tuple). Never raises for bad input: see ``Result.error``."""
        result = None
        for event in self.stream(text=text, audio=audio, seed=seed, run_id=run_id, thread_id=thread_id,
                                 cancel=cancel, route=route, image=image, config=config):
            if event.kind == "result":
                result = event.result
        assert result is not None
        return result

    async def aask(self, text: str | None = None, audio: Any = None, *, seed: int | None = None,
                   run_id: str | None = None, thread_id: str | None = None,
                   cancel: threading.Event | None = None, route: str | None = None,
                   image: bool | None = None, config: dict[str, Any] | None = None) -> Result:
        """:meth:`ask` for asyncio (see :meth:`astream`). A cancelled task writes the run's result
        with ``error == "cancelled"`` and raises ``CancelledError``."""
        result = None
        async for event in self.astream(text=text, audio=audio, seed=seed, run_id=run_id, thread_id=thread_id,
                                        cancel=cancel, route=route, image=image, config=config):
            if event.kind == "result":
                result = event.result
        assert result is not None
        return result

    # -- output -----------------------------------------------------------------------------
    def _result(self, run_id: str, run_dir: Path, values: dict[str, Any], notices: list[str],
                error: BaseException | None, unsaved: list[str] = ()) -> Result:
        message = error_message(error) if error is not None else None
        result = Result(
            run_id=run_id,
            question=(values.get("transcript") or values.get("question") or "") if values else "",
            transcript=values.get("transcript"),
            route=values.get("route"),
            route_reason=values.get("route_reason"),
            search_query=values.get("search_query"),
            sources=values.get("sources") or [],
            answer=values.get("answer"),
            citation=values.get("citation"),
            answer_found=values.get("answer_found"),
            no_image_kind=values.get("no_image_kind"),
            no_image_reason=values.get("no_image_reason"),
            image_skipped_reason=values.get("image_skipped_reason"),
            image_prompt=values.get("image_prompt"),
            image_path=values.get("image_path"),
            image_model=values.get("image_model"),
            image_generated=bool(values.get("image_generated")),
            source_image=values.get("source_image"),
            timings_ms=values.get("timings_ms") or {},
            notices=[*notices, *(values.get("notices") or [])],
            error=message,
            standalone_question=values.get("standalone_question"),
            devices=self.devices(),
        )
        trace_path = run_dir / "trace.jsonl"
        try:
            if error is not None and not trace_path.exists():
                # Failed before any step ran (bad input): the trace still records why.
                append_event(run_dir, TraceEvent(run_id=run_id, step="input", error=message))
            result.trace_path = str(trace_path) if trace_path.is_file() else None  # never a path to nothing
            run_dir.mkdir(parents=True, exist_ok=True)
            # Atomically, and last: a run's result.json is whole or absent (never 0 bytes on a
            # full disk), and its presence is what says the run finished (agent.trace.run_finished).
            atomic_write(run_dir / "result.json", result.model_dump_json(indent=2))
        except OSError as exc:
            result.trace_path = None
            # One notice for the whole run (it covers the trace too).
            result.notices = [n for n in result.notices if n not in unsaved]
            result.notices.append(f"the run could not be saved to {run_dir}: {exc.strerror or exc}")
        return result


def _waiting(holder: str) -> dict[str, Any]:
    return {"type": "status", "text": f"waiting: this conversation is in use ({holder})"}


def _on_thread(config: dict[str, Any], thread_id: str) -> dict[str, Any]:
    return {**config, "configurable": {**config["configurable"], "thread_id": thread_id}}


async def _enter_in_thread(lock: contextlib.AbstractContextManager, cancel: threading.Event | None) -> None:
    """Enter ``lock`` (a blocking context manager) in a worker thread. If the caller is cancelled
    meanwhile, the turn's ``cancel`` is set (the wait stops) and a lock got all the same is let go."""
    entering = asyncio.ensure_future(asyncio.to_thread(lock.__enter__))
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        if cancel is not None:
            cancel.set()

        def let_go(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is None:
                lock.__exit__(None, None, None)

        entering.add_done_callback(let_go)
        raise


def load_result(run_dir: str | Path) -> Result:
    return Result.model_validate(json.loads((Path(run_dir) / "result.json").read_text(encoding="utf-8")))


__all__ = ["Agent", "Result", "StepEvent", "Settings", "load_result"]
