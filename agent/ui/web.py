"""``askdraw serve``'s turns: what the web page shows while a question runs and after it
(:func:`arun_turn`, on ``Agent.astream``; :func:`run_turn` is the same on ``Agent.stream``), and the
``/ask`` endpoint for programs (:func:`aapi_ask` on ``Agent.aask``; :func:`api_ask`). Pure Python: the
Gradio page (whose handlers are async) is :mod:`agent.ui.page`, the server :mod:`agent.ui.server`.

Per turn the page shows the answer (streamed), the route and why, the sources as links, the
image (or the labelled "NO IMAGE GENERATED" card, with a notice saying so), Wikipedia's own picture
of the top source with its credit (search route with a ZIM corpus or live Wikipedia; hidden when
there is none), the running step
while the turn runs, and a collapsible trace of the turn's steps and timings. One conversation
thread per browser tab, so follow-ups are understood in context, as in the chat loop; a
rewritten follow-up shows the question it was understood as. When the streamed draft is not the
final answer (a ``replace`` progress event, or a result whose answer differs), the final answer
replaces it in place. Stop and New conversation cancel the running turn through its cancel event
(:class:`RunningTurns`), as Ctrl-C does in the chat. The tab's thread id (:func:`web_thread_id`)
is kept in the page's URL, and :func:`restored` brings the turns back from the checkpoints.

A handler never raises: errors (bad audio, no image model, Wikipedia unreachable) are shown in
the page and the app stays up.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from agent.ui.render import (_norm, facts, md_escape, notices_markdown, picture_markdown, route_markdown,
                             sources_markdown, step_news, trace_markdown)

IDLE = "Ready: type a question, record one, or upload an audio file."
NO_ROUTE = "**Route:** -"
REPLACED = "*(draft replaced by the checked answer)*"
STOPPING = "**Stopping:** the running step ends first…"
# A web thread id: a run id (time + 6 hex) and 96 random bits, so that a URL naming one cannot be
# guessed; the page restores only such ids (never a terminal chat's conversation).
WEB_THREAD = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}-w[0-9a-f]{24}$")


def web_thread_id(agent: Any) -> str:
    """A new conversation id for a browser tab (it goes into the page's URL)."""
    return f"{agent.new_thread_id()}-w{secrets.token_hex(12)}"


class LiveTurn:
    """One running turn of the page: its cancel event, and whether the page left it (New
    conversation): a left turn yields nothing more. ``showing`` is held while it hands the page an
    update, so :meth:`RunningTurns.leave` returns only after the last one it will ever send."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.showing = threading.Lock()
        self.left = False


class RunningTurns:
    """The page's running turns by thread id: :meth:`stop` cancels one (Stop), :meth:`leave`
    cancels it and silences it (New conversation). A turn whose page stopped listening is finished
    in the background (:meth:`drain`), and the next turn waits for it (:meth:`wait_stopped`), as the
    chat waits for a cancelled turn: the models run one turn at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, LiveTurn] = {}
        self._stopping: list[threading.Event] = []
        self._draining: set[asyncio.Task] = set()

    def start(self, thread_id: str) -> LiveTurn:
        live = LiveTurn()
        with self._lock:
            self._turns[thread_id] = live
        return live

    def end(self, thread_id: str, live: LiveTurn) -> None:
        with self._lock:
            if self._turns.get(thread_id) is live:
                del self._turns[thread_id]

    def stop(self, thread_id: str | None) -> bool:
        """Cancel the turn running on ``thread_id``; False when none runs."""
        with self._lock:
            live = self._turns.get(thread_id or "")
        if live is None:
            return False
        live.cancel.set()
        return True

    def leave(self, thread_id: str | None, timeout: float = 5.0) -> bool:
        """Cancel the turn running on ``thread_id`` and let it send the page nothing more: returns
        once an update it was sending has gone (waiting at most ``timeout`` s); False when none runs."""
        with self._lock:
            live = self._turns.get(thread_id or "")
        if live is None:
            return False
        live.left = True
        live.cancel.set()
        if live.showing.acquire(timeout=timeout):
            live.showing.release()
        return True

    def drain(self, events: Iterator[Any]) -> None:
        """Run a stopped turn's remaining events out in a thread (its trace and result are written)."""

        def run() -> None:
            try:
                for _ in events:
                    pass
            except Exception:  # the turn was stopped: nothing to show
                pass
            finally:
                self._stopped(done)

        done = self._stopping_one()
        threading.Thread(target=run, name="askdraw-web-stopping", daemon=True).start()

    def adrain(self, events: AsyncIterator[Any]) -> None:
        """:meth:`drain` for an async turn: a task on the running event loop runs its events out."""

        async def run() -> None:
            try:
                async for _ in events:
                    pass
            except Exception:  # the turn was stopped: nothing to show
                pass
            finally:
                self._stopped(done)

        done = self._stopping_one()
        task = asyncio.get_running_loop().create_task(run())
        self._draining.add(task)  # held until done (the loop keeps only weak references to tasks)
        task.add_done_callback(self._draining.discard)

    def _stopping_one(self) -> threading.Event:
        done = threading.Event()
        with self._lock:
            self._stopping.append(done)
        return done

    def _stopped(self, done: threading.Event) -> None:
        done.set()
        with self._lock:
            self._stopping.remove(done)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for stopped turns still finishing; True when none is left."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._stopping)
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            pending[0].wait(min(left, 0.2))


def step_status(event: Any) -> str | None:
    """The status line for a StepEvent (None: keep the current one)."""
    if event.kind == "progress" and event.progress:
        p = event.progress
        kind = p.get("type")
        if kind == "token":
            return "Writing the answer…"
        if kind in ("status", "image_step") and p.get("text"):
            return f"{p['text']}…" if kind == "status" else str(p["text"])
        return None
    if event.kind == "step" and event.step is not None:
        kind, text = step_news(event.step) or ("", "")
        if kind == "error":
            return text
        if kind in ("heard", "found"):
            return f"{text[:1].upper()}{text[1:]} - thinking…"
        return f"Done: {event.step.step} ({event.step.ms / 1000:.2f}s) - thinking…"
    return None


def _user_text(question: str | None, audio: str | None) -> str:
    if question and audio:
        return f"{question}  \n*(with an audio file)*"
    if question:
        return question
    return f"*(voice: {md_escape(Path(audio).name) if audio else 'audio'})*"


class Turn:
    """The outputs of one turn in the page, updated as its events arrive."""

    def __init__(self, history: list[dict[str, Any]], question: str | None, audio: str | None) -> None:
        self.history = [dict(m) for m in (history or [])]
        self.history.append({"role": "user", "content": _user_text(question, audio)})
        self.history.append({"role": "assistant", "content": "…"})
        self.answer = ""
        self.status = "Starting…"
        self.route = "**Route:** …"
        self.sources = ""
        self.image: str | None = None
        self.picture: str | None = None  # Wikipedia's picture of the top source (never a generated one)
        self.picture_caption = ""
        self.notices = ""
        self.live_trace: list[str] = []
        self.facts: Any = None
        self.question = question
        self.understood: str | None = None  # the standalone question, when the follow-up was rewritten
        self.replaced = False  # the streamed draft was replaced by the final answer

    def set_answer(self, text: str) -> None:
        self.history[-1] = {"role": "assistant", "content": answer_message(text or "…", self.understood,
                                                                           self.replaced)}

    def apply(self, event: Any) -> None:
        from agent.trace import format_event

        line = step_status(event)
        if line:
            self.status = f"**Running:** {md_escape(line)}"
        kind = event.progress.get("type") if event.kind == "progress" and event.progress else None
        if kind == "token":
            self.answer += str(event.progress.get("text", ""))
            self.set_answer(self.answer)
        elif kind == "replace":  # the draft was not kept: the final answer takes its place
            text = str(event.progress.get("text") or "")
            if text and not _words(text).startswith(_words(self.answer)):
                self.replaced = True  # marked only when the draft was thrown away, not just extended
            self.answer = text
            self.set_answer(self.answer)
        elif event.kind == "step" and event.step is not None:
            self.live_trace.append(format_event(event.step))
            standalone = (event.step.data or {}).get("standalone_question") if event.step.step == "decide" else None
            if standalone and _norm(standalone) != _norm(self.question):
                self.understood = str(standalone)
                self.set_answer(self.answer)
            if event.step.step == "transcribe" and event.step.output:
                self.history[-2] = {"role": "user", "content": f"*(voice)* {event.step.output}"}
        elif event.kind == "result" and event.result is not None:
            self.finish(event.result)

    def finish(self, result: Any) -> None:
        self.facts = f = facts(result)
        if f.heard:
            self.history[-2] = {"role": "user", "content": f"*(voice)* {f.heard}"}
        self.understood = f.understood
        if f.outcome == "answered" and f.answer and not _words(f.answer).startswith(_words(self.answer)):
            self.replaced = True  # the streamed draft was thrown away (with or without a replace event)
        self.replaced = self.replaced and f.outcome == "answered"
        if f.outcome == "cancelled":
            self.set_answer(self.answer + " *(cancelled)*" if self.answer else "*(cancelled)*")
        elif f.outcome == "failed":
            self.set_answer(f"**Error:** {f.error}")
        else:
            self.set_answer(f.answer or "(no answer)")
        self.route = route_markdown(f)
        self.sources = sources_markdown(f)
        self.image = f.image_path if f.image_path and Path(f.image_path).exists() else None
        self.picture, self.picture_caption = shown_picture(f)
        self.notices = notices_markdown(f)
        self.status = {"failed": "**Failed**", "cancelled": "**Stopped**"}.get(f.outcome, "**Done**") + (
            f" in {f.total_s:.1f}s" if f.total_s and f.outcome != "cancelled" else "")

    def stopping(self) -> None:
        self.status = STOPPING

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.set_answer(f"**Error:** {message}")
        self.notices = notices_markdown(error=message)
        self.status = "**Failed**"
        self.route = NO_ROUTE

    def outputs(self, thread_id: str) -> tuple:
        return (self.history, self.route, self.sources, self.image, self.status,
                trace_markdown(self.facts, self.live_trace), self.notices, thread_id, self.picture,
                self.picture_caption)


def shown_picture(f: Any) -> tuple[str | None, str]:
    """(path, caption) of the article's picture the page shows; (None, "") when there is none
    (or its file is gone)."""
    pic = f.source_image
    if not pic or not Path(pic.path).is_file():
        return None, ""
    return pic.path, picture_markdown(f)


def _words(text: str) -> str:
    return " ".join(str(text).split())


def answer_message(answer: str, understood: str | None = None, replaced: bool = False) -> str:
    """The assistant's message in the chat: the *Understood* line of a rewritten follow-up, the
    answer, and a marker when the streamed draft was replaced by it."""
    parts = [f"*Understood: {md_escape(understood)}*"] if understood else []
    parts.append(answer)
    if replaced:
        parts.append(REPLACED)
    return "\n\n".join(parts)


def _new_turn(agent: Any, question: str | None, audio: str | None, history: list[dict[str, Any]] | None,
              thread_id: str | None) -> tuple[Turn, str | None, str | None, str]:
    """A turn's outputs at its start: (turn, question, audio, thread id). An empty question's turn is
    already finished (a notice), with ``turn.question`` and the audio None."""
    question = (question or "").strip() or None
    audio = audio or None
    thread_id = thread_id or web_thread_id(agent)
    turn = Turn(list(history or []), question, audio)
    if question is None and audio is None:
        turn.history = turn.history[:-2]
        turn.notices = notices_markdown(error="empty question: type a question, record one or upload an audio file")
        turn.status = IDLE
        turn.route = NO_ROUTE
    return turn, question, audio, thread_id


def _waiting(turn: Turn) -> None:
    turn.status = "**Waiting** for the stopped turn to finish its step…"


def _applied(turn: Turn, event: Any, cancel: threading.Event) -> None:
    turn.apply(event)
    if cancel.is_set() and event.kind != "result":
        turn.stopping()


def run_turn(agent: Any, question: str | None, audio: str | None, history: list[dict[str, Any]] | None,
             thread_id: str | None, running: RunningTurns | None = None) -> Iterator[tuple]:
    """One turn of the page: yields the outputs (chat, route, sources, image, status, trace,
    notices, thread id, Wikipedia's picture, its caption) after every event. Never raises. With ``running``, :meth:`RunningTurns.stop`
    on the thread cancels the turn, :meth:`RunningTurns.leave` cancels it and ends its updates, and
    a turn that the page left or went away from is finished in the background. (The page runs
    :func:`arun_turn`, the same on ``agent.astream``.)"""
    turn, question, audio, thread_id = _new_turn(agent, question, audio, history, thread_id)
    if question is None and audio is None:
        yield turn.outputs(thread_id)
        return
    live = running.start(thread_id) if running is not None else LiveTurn()
    cancel = live.cancel
    events: Iterator[Any] | None = None
    try:
        # Each update is handed out holding live.showing (until the page asks for the next one), and
        # only while the page has not left the turn: after leave() returns, nothing of it is shown.
        with live.showing:
            yield turn.outputs(thread_id)
        if running is not None and not running.wait_stopped(0):
            _waiting(turn)
            with live.showing:
                if not live.left:
                    yield turn.outputs(thread_id)
            running.wait_stopped(120)
        events = agent.stream(text=question, audio=audio, progress=True, thread_id=thread_id, cancel=cancel)
        for event in events:
            _applied(turn, event, cancel)
            with live.showing:
                if live.left:
                    break
                yield turn.outputs(thread_id)
        if live.left and running is not None:  # New conversation: finish the turn unseen
            running.drain(events)
    except GeneratorExit:  # the page went away: stop the turn, finish it unseen
        cancel.set()
        if running is not None and events is not None:
            running.drain(events)
        raise
    except Exception as exc:  # a bug, not bad input (the agent reports that in the result)
        turn.fail(exc)
        with live.showing:
            if not live.left:
                yield turn.outputs(thread_id)
    finally:
        if running is not None:
            running.end(thread_id, live)


async def arun_turn(agent: Any, question: str | None, audio: str | None, history: list[dict[str, Any]] | None,
                    thread_id: str | None, running: RunningTurns | None = None) -> AsyncIterator[tuple]:
    """:func:`run_turn` as an async generator on ``agent.astream`` (what the page runs): the same
    outputs, Stop, New conversation and background finishing; waiting for a stopped turn is done
    off the event loop."""
    turn, question, audio, thread_id = _new_turn(agent, question, audio, history, thread_id)
    if question is None and audio is None:
        yield turn.outputs(thread_id)
        return
    live = running.start(thread_id) if running is not None else LiveTurn()
    cancel = live.cancel
    events: AsyncIterator[Any] | None = None
    try:
        with live.showing:  # as in run_turn (leave() holds it only for a moment: never the loop for long)
            yield turn.outputs(thread_id)
        if running is not None and not running.wait_stopped(0):
            _waiting(turn)
            with live.showing:
                if not live.left:
                    yield turn.outputs(thread_id)
            await asyncio.to_thread(running.wait_stopped, 120)
        events = agent.astream(text=question, audio=audio, progress=True, thread_id=thread_id, cancel=cancel)
        async for event in events:
            _applied(turn, event, cancel)
            with live.showing:
                if live.left:
                    break
                yield turn.outputs(thread_id)
        if live.left and running is not None:  # New conversation: finish the turn unseen
            running.adrain(events)
    except GeneratorExit:  # the page went away: stop the turn, finish it unseen
        cancel.set()
        if running is not None and events is not None:
            running.adrain(events)
        raise
    except Exception as exc:  # a bug, not bad input (the agent reports that in the result)
        turn.fail(exc)
        with live.showing:
            if not live.left:
                yield turn.outputs(thread_id)
    finally:
        if running is not None:
            running.end(thread_id, live)


def restored(agent: Any, thread_id: str | None) -> tuple:
    """The page's outputs for a tab opened (or reloaded) on ``thread_id``: the conversation's
    remembered turns from the SQLite checkpoints (each answer, with its *Understood* line, read
    back from its run folder when that is still there), the last turn's route, sources, image,
    trace and notices. A missing or foreign id (not made by :func:`web_thread_id`) starts a new
    conversation. Never raises (a database error is shown as a notice)."""
    from agent.agent import load_result
    from agent.ui.threads import past_turns

    empty = ([], NO_ROUTE, "", None, IDLE, "", "")
    no_picture = (None, "")
    if not thread_id or not WEB_THREAD.match(thread_id):
        return (*empty, web_thread_id(agent), *no_picture)
    try:
        turns, last = past_turns(agent, thread_id)
        known = next((c for c in agent.conversations() if c.get("thread_id") == thread_id), None)
    except Exception as exc:  # a damaged database: say so, start afresh
        return (*empty[:6], notices_markdown(error=f"could not read the conversation: {exc}"), web_thread_id(agent),
                *no_picture)
    if not turns:
        return (*empty, thread_id, *no_picture)
    history: list[dict[str, Any]] = []
    for past in turns:
        # the history keeps the standalone question and the answer's start; the run folder has both as shown
        asked, answer, understood = _user_text(past.get("question") or "?", None), past.get("answer") or "", None
        if past.get("run_id"):
            try:
                run = load_result(Path(agent.settings.out_dir) / str(past["run_id"]))
                f = facts(run)
                asked = f"*(voice)* {f.heard}" if f.heard else _user_text(run.question or "?", None)
                answer, understood = f.answer or answer, f.understood
            except (OSError, ValueError):
                pass  # the run folder is gone: what the history remembers
        history.append({"role": "user", "content": asked})
        history.append({"role": "assistant", "content": answer_message(answer or "(no answer)", understood)})
    count = (known or {}).get("turns") or len(turns)
    status = f"**Resumed** this conversation ({count} turn{'' if count == 1 else 's'}"
    status += f"; the first {count - len(turns)} not shown)" if count > len(turns) else ")"
    if last is None:
        return (history, NO_ROUTE, "", None, status, "", "", thread_id, *no_picture)
    f = facts(last)
    image = f.image_path if f.image_path and Path(f.image_path).exists() else None
    return (history, route_markdown(f), sources_markdown(f), image, status, trace_markdown(f), notices_markdown(f),
            thread_id, *shown_picture(f))


def api_ask(agent: Any, question: str | None, audio: str | None = None) -> tuple:
    """The ``/ask`` endpoint: ``(answer, route, reason, image path, sources)``; never raises
    (an error comes back as the answer ``"error: ..."``). The page runs :func:`aapi_ask`."""
    question = (question or "").strip() or None
    if question is None and not audio:
        return _EMPTY_API
    try:
        return _api_outputs(agent.ask(text=question, audio=audio or None))
    except Exception as exc:
        return (f"error: {type(exc).__name__}: {exc}", "", "", None, [])


async def aapi_ask(agent: Any, question: str | None, audio: str | None = None) -> tuple:
    """:func:`api_ask` on ``agent.aask``."""
    question = (question or "").strip() or None
    if question is None and not audio:
        return _EMPTY_API
    try:
        return _api_outputs(await agent.aask(text=question, audio=audio or None))
    except Exception as exc:
        return (f"error: {type(exc).__name__}: {exc}", "", "", None, [])


_EMPTY_API = ("error: empty question: give a question or an audio file", "", "", None, [])


def _api_outputs(result: Any) -> tuple:
    f = facts(result)
    answer = f.answer or (f"error: {f.error}" if f.error else "")
    image = f.image_path if f.image_path and Path(f.image_path).exists() else None
    sources = [{"title": title or url, "url": url} for title, url in f.sources]
    return (answer, f.route or "", f.route_reason or "", image, sources)


__all__ = ["run_turn", "arun_turn", "api_ask", "aapi_ask", "restored", "step_status", "answer_message", "shown_picture", "web_thread_id",
           "RunningTurns", "LiveTurn", "Turn", "IDLE", "NO_ROUTE", "REPLACED", "WEB_THREAD"]
