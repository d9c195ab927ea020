"""Live progress of one ``askdraw chat`` turn: :func:`follow_turn` runs it and hands its events
to a :class:`TurnView`, which shows a line per step as it happens, the answer's tokens as they
are generated, and (on a terminal only) a spinner."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.ui.render import clip, step_news
from agent.ui.terminal import printable
from tools.common import signals_to_main_thread

NEWS_STYLES = {"error": "yellow", "answer": "dim"}  # how a step's news is shown (others: plain)
INDENT = " " * 9  # streamed answer text sits under the step text, right of the time column
_CHUNKS = re.compile(r"\s+|\S+")
DRAFT_REPLACED = "(draft replaced by the checked answer, below)"


class TurnView:
    """Live progress of one turn: a line per step as it happens, the answer's tokens as they are
    generated, and (on a terminal only) a spinner with the current activity. On a terminal, long
    lines wrap at word boundaries; otherwise each is printed as one plain line. ``draws=False``
    (no image model): no "drawing" line, since nothing is drawn."""

    def __init__(self, console: Console, live: bool, start: float, *, draws: bool = True) -> None:
        self.console = console
        self.live = live
        self.start = start
        self.draws = draws
        self.spinner = console.status("", spinner="dots") if live else None
        self.spinning = False
        self.streaming = False  # inside a line of answer tokens
        self.column = 0  # where the streamed text's cursor is (a terminal)
        self.word = ""  # a streamed word not yet ended: held back until it is, to wrap it whole
        self.last_image_step = -1.0

    def _stamp(self) -> str:
        return f"{time.perf_counter() - self.start:5.1f}s"

    def _end_tokens(self) -> None:
        if self.streaming:
            self._write_word()
            self.console.file.write("\n")
            self.console.file.flush()
            self.streaming = False

    def spin(self, text: str) -> None:
        if self.spinner is None:
            return
        self.spinner.update(Text(printable(text, oneline=True), style="cyan"))
        if not self.spinning:
            self.spinner.start()
            self.spinning = True

    def _stop_spin(self) -> None:
        if self.spinner is not None and self.spinning:
            self.spinner.stop()
            self.spinning = False

    def line(self, text: str, detail: str | None = None, style: str = "") -> None:
        self._end_tokens()
        out = Text(printable(text), style=style)  # step outputs, notes, errors: data
        if detail:
            out.append(" - " + printable(detail), style="dim")
        if not self.live:  # plain output: one line, no padding
            self.console.print(Text.assemble(self._stamp(), "  ", out), soft_wrap=True)
            return
        row = Table.grid(padding=(0, 2))  # long lines wrap under the text, not under the time
        row.add_column(style="dim", no_wrap=True)
        row.add_column(overflow="fold")
        row.add_row(self._stamp(), out)
        self.console.print(row)

    def status(self, text: str, reason: str | None = None) -> None:
        self.line(text, reason)
        self.spin(text)

    def note(self, text: str, style: str = "") -> None:
        self.line(text, style=style)

    def token(self, piece: str) -> None:
        self._stop_spin()
        if not self.streaming:
            self.console.file.write(INDENT)
            self.streaming = True
            self.column = len(INDENT)
        if not self.live:  # a pipe: the text as it comes (no width to wrap at)
            self.console.file.write(printable(piece).replace("\n", "\n" + INDENT))
            self.console.file.flush()
            return
        chunks, self.word = _CHUNKS.findall(self.word + printable(piece)), ""
        for chunk in chunks:
            if not chunk.isspace():
                self.word = chunk  # written once a space (or the end) shows the word is whole
                continue
            self._write_word()
            if "\n" in chunk:
                self.console.file.write("\n" * chunk.count("\n") + INDENT)
                self.column = len(INDENT)
            elif self.column + len(chunk) < self.console.width:
                self.console.file.write(chunk)
                self.column += len(chunk)
        self.console.file.flush()

    def replaced(self) -> None:
        """The streamed text was a draft that the final answer replaces (shown after the turn)."""
        self.note(DRAFT_REPLACED, "yellow")

    def _write_word(self) -> None:
        """Write the held-back word, on a new line when it would cross the terminal's edge."""
        word, self.word = self.word, ""
        if not word:
            return
        if self.column + len(word) > self.console.width - 1 and self.column > len(INDENT):
            self.console.file.write("\n" + INDENT)
            self.column = len(INDENT)
        self.console.file.write(word)
        self.column += len(word)

    def image_step(self, done: int, total: int, text: str) -> None:
        if self.live:
            self._end_tokens()
            self.spin(text)
            if done == total:
                self.line(text)
        else:  # plain output: a line every 10% or so, not one per step
            share = done / max(total, 1)
            if done == total or share - self.last_image_step >= 0.1:
                self.last_image_step = share
                self.line(text)

    def progress(self, p: dict[str, Any]) -> None:
        kind = p.get("type")
        if not self.draws and p.get("step") == "generate_image" and kind in ("status", "image_step"):
            return  # no image model: the step only writes a labelled card; nothing is drawn
        if kind == "token":
            self.token(str(p.get("text", "")))
        elif kind == "replace":  # the streamed draft is not the answer: say so (a kept one needs nothing)
            if not p.get("kept"):
                self.replaced()
        elif kind == "image_step":
            self.image_step(int(p.get("done", 0)), int(p.get("total", 0)),
                            str(p.get("text") or f"drawing, step {p.get('done')}/{p.get('total')}"))
        elif kind == "status":
            self.status(str(p.get("text", "")), p.get("reason"))
        elif p.get("text"):
            self.note(f"note: {p['text']}", "dim")

    def show(self, event: Any) -> None:
        """Show a StepEvent: progress as it comes, a finished step's news."""
        if event.kind == "progress" and event.progress:
            self.progress(event.progress)
        elif event.kind == "step" and event.step is not None:
            news = step_news(event.step)
            if news:
                self.line(news[1], style=NEWS_STYLES.get(news[0], ""))
            if not self.streaming:
                self.spin("thinking")

    def close(self) -> None:
        self._end_tokens()
        self._stop_spin()


def follow_turn(stream: Callable[[], Iterator[Any]], view: TurnView, ctrl_c: Any, cancel: threading.Event,
                say: Callable[..., None]) -> tuple[Any, threading.Thread | None]:
    """Run a turn (``stream()``: ``agent.stream(...)`` with ``cancel``), showing its events in
    ``view``; Ctrl-C (counted by ``ctrl_c``) sets ``cancel``, a second one stops the waiting.
    Returns the Result (None if the turn crashed: ``say`` says so) and, when the waiting was
    stopped, the thread still running the turn.

    ``Agent.stream`` runs the turn in a thread of its own, but its generator waits for that
    thread's events with no timeout. So the generator is iterated in a second thread here, and
    the caller's thread waits on a queue with a timeout: a Ctrl-C is seen within 0.1 s even while
    a long step sends nothing (the first one says "cancelling"), and the second one stops the
    waiting while the generator goes on in the background: the cancelled run still writes its
    result, and the next turn can wait for it. Iterating the generator in the caller's thread
    would need an exception raised inside it to stop waiting: that ends it before it writes the
    run's result, and leaves nothing to wait for."""
    events: queue.Queue = queue.Queue()

    def consume() -> None:
        signals_to_main_thread()
        try:
            for event in stream():
                events.put(("event", event))
        except BaseException as exc:  # the agent reports bad input in the result; this is a bug
            events.put(("crash", exc))
        finally:
            events.put(("end", None))

    worker = threading.Thread(target=consume, name="askdraw-turn", daemon=True)
    result = None
    with ctrl_c.catching(cancel.set):
        worker.start()
        seen = 0
        for kind, item in _drain(events, lambda: ctrl_c.count):
            if ctrl_c.count > seen:
                seen = ctrl_c.count
                if seen >= 2:
                    return None, worker
                view.note("cancelling this turn (Ctrl-C again to stop waiting)", "yellow")
            if kind == "event" and item.kind == "result":
                result = item.result
            elif kind == "event":
                view.show(item)
            elif kind == "crash":
                view.close()
                say(f"error: {type(item).__name__}: {clip(item, 300)}", "red")
            elif kind == "end":
                break
    return result, None


def _drain(events: queue.Queue, interrupts: Callable[[], int]) -> Iterator[tuple[str, Any]]:
    """Items of ``events`` as they come; every 0.1 s without one, a ('tick', None) so the caller
    can notice Ctrl-C (counted by ``interrupts``) while a step runs."""
    seen = interrupts()
    while True:
        try:
            yield events.get(timeout=0.1)
        except queue.Empty:
            if interrupts() != seen:
                seen = interrupts()
                yield ("tick", None)


__all__ = ["TurnView", "follow_turn"]
