"""``askdraw chat``: an interactive session of turns (typed, spoken or from a file) with live progress.

One :class:`ChatSession` keeps one :class:`~agent.agent.Agent` (models load once, in the
background while the first question is typed) and one conversation thread, so follow-up questions
are understood in context. Ctrl-C during a turn cancels that turn (its trace is still written);
Ctrl-C or Ctrl-D at the prompt leaves.

Output is made for a terminal (a spinner for the current step, the answer streamed token by
token, a final panel); when stdout is not a terminal the same content is printed as plain lines.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from agent.ui.interrupts import CtrlC, wake_up_at_prompt
from agent.ui.preload import Preload
from agent.ui.progress import TurnView, follow_turn
from agent.ui.render import answer_lines, answer_panel, clip, facts, short_image_note
from agent.ui.terminal import printable, wrap_lines
from agent.ui.threads import ChatError, past_turns, resolve_resume
from agent.ui.viewer import open_with_viewer

PROMPT = "ask> "
GOODBYE = "bye"
LOADING = "loading models (first turn only)"

HELP = [
    ("a question", "type it and press Enter"),
    ("/voice", "ask by voice: speak, then press Enter (or pause)"),
    ("/file PATH", "ask with an audio file (wav/flac/ogg/opus/mp3)"),
    ("/trace", "the last turn's steps and decisions"),
    ("/image", "open the last image (or print its path)"),
    ("/new", "start a new conversation (also /clear)"),
    ("/help", "this list"),
    ("exit", "leave (also quit, Ctrl-D); Ctrl-C stops a running turn"),
]
# Typed alone on a line, these words are commands, not questions (a terminal habit).
BARE_COMMANDS = {"help": "/help", "clear": "/clear", "new": "/new", "exit": "/exit", "quit": "/quit"}


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
        self.image_noted = False  # the no-picture note is said once per session
        self.ctrl_c = CtrlC()
        self._leftover: threading.Thread | None = None  # a turn abandoned while it still ran
        self.preload = Preload(agent) if preload else None

    # -- helpers ------------------------------------------------------------------------------
    @property
    def recorder(self) -> Any:
        if self._recorder is None:
            from agent.ui.voice import Recorder

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
        if s.llm_endpoint:
            llm = f"{s.llm_model or 'the served model'} @ {s.llm_endpoint}"
        else:
            from tools.chat import model_name

            tools = getattr(self.agent, "tools", None)
            model = tools.llm if tools is not None else None  # built, not loaded: it names its runtime, and why
            note = getattr(model, "runtime_note", "")
            llm = s.llm if model is None else f"{model_name(model)} ({note})" if note else model_name(model)
        if s.asr_endpoint:
            asr = f"{s.asr_model or 'the served model'} @ {s.asr_endpoint}"
        else:  # built, not loaded: it names its runtime, and why where that was a choice
            whisper = getattr(getattr(self.agent, "tools", None), "asr", None)
            runtime = getattr(whisper, "runtime", "")
            note = getattr(whisper, "runtime_note", "")
            asr = f"{s.asr} on {runtime}" + (f" ({note})" if note else "") if runtime else s.asr
        if s.image_endpoint:
            image = f"{s.image_model or 'default model'} @ {s.image_endpoint}"
        else:
            image = s.image_model or "none (labelled cards; --image-model to draw)"
        device = f"device {s.device}" + (f" {s.dtype}" if s.dtype != "auto" else "")
        loaded = getattr(self.agent, "devices", None)
        where = loaded() if callable(loaded) else {}
        if isinstance(where, dict) and where:  # models already loaded: where they are
            device += " (" + ", ".join(f"{role} on {d}" for role, d in where.items()) + ")"
        return f"models: llm {llm}, asr {asr}, wiki {s.wiki}, image {image}; {device}"

    # -- banner and commands ------------------------------------------------------------------
    def banner(self) -> None:
        title = Text("askdraw chat", style="bold")
        title.append(" - ask by typing a question, or:", style="")
        self.say(title)
        for name, what in HELP[1:]:
            self.say(Text.assemble(("  " + name.ljust(11), "cyan"), what))
        if self.resumed:
            self._resumed_banner(self.resumed)
        else:
            self.say(Text.assemble("new conversation ", (str(self.thread_id), "bold"),
                                   " (askdraw chat --resume continues it later)"))
        line = self._settings_line()
        if line:
            self.say(line, "dim")

    def _resumed_banner(self, r: dict[str, Any]) -> None:
        """The resumed conversation: its id, its remembered turns (question, route, the answer's
        start), and which run /trace and /image show."""
        from agent.memory import MemoryCorrupt

        turns = r.get("turns")
        last = printable(clip(r.get("last_question") or r.get("first_question"), 60))
        count = f"{turns} turn{'' if turns == 1 else 's'}; " if turns is not None else ""
        self.say(Text.assemble(("resumed conversation ", "green"), (printable(self.thread_id), "bold green"),
                               f" ({count}last: \"{last}\")"))
        try:
            past, self.last = past_turns(self.agent, self.thread_id)
        except (MemoryCorrupt, OSError, ValueError) as exc:
            self.say(f"could not read the conversation's turns: {clip(exc, 200)}", "yellow")
            return
        if turns is not None and turns > len(past):
            self.say(f"  ({turns - len(past)} earlier turn{'' if turns - len(past) == 1 else 's'} not shown)", "dim")
        first = (turns - len(past) + 1) if turns is not None and turns >= len(past) else 1
        for n, turn in enumerate(past, first):
            self.say(Text.assemble((f"  {n}. ", "dim"), printable(clip(turn.get("question"), 70)),
                                   (f" -> {printable(turn.get('route') or '?')}: ", "dim"),
                                   printable(clip(turn.get("answer"), 70))))
        if self.last is not None:
            self.say(f"/trace and /image show the last turn (run {self.last.run_id})", "dim")
        elif past:
            self.say("the last turn's run folder is gone: /trace and /image have nothing to show yet", "dim")

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
        if self.preload is not None:
            self.preload.start()
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        while True:
            try:
                with wake_up_at_prompt():
                    line = self.input_fn(PROMPT)
                if self.echo:
                    self.console.file.write(printable(line) + "\n")
            except (EOFError, KeyboardInterrupt) as exc:
                # the cursor is still on the prompt's line (piped input: say why, so no line ends in a space)
                self.console.print("(end of input)" if self.echo and isinstance(exc, EOFError) else "")
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
        bare = BARE_COMMANDS.get(text.lower().rstrip("!."))  # the word alone, not a question starting with it
        if bare:
            word = command = bare
        if command in ("/exit", "/quit", "/q", ":q"):
            return False
        commands: dict[str, Callable[[], Any]] = {
            "/help": self.help, "/new": self.new_conversation, "/clear": self.new_conversation,
            "/trace": self.show_trace,
            "/image": self.show_image, "/file": lambda: self.ask_file(rest.strip()), "/voice": self.ask_voice}
        if not command.startswith("/"):
            self.turn(text=text)
        elif command in commands:
            commands[command]()
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
        text = printable(format_timeline(log))
        if self.live:  # wrapped at word boundaries; piped output keeps one line per line
            text = wrap_lines(text, self.console.width)
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        where = "" if folder.parent.absolute() == _default_out_dir() else f" --out {folder.parent}"
        self.say(f"(askdraw trace {self.last.run_id}{where} shows it again)", "dim")

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
        from agent.ui.voice import record_question

        ok, reason = self.recorder.available()
        if not ok:
            self.say(f"/voice: {reason}; type the question or use /file PATH", "yellow")
            return
        audio = record_question(self.recorder, self.say, self.ctrl_c, console=self.console, live=self.live,
                                stdin=self.stdin)
        if audio is None:
            return
        self.turn(audio=audio, label=f"asking with {len(audio) / 16000:.1f} s of recorded audio")

    # -- waiting ------------------------------------------------------------------------------
    def _wait(self, thread: threading.Thread, text: str) -> bool:
        """Wait for ``thread`` showing ``text``; False when Ctrl-C stopped the waiting."""
        if not thread.is_alive():
            return True
        view = TurnView(self.console, self.live, time.perf_counter())
        view.status(text)
        with self.ctrl_c.catching(lambda: None):
            while thread.is_alive() and not self.ctrl_c.count:
                thread.join(0.1)
        view.close()
        return not thread.is_alive()

    def _ready(self) -> bool:
        """Before a turn: wait for a cancelled turn still stopping, and (the first time) for the
        models to load. False when the turn should not run."""
        if self._leftover is not None and self._leftover.is_alive():
            if not self._wait(self._leftover, "waiting for the cancelled turn to stop"):
                self.say("the cancelled turn is still stopping; try again in a moment", "yellow")
                return False
        if self.preload is None or self.preload.reported or self.preload.thread is None:
            return True
        start = time.perf_counter()
        if not self._wait(self.preload.thread, LOADING):
            self.say("cancelled while the models were loading; nothing was asked", "yellow")
            return False
        self.preload.report(self.say, time.perf_counter() - start)
        return True

    # -- a turn -------------------------------------------------------------------------------
    def turn(self, text: str | None = None, audio: Any = None, label: str | None = None) -> Any:
        """Ask one question with live progress and a final panel; returns the Result (or None
        when the turn did not run)."""
        if not self._ready():
            return None
        if label:
            self.say(label, "dim")
        start = time.perf_counter()
        view = TurnView(self.console, self.live, start, draws=self._draws())
        if self.turns == 0 and (self.preload is None or self.preload.thread is None):
            view.status(LOADING)
        else:
            view.spin("thinking")
        cancel = threading.Event()
        result, abandoned = follow_turn(lambda: self.agent.stream(text=text, audio=audio, progress=True,
                                                                  thread_id=self.thread_id, cancel=cancel),
                                        view, self.ctrl_c, cancel, self.say)
        view.close()
        self.turns += 1
        if abandoned is not None:
            self._leftover = abandoned
            self.say("cancelled: stopped waiting; the step that was running finishes in the background "
                     "(its trace is written when it does)", "yellow")
            return None
        if result is None:
            return None
        self.last = result
        self.render(result, time.perf_counter() - start)
        return result

    def _draws(self) -> bool:
        """Whether a picture can be drawn (else the image step only writes a labelled card)."""
        s = getattr(self.agent, "settings", None)
        return bool(s is None or s.image_model or s.image_endpoint)

    # -- the final output ---------------------------------------------------------------------
    def render(self, result: Any, elapsed: float) -> None:
        f = facts(result)
        trace_hint = f"trace: {f.trace_path}" if f.trace_path else "no trace was written"
        if f.outcome == "cancelled":
            self.say(f"cancelled after {elapsed:.1f}s ({trace_hint}; /trace shows it)", "yellow")
            return
        if f.outcome == "failed":
            self.say(f"error: {f.error}", "bold red")
            for notice in f.notices:
                self.say(f"note: {notice}", "dim")
            self.say(f"({trace_hint}; /trace shows it)", "dim")
            return
        if self.live:
            self.console.print(answer_panel(f, elapsed))
        else:  # plain lines: no box, no padding
            for line in answer_lines(f, elapsed):
                self.say(line)
        if f.error:
            self.say(f"warning: {f.error}", "yellow")
        self._image_note(f)
        for notice in f.other_notices:
            self.say(f"note: {notice}", "dim")

    def _image_note(self, f: Any) -> None:
        """Why there is no picture, in one line: once per session when no image model is set (the
        same every turn), and again whenever the answer itself points to it; each time for a
        picture that failed."""
        note = short_image_note(f)
        if note is None:
            return
        if f.no_image_model and self.image_noted and "see the notice" not in (f.answer or ""):
            return
        self.image_noted = self.image_noted or f.no_image_model
        self.say(f"note: {note}", "dim")


def _default_out_dir() -> Path | None:
    """Where `askdraw trace` looks with no --out (ASKDRAW_OUT_DIR, else $ASKDRAW_HOME/runs)."""
    from pydantic import ValidationError

    from agent.settings import Settings

    try:
        return Settings().out_dir.expanduser().absolute()
    except ValidationError:
        return None


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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


__all__ = ["ChatSession", "run_chat", "PROMPT"]
