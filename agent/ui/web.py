"""``askdraw serve``'s turns: what the web page shows while a question runs and after it
(:func:`run_turn`), and the ``/ask`` endpoint for programs (:func:`api_ask`). Pure Python: the
Gradio page is :mod:`agent.ui.page`, the server :mod:`agent.ui.server`.

Per turn the page shows the answer (streamed), the route and why, the sources as links, the
image (or the labelled "NO IMAGE GENERATED" card, with a notice saying so), the running step
while the turn runs, and a collapsible trace of the turn's steps and timings. One conversation
thread per browser session, so follow-ups are understood in context, as in the chat loop.

A handler never raises: errors (bad audio, no image model, Wikipedia unreachable) are shown in
the page and the app stays up.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.ui.render import (facts, md_escape, notices_markdown, route_markdown, sources_markdown, step_news,
                             trace_markdown)

IDLE = "Ready: type a question, record one, or upload an audio file."
NO_ROUTE = "**Route:** -"


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
        self.notices = ""
        self.live_trace: list[str] = []
        self.facts: Any = None

    def set_answer(self, text: str) -> None:
        self.history[-1] = {"role": "assistant", "content": text or "…"}

    def apply(self, event: Any) -> None:
        from agent.trace import format_event

        line = step_status(event)
        if line:
            self.status = f"**Running:** {md_escape(line)}"
        if event.kind == "progress" and event.progress and event.progress.get("type") == "token":
            self.answer += str(event.progress.get("text", ""))
            self.set_answer(self.answer)
        elif event.kind == "step" and event.step is not None:
            self.live_trace.append(format_event(event.step))
            if event.step.step == "transcribe" and event.step.output:
                self.history[-2] = {"role": "user", "content": f"*(voice)* {event.step.output}"}
        elif event.kind == "result" and event.result is not None:
            self.finish(event.result)

    def finish(self, result: Any) -> None:
        self.facts = f = facts(result)
        if f.heard:
            self.history[-2] = {"role": "user", "content": f"*(voice)* {f.heard}"}
        if f.outcome == "cancelled":
            self.set_answer(self.answer + " *(cancelled)*" if self.answer else "*(cancelled)*")
        elif f.outcome == "failed":
            self.set_answer(f"**Error:** {f.error}")
        else:
            self.set_answer(f.answer or "(no answer)")
        self.route = route_markdown(f)
        self.sources = sources_markdown(f)
        self.image = f.image_path if f.image_path and Path(f.image_path).exists() else None
        self.notices = notices_markdown(f)
        self.status = ("**Failed**" if f.outcome == "failed" else "**Done**") + (
            f" in {f.total_s:.1f}s" if f.total_s else "")

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.set_answer(f"**Error:** {message}")
        self.notices = notices_markdown(error=message)
        self.status = "**Failed**"
        self.route = NO_ROUTE

    def outputs(self, thread_id: str) -> tuple:
        return (self.history, self.route, self.sources, self.image, self.status,
                trace_markdown(self.facts, self.live_trace), self.notices, thread_id)


def run_turn(agent: Any, question: str | None, audio: str | None, history: list[dict[str, Any]] | None,
             thread_id: str | None) -> Iterator[tuple]:
    """One turn of the page: yields the outputs (chat, route, sources, image, status, trace,
    notices, thread id) after every event. Never raises."""
    question = (question or "").strip() or None
    audio = audio or None
    thread_id = thread_id or str(agent.new_thread_id())
    turn = Turn(list(history or []), question, audio)
    if question is None and audio is None:
        turn.history = turn.history[:-2]
        turn.notices = notices_markdown(error="empty question: type a question, record one or upload an audio file")
        turn.status = IDLE
        turn.route = NO_ROUTE
        yield turn.outputs(thread_id)
        return
    yield turn.outputs(thread_id)
    cancel = threading.Event()
    try:
        for event in agent.stream(text=question, audio=audio, progress=True, thread_id=thread_id, cancel=cancel):
            turn.apply(event)
            yield turn.outputs(thread_id)
    except GeneratorExit:  # the page went away: stop the turn
        cancel.set()
        raise
    except Exception as exc:  # a bug, not bad input (the agent reports that in the result)
        turn.fail(exc)
        yield turn.outputs(thread_id)


def api_ask(agent: Any, question: str | None, audio: str | None = None) -> tuple:
    """The ``/ask`` endpoint: ``(answer, route, reason, image path, sources)``; never raises
    (an error comes back as the answer ``"error: ..."``)."""
    question = (question or "").strip() or None
    if question is None and not audio:
        return ("error: empty question: give a question or an audio file", "", "", None, [])
    try:
        result = agent.ask(text=question, audio=audio or None)
    except Exception as exc:
        return (f"error: {type(exc).__name__}: {exc}", "", "", None, [])
    f = facts(result)
    answer = f.answer or (f"error: {f.error}" if f.error else "")
    image = f.image_path if f.image_path and Path(f.image_path).exists() else None
    sources = [{"title": title or url, "url": url} for title, url in f.sources]
    return (answer, f.route or "", f.route_reason or "", image, sources)


__all__ = ["run_turn", "api_ask", "step_status", "Turn", "IDLE", "NO_ROUTE"]
