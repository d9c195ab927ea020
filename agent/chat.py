"""``askdraw chat``: an interactive session of turns (typed, spoken or from a file) with live progress.

One :class:`ChatSession` keeps one :class:`~agent.agent.Agent` (models load once, in the
background while the first question is typed) and one conversation thread, so follow-up questions
are understood in context. Ctrl-C during a turn cancels that turn (its trace is still written);
Ctrl-C or Ctrl-D at the prompt leaves.

Output is made for a terminal (a spinner for the current step, the answer streamed token by
token, a final panel); when stdout is not a terminal the same content is printed as plain lines.
"""

from __future__ import annotations

import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.terminal import printable
from tools.common import signals_to_main_thread

PROMPT = "ask> "
GOODBYE = "bye"
LOADING = "loading models (first turn only)"

HELP = [
    ("a question", "type it and press Enter"),
    ("/voice", "ask by voice: speak, then press Enter (or pause)"),
    ("/file PATH", "ask with an audio file (wav/flac/ogg/opus/mp3)"),
    ("/trace", "the last turn's steps and decisions"),
    ("/image", "open the last image (or print its path)"),
    ("/new", "start a new conversation"),
    ("/help", "this list"),
    ("exit", "leave (also quit, Ctrl-D); Ctrl-C stops a running turn"),
]


class ChatError(Exception):
    """A problem that ends ``askdraw chat`` before the session starts (e.g. an unknown --resume id)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def resolve_resume(agent: Any, wanted: str | None) -> dict[str, Any]:
    """The conversation ``--resume [ID]`` names: ``wanted`` (an id or a unique prefix of one), or
    the most recent one. Raises :class:`ChatError` (exit 2) when there is none such."""
    known = list(agent.conversations())
    if not known:
        raise ChatError("no conversations to resume yet (start one with `askdraw chat`)")
    if wanted is None:
        return known[0]
    exact = [c for c in known if c.get("thread_id") == wanted]
    matches = exact or [c for c in known if str(c.get("thread_id", "")).startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ChatError(f"no conversation '{wanted}' (askdraw history lists them)")
    raise ChatError(f"'{wanted}' matches {len(matches)} conversations; give more of the id (askdraw history)")


def when(value: Any) -> str:
    """A conversation time as local 'YYYY-MM-DD HH:MM'."""
    if value is None or value == "":
        return "?"
    try:
        if isinstance(value, (int, float)):
            stamp = datetime.fromtimestamp(value)
        else:
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone()
        return stamp.strftime("%Y-%m-%d %H:%M")
    except (ValueError, OSError, OverflowError):
        return str(value)[:16]


def clip(text: Any, limit: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def history_lines(agent: Any) -> list[str]:
    """``askdraw history``: one line per past conversation, newest first."""
    known = list(agent.conversations())
    if not known:
        return ["no conversations yet"]
    width = max(len(str(c.get("thread_id", ""))) for c in known)
    lines = [f"{'id'.ljust(width)}  {'updated'.ljust(16)}  turns  first question"]
    for c in known:
        turns = c.get("turns")
        lines.append(f"{str(c.get('thread_id', '')).ljust(width)}  {when(c.get('updated_at')).ljust(16)}  "
                     f"{str(turns if turns is not None else '?').rjust(5)}  {clip(c.get('first_question'), 70)}")
    return lines


def open_with_viewer(path: str) -> bool:
    """Open ``path`` with the system image viewer; False when there is none (or no display)."""
    try:
        if sys.platform == "darwin":
            command = ["open", path]
        elif os.name == "nt":
            os.startfile(path)  # type: ignore[attr-defined]
            return True
        else:
            if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
                return False
            command = ["xdg-open", path]
        if shutil.which(command[0]) is None:
            return False
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        return True
    except OSError:
        return False


# -- the session -------------------------------------------------------------------------------
class ChatSession:
    """An interactive session over one agent. ``input_fn``, ``recorder`` and ``opener`` can be
    replaced (tests); ``console`` is where everything is printed."""

    def __init__(self, agent: Any, *, console: Console | None = None, resume: dict[str, Any] | None = None,
                 recorder: Any = None, input_fn: Callable[[str], str] = input,
                 opener: Callable[[str], bool] = open_with_viewer, preload: bool = True,
                 echo: bool | None = None, stdin: Any = None) -> None:
        self.agent = agent
        self.stdin = stdin  # where /voice watches for Enter (default sys.stdin)
        self.console = console or Console(highlight=False)
        # Input that does not come from a terminal is not shown as it is typed: echo it.
        self.echo = (not _isatty(sys.stdin)) if echo is None else echo
        self.live = self.console.is_terminal  # spinner and in-place updates only on a terminal
        self.input_fn = input_fn
        self.opener = opener
        self._recorder = recorder
        self.last: Any = None  # the last turn's Result
        self.turns = 0
        self.resumed = resume
        self.thread_id: str = resume["thread_id"] if resume else str(agent.new_thread_id())
        self._interrupts = 0
        self._cancel: threading.Event | None = None
        self._leftover: threading.Thread | None = None  # a turn abandoned while it still ran
        self._preload_thread: threading.Thread | None = None
        self._preload_result: dict[str, Any] | None = None
        self._preload_error: BaseException | None = None
        self._preload_reported = False
        self._want_preload = preload

    # -- helpers ------------------------------------------------------------------------------
    @property
    def recorder(self) -> Any:
        if self._recorder is None:
            from agent.recorder import Recorder

            self._recorder = Recorder()
        return self._recorder

    def say(self, text: str | Text = "", style: str | None = None) -> None:
        """Print a line. A ``str`` is made printable here (terminal escapes shown, not obeyed); a
        ``Text`` must be built from printable parts by its caller."""
        if isinstance(text, str):
            text = Text(printable(text), style=style or "")
        self.console.print(text, soft_wrap=True)  # the terminal wraps; paths are never broken

    def _settings_line(self) -> str:
        s = self.agent.settings
        llm = f"{s.llm_model or 'the served model'} @ {s.llm_endpoint}" if s.llm_endpoint else s.llm
        asr = f"{s.asr_model or 'the served model'} @ {s.asr_endpoint}" if s.asr_endpoint else s.asr
        if s.image_endpoint:
            image = f"{s.image_model or 'default model'} @ {s.image_endpoint}"
        else:
            image = s.image_model or "none (labelled cards; --image-model to draw)"
        return f"models: llm {llm}, asr {asr}, wiki {s.wiki}, image {image}"

    # -- banner and commands ------------------------------------------------------------------
    def banner(self) -> None:
        title = Text("askdraw chat", style="bold")
        title.append(" - ask by typing a question, or:", style="")
        self.say(title)
        for name, what in HELP[1:]:
            self.say(Text.assemble(("  " + name.ljust(11), "cyan"), what))
        if self.resumed:
            r = self.resumed
            turns = r.get("turns")
            last = printable(clip(r.get("last_question") or r.get("first_question"), 60))
            count = f"{turns} turn{'' if turns == 1 else 's'}; " if turns is not None else ""
            self.say(Text.assemble(("resumed conversation ", "green"), (printable(self.thread_id), "bold green"),
                                   f" ({count}last: \"{last}\")"))
        else:
            self.say(Text.assemble("new conversation ", (str(self.thread_id), "bold"),
                                   " (askdraw chat --resume continues it later)"))
        line = self._settings_line()
        if line:
            self.say(line, "dim")

    def help(self) -> None:
        for name, what in HELP:
            self.say(Text.assemble(("  " + name.ljust(11), "cyan"), what))

    def run(self) -> int:
        """The read-eval-print loop; returns the exit status (0)."""
        # Ctrl-C must reach the session even when it was started with SIGINT ignored (a job
        # started in the background by a non-interactive shell inherits SIG_IGN).
        self._claim(self.thread_id)
        restore = None
        if threading.current_thread() is threading.main_thread():
            restore = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return self._loop()
        finally:
            self.agent.release_thread(self.thread_id)
            if restore is not None:
                signal.signal(signal.SIGINT, restore)

    def _claim(self, thread_id: str) -> None:
        """Hold the conversation while this session is open: a second session on it (another
        terminal, ``askdraw chat --resume``) would interleave turns and lose some."""
        from agent.memory import MemoryCorrupt, ThreadBusy

        try:
            self.agent.claim_thread(thread_id)
        except ThreadBusy as exc:
            raise ChatError(f"{exc} (`askdraw chat` without --resume starts a new one)", 1) from None
        except MemoryCorrupt as exc:
            raise ChatError(str(exc), 1) from None

    def _loop(self) -> int:
        self.banner()
        self._start_preload()
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        while True:
            try:
                with _wake_up_at_prompt():
                    line = self.input_fn(PROMPT)
                if self.echo:
                    self.console.file.write(printable(line) + "\n")
            except (EOFError, KeyboardInterrupt):
                self.console.print()  # the cursor is still on the prompt's line
                self.say(GOODBYE)
                return 0
            try:
                if not self.handle(line):
                    self.say(GOODBYE)
                    return 0
            except KeyboardInterrupt:  # Ctrl-C outside a turn's own handling (e.g. printing)
                self.say("interrupted", "yellow")

    def handle(self, line: str) -> bool:
        """Run one line of input; False when the session should end."""
        text = line.strip()
        if not text:
            return True
        word, _, rest = text.partition(" ")
        command = word.lower()
        if command in ("exit", "quit", "/exit", "/quit", "/q", ":q"):
            return False
        if not command.startswith("/"):
            self.turn(text=text)
        elif command == "/help":
            self.help()
        elif command == "/new":
            self.new_conversation()
        elif command == "/trace":
            self.show_trace()
        elif command == "/image":
            self.show_image()
        elif command == "/file":
            self.ask_file(rest.strip())
        elif command == "/voice":
            self.ask_voice()
        else:
            self.say(f"unknown command {word}: /help lists the commands", "yellow")
        return True

    def new_conversation(self) -> None:
        old, self.thread_id = self.thread_id, str(self.agent.new_thread_id())
        self.agent.release_thread(old)
        self._claim(self.thread_id)
        self.resumed = None
        self.say(Text.assemble("new conversation ", (str(self.thread_id), "bold")))

    def show_trace(self) -> None:
        from agent.trace import format_timeline, load_trace

        if self.last is None or not self.last.trace_path:
            self.say("no turn yet in this session: ask something first", "yellow")
            return
        folder = Path(self.last.trace_path).parent
        try:
            log = load_trace(folder)  # damaged lines are marked, an unfinished run is said so
        except OSError as exc:
            self.say(f"could not read the trace in {folder}: {exc}", "red")
            return
        self.console.print(printable(format_timeline(log)), markup=False, highlight=False, soft_wrap=True)
        self.say(f"(askdraw trace {self.last.run_id} --out {folder.parent} shows it again)", "dim")

    def show_image(self) -> None:
        path = getattr(self.last, "image_path", None) if self.last is not None else None
        if not path or not Path(path).exists():
            self.say("no image yet in this session" if self.last is None else "the last turn has no image", "yellow")
            return
        card = "" if self.last.image_generated else " (a labelled card: no image was generated)"
        if self.opener(path):
            self.say(f"opened {path}{card}")
        else:
            self.say(f"no image viewer or display here; the image is at {path}{card}")

    def ask_file(self, arg: str) -> None:
        try:
            parts = shlex.split(arg)
        except ValueError:
            parts = [arg]
        if len(parts) != 1:
            self.say("usage: /file PATH (an audio file: wav/flac/ogg/opus/mp3)", "yellow")
            return
        path = Path(parts[0]).expanduser()
        if not path.is_file():
            self.say(f"no such audio file: {path}", "red")
            return
        self.turn(audio=str(path), label=f"asking with {path}")

    def ask_voice(self) -> None:
        ok, reason = self.recorder.available()
        if not ok:
            self.say(f"/voice: {reason}; type the question or use /file PATH", "yellow")
            return
        audio = self._record()
        if audio is None:
            return
        self.turn(audio=audio, label=f"asking with {len(audio) / 16000:.1f} s of recorded audio")

    # -- recording ----------------------------------------------------------------------------
    def _record(self) -> Any:
        from agent.recorder import RecorderUnavailable, stop_on_enter

        stop, done = threading.Event(), threading.Event()
        heard = {"speech": False, "seconds": 0.0}
        self.say("recording: speak now, then press Enter (it also stops after 1.5 s of silence, or at 30 s)", "bold")
        status = self.console.status("recording", spinner="dots") if self.live else None
        last_shown = [0.0]

        def on_block(seconds: float, level: float, speech: bool) -> None:
            heard["speech"], heard["seconds"] = speech, seconds
            if status is not None and seconds - last_shown[0] >= 0.2:
                last_shown[0] = seconds
                bar = "#" * min(20, int(level * 100))
                status.update(f"recording {seconds:4.1f} s  {bar}")

        watcher = stop_on_enter(stop, done, self.stdin)
        cancelled = False
        with self._sigint(lambda: stop.set()):
            if status is not None:
                status.start()
            try:
                audio = self.recorder.record(stop, on_block=on_block)
            except RecorderUnavailable as exc:
                self.say(f"/voice: {exc}; type the question or use /file PATH", "yellow")
                return None
            finally:
                if status is not None:
                    status.stop()
                done.set()
                cancelled = self._interrupts > 0
        watcher.join(0.5)
        if cancelled:
            self.say("recording cancelled", "yellow")
            return None
        if len(audio) < 16000 * 0.3:
            self.say("nothing was recorded; try again, or type the question", "yellow")
            return None
        if not heard["speech"]:
            self.say("note: the recording sounded like silence; asking anyway", "dim")
        return audio

    # -- Ctrl-C -------------------------------------------------------------------------------
    def _sigint(self, on_interrupt: Callable[[], None]) -> Any:
        """A context in which Ctrl-C calls ``on_interrupt`` (and counts) instead of raising."""
        session = self

        class _Handler:
            def __enter__(self_inner) -> None:
                session._interrupts = 0
                self_inner.previous = None
                if threading.current_thread() is threading.main_thread():
                    def handler(signum: int, frame: Any) -> None:
                        session._interrupts += 1
                        on_interrupt()

                    self_inner.previous = signal.signal(signal.SIGINT, handler)

            def __exit__(self_inner, *exc: Any) -> None:
                if self_inner.previous is not None:
                    signal.signal(signal.SIGINT, self_inner.previous)

        return _Handler()

    def _wait(self, thread: threading.Thread, text: str) -> bool:
        """Wait for ``thread`` showing ``text``; False when Ctrl-C stopped the waiting."""
        if not thread.is_alive():
            return True
        view = TurnView(self.console, self.live, time.perf_counter())
        view.status(text)
        with self._sigint(lambda: None):
            while thread.is_alive() and not self._interrupts:
                thread.join(0.1)
        view.close()
        return not thread.is_alive()

    # -- preloading ---------------------------------------------------------------------------
    def _start_preload(self) -> None:
        if not self._want_preload:
            return

        def load() -> None:
            signals_to_main_thread()
            try:
                self._preload_result = dict(self.agent.preload() or {})
            except BaseException as exc:  # shown on the first turn; the turn then reports the real error
                self._preload_error = exc

        self._preload_thread = threading.Thread(target=load, name="askdraw-preload", daemon=True)
        self._preload_thread.start()

    def _finish_preload(self) -> bool:
        """Before the first turn: wait for the models to load. False if Ctrl-C stopped the wait."""
        thread = self._preload_thread
        if thread is None or self._preload_reported:
            return True
        start = time.perf_counter()
        if not self._wait(thread, LOADING):
            self.say("cancelled while the models were loading; nothing was asked", "yellow")
            return False
        self._preload_reported = True
        if self._preload_error is not None:
            self.say(f"note: could not load the models up front ({clip(self._preload_error, 200)})", "yellow")
        elif self._preload_result:
            parts = ", ".join(f"{name} {float(ms) / 1000:.1f}s" for name, ms in self._preload_result.items())
            waited = time.perf_counter() - start
            self.say(f"models loaded ({parts})" + (f"; waited {waited:.1f}s" if waited >= 0.1 else ""), "dim")
        return True

    # -- a turn -------------------------------------------------------------------------------
    def turn(self, text: str | None = None, audio: Any = None, label: str | None = None) -> Any:
        """Ask one question with live progress and a final panel; returns the Result (or None
        when the turn did not run)."""
        if self._leftover is not None and self._leftover.is_alive():
            if not self._wait(self._leftover, "waiting for the cancelled turn to stop"):
                self.say("the cancelled turn is still stopping; try again in a moment", "yellow")
                return None
        if not self._finish_preload():
            return None
        if label:
            self.say(label, "dim")
        cancel = threading.Event()
        kwargs: dict[str, Any] = {"text": text, "audio": audio, "progress": True,
                                  "thread_id": self.thread_id, "cancel": cancel}
        events: queue.Queue = queue.Queue()
        start = time.perf_counter()
        first_turn = self.turns == 0 and self._preload_thread is None

        def consume() -> None:
            signals_to_main_thread()
            try:
                for event in self.agent.stream(**kwargs):
                    events.put(("event", event))
            except BaseException as exc:  # the agent reports bad input in the result; this is a bug
                events.put(("crash", exc))
            finally:
                events.put(("end", None))

        worker = threading.Thread(target=consume, name="askdraw-turn", daemon=True)
        view = TurnView(self.console, self.live, start)
        if first_turn:
            view.status(LOADING)
        else:
            view.spin("thinking")
        result = None
        abandoned = False
        self._cancel = cancel
        with self._sigint(cancel.set):
            worker.start()
            seen = 0
            for kind, item in _drain(events, lambda: self._interrupts):
                if self._interrupts > seen:
                    seen = self._interrupts
                    if seen >= 2:
                        abandoned = True
                        break
                    view.note("cancelling this turn (Ctrl-C again to stop waiting)", "yellow")
                if kind == "event":
                    if item.kind == "result":
                        result = item.result
                    else:
                        view.show(item)
                elif kind == "crash":
                    view.close()
                    self.say(f"error: {type(item).__name__}: {clip(item, 300)}", "red")
                elif kind == "end":
                    break
        view.close()
        self._cancel = None
        self.turns += 1
        elapsed = time.perf_counter() - start
        if abandoned:
            self._leftover = worker
            self.say("cancelled: stopped waiting; the step that was running finishes in the background "
                     "(its trace is written when it does)", "yellow")
            return None
        if result is None:
            return None
        self.last = result
        self.render(result, elapsed)
        return result

    # -- the final output ---------------------------------------------------------------------
    def render(self, result: Any, elapsed: float) -> None:
        from agent.trace import step_times

        trace_hint = f"trace: {result.trace_path}" if result.trace_path else "no trace was written"
        if result.error == "cancelled":
            self.say(f"cancelled after {elapsed:.1f}s ({trace_hint}; /trace shows it)", "yellow")
            return
        if result.error and not result.answer:
            self.say(f"error: {result.error}", "bold red")
            self._notices(result)
            self.say(f"({trace_hint}; /trace shows it)", "dim")
            return
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold", no_wrap=True)
        head.add_column(overflow="fold")
        standalone = getattr(result, "standalone_question", None)
        if result.transcript:
            head.add_row("Heard", printable(result.transcript))
        if standalone and _norm(standalone) != _norm(result.question):
            head.add_row("Understood", printable(standalone))
        facts = Table.grid(padding=(0, 2))
        facts.add_column(style="bold", no_wrap=True, min_width=10)
        facts.add_column(overflow="fold")
        for i, src in enumerate(result.sources or [], 1):
            title = src["title"] if isinstance(src, dict) else getattr(src, "title", "")
            url = src.get("url", "") if isinstance(src, dict) else getattr(src, "url", "")
            facts.add_row("Sources" if i == 1 else "", printable(f"{i}. {title}" + (f" - {url}" if url else "")))
        if not result.sources and result.route == "search":
            facts.add_row("Sources", "none found")
        if result.image_path:
            if result.image_generated:
                what = Text(f"generated with {printable(result.image_model)}", style="green")
            else:
                reason = result.no_image_reason or ""
                why = ("no image model is set; --image-model draws pictures" if result.no_image_kind == "no_model"
                       else clip(reason, 160))
                what = Text("NOT generated: a labelled card" + (f" ({printable(why)})" if why else ""),
                            style="bold yellow")
            facts.add_row("Image", Text.assemble(what, "\n", printable(result.image_path)))
        steps = step_times(result.timings_ms)
        facts.add_row("Time", f"{elapsed:.1f}s total" + (f" ({steps})" if steps else ""))
        body: list[Any] = []
        if head.row_count:
            body += [head, Text("")]
        body += [Text(printable(result.answer or "(no answer)")), Text(""), facts]
        self.console.print(Panel(Group(*body), title=Text(printable(f"answer ({result.route or 'none'})")),
                                 title_align="left", subtitle=Text(printable(f"run {result.run_id}")),
                                 subtitle_align="right", expand=True))
        if result.error:
            self.say(f"warning: {result.error}", "yellow")
        self._notices(result, skip_card=True)

    def _notices(self, result: Any, skip_card: bool = False) -> None:
        for notice in result.other_notices if skip_card else result.notices:
            self.say(f"note: {notice}", "dim")


class _wake_up_at_prompt:
    """While the prompt waits for a line, wake the main thread 4 times a second (a no-op SIGALRM).
    A Ctrl-C that lands between readline printing the prompt and starting to wait for keys only
    marks the signal; readline then waits with no timeout and notices it at the next key press
    (a race in CPython's readline: seen about once in 8 resumed sessions). The wake-up makes
    readline look at the marked signal, so Ctrl-C at the prompt always leaves."""

    PERIOD = 0.25

    def __enter__(self) -> None:
        self.armed = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"))
        if self.armed:
            self.previous = signal.signal(signal.SIGALRM, lambda signum, frame: None)
            signal.setitimer(signal.ITIMER_REAL, self.PERIOD, self.PERIOD)

    def __exit__(self, *exc: Any) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def _norm(question: Any) -> str:
    return " ".join(str(question or "").lower().rstrip("?.! ").split())


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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


class TurnView:
    """Live progress of one turn: a line per step as it happens, the answer's tokens as they are
    generated, and (on a terminal only) a spinner with the current activity."""

    def __init__(self, console: Console, live: bool, start: float) -> None:
        self.console = console
        self.live = live
        self.start = start
        self.spinner = console.status("", spinner="dots") if live else None
        self.spinning = False
        self.streaming = False  # inside a line of answer tokens
        self.last_image_step = -1.0

    def _stamp(self) -> str:
        return f"{time.perf_counter() - self.start:5.1f}s"

    def _end_tokens(self) -> None:
        if self.streaming:
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
            self.console.file.write(" " * 9)
            self.streaming = True
        self.console.file.write(printable(piece).replace("\n", "\n" + " " * 9))
        self.console.file.flush()

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

    def show(self, event: Any) -> None:
        if event.kind == "progress" and event.progress:
            p = event.progress
            kind = p.get("type")
            if kind == "token":
                self.token(str(p.get("text", "")))
            elif kind == "image_step":
                self.image_step(int(p.get("done", 0)), int(p.get("total", 0)),
                                str(p.get("text") or f"drawing, step {p.get('done')}/{p.get('total')}"))
            elif kind == "status":
                self.status(str(p.get("text", "")), p.get("reason"))
            elif p.get("text"):
                self.note(f"note: {p['text']}", "dim")
        elif event.kind == "step" and event.step is not None:
            s = event.step
            if s.error and s.error != "cancelled":
                self.line(f"{s.step}: {s.error}", style="yellow")
            elif s.step == "transcribe" and s.output:
                self.line(f'heard: "{s.output}"')
            elif s.step == "search_wikipedia" and s.output:
                self.line(f"found: {s.output}" if s.output != "no results" else "found nothing")
            elif s.step == "answer" and s.reason:
                self.line(f"answer: {s.reason}", style="dim")
            if not self.streaming:
                self.spin("thinking")

    def close(self) -> None:
        self._end_tokens()
        self._stop_spin()


def run_chat(agent: Any, *, resume: bool = False, thread_id: str | None = None,
             console: Console | None = None, **session: Any) -> int:
    """``askdraw chat``: resolve ``--resume [ID]``, then run the session. Raises :class:`ChatError`
    for a conversation that cannot be resumed."""
    from agent.memory import MemoryCorrupt

    try:
        resumed = resolve_resume(agent, thread_id) if resume else None
    except MemoryCorrupt as exc:
        raise ChatError(str(exc), 1) from None
    return ChatSession(agent, console=console, resume=resumed, **session).run()


__all__ = ["ChatSession", "ChatError", "TurnView", "run_chat", "resolve_resume", "history_lines",
           "open_with_viewer", "PROMPT"]
