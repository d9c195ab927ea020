"""The ``askdraw`` command line: ``askdraw ask``, ``trace``, ``chat``, ``serve`` and ``history``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from agent.options import option_name, with_settings
from agent.ui.terminal import printable, printable_json, wrap_lines

app = typer.Typer(
    name="askdraw",
    help="Ask a question by voice or text; a local agent searches Wikipedia, answers or draws.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    err.print(f"[bold red]askdraw: error:[/] {escape(printable(message, oneline=True))}", markup=True)
    raise typer.Exit(code)


def _note(kind: str, message: str) -> None:
    """``askdraw: note: ...`` (or warning) on stderr: one line, terminal escapes made visible."""
    err.print(f"askdraw: {kind}: {printable(message, oneline=True)}", markup=False)


OutDir = Annotated[Optional[Path], typer.Option("--out", help="Where runs are written \\[env: ASKDRAW_OUT_DIR; default: $ASKDRAW_HOME/runs].", show_default=False)]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            out.print(f"askdraw {version('askdraw')}", markup=False)
        except PackageNotFoundError:  # run from a source tree that was never installed
            out.print("askdraw (not installed)", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", callback=_version,
                                          is_eager=True)] = False,
) -> None:
    """Ask a question by voice or text; a local agent searches Wikipedia, answers or draws."""


@app.command()
@with_settings
def ask(
    question: Annotated[Optional[str], typer.Argument(help="The question (or use --audio).")] = None,
    audio: Annotated[Optional[Path], typer.Option("--audio", "-a", help="Ask with an audio file (wav/flac/ogg/opus/mp3).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print only the result as JSON on stdout.")] = False,
    trace: Annotated[bool, typer.Option("--trace", help="Print each step's tool decision to stderr as it happens.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="For scripts: print only the answer (and the image path); no progress, no notes.")] = False,
    *,
    overrides: dict[str, Any],
) -> None:
    """Ask one question; print the answer, the route and why, the sources, and the image path."""
    if question is None and audio is None:
        _fail("give a question, or --audio FILE", 2)
    if question is not None and not question.strip() and audio is None:
        _fail("empty question: type a question or give an audio file", 2)
    agent = _agent_or_fail(overrides)
    result = _run(agent, question, audio, trace=trace, spinner=err.is_terminal and not (trace or quiet),
                  stream_answer=out.is_terminal and not (json_out or quiet))
    if json_out:
        sys.stdout.write(printable_json(result.model_dump_json(indent=2)) + "\n")
    elif quiet:
        _print_quiet(result)
    else:
        _print_result(result)
    if not quiet:
        _print_notices(result)
    if result.error == "cancelled":
        # The run and its trace are written: leave now (130), without the interpreter's teardown of
        # the loaded models, during which a second Ctrl-C would meet the default handler and kill
        # the process by SIGINT instead.
        from rich.markup import escape

        message = (f"cancelled; the run's trace is in {result.trace_path}" if result.trace_path
                   else "cancelled (the run could not be saved; see the note above)")
        err.print(f"[bold red]askdraw: error:[/] {escape(printable(message, oneline=True))}", markup=True)
        _quit_now("", 130)
    if result.error and not result.answer:
        _fail(result.error, 1)
    if result.error and not quiet:
        _note("warning", result.error)


def _print_notices(result) -> None:
    """The result's notices on stderr, one line each; a missing picture's in one short line."""
    from agent.ui.render import facts, short_image_note

    for notice in result.notices:
        if notice == result.image_notice:
            notice = short_image_note(facts(result)) or notice
        _note("note", notice)


def _draws(settings) -> bool:
    """Whether a picture can be drawn at all (else the image step only writes a labelled card)."""
    return bool(settings.image_model or settings.image_endpoint)


def _run(agent, question: str | None, audio: Path | None, *, trace: bool, spinner: bool,
         stream_answer: bool = False):
    """One question, with a status line (``spinner``) or each step on stderr (``trace``).
    Ctrl-C cancels the run (its trace and result are still written); a second one quits at once.
    With no image model, the status never says "drawing"; a step without a picture is shown
    without its long why: the one-line note after the result says it. ``stream_answer`` (stdout
    is a terminal): the answer's tokens are shown on stdout as they come, as ``chat`` does, and
    a draft that the final answer replaces is marked as such."""
    import time

    from agent.trace import format_event
    from agent.ui.progress import TurnView

    draws = _draws(agent.settings)
    view = TurnView(out, True, time.perf_counter(), draws=draws) if stream_answer else None

    result = None
    status = err.status("askdraw: starting (models load on first use)", spinner="dots") if spinner else None
    if status:
        status.start()
    cancel = threading.Event()

    def on_interrupt(signum, frame) -> None:
        if cancel.is_set():
            _quit_now("askdraw: interrupted; quitting without waiting for the running step "
                      "(askdraw trace shows the unfinished run)")
        cancel.set()
        err.print("askdraw: cancelling (Ctrl-C again to quit at once)", markup=False)

    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        for event in agent.stream(text=question, audio=str(audio) if audio else None, progress=True,
                                  cancel=cancel):
            kind = event.progress.get("type") if event.kind == "progress" else None
            if view is not None and kind in ("token", "replace"):
                if status and kind == "token" and not view.streaming:
                    status.stop()  # the spinner's line and the streamed text share the terminal
                view.progress(event.progress)
            elif event.kind == "progress" and status and event.progress.get("text") and kind != "token":
                if draws or event.progress.get("step") != "generate_image":
                    if view is not None and view.streaming:
                        view.close()
                        status.start()
                    status.update(Text(f"askdraw: {printable(event.progress['text'], oneline=True)}"))
            elif event.kind == "step" and trace:
                if view is not None:
                    view.close()  # end the streamed line first
                step = event.step
                if step.step == "generate_image" and step.data.get("generated") is False:
                    step = step.model_copy(update={"reason": None})
                err.print(printable(format_event(step)), markup=False)
            elif event.kind == "result":
                result = event.result
    finally:
        if view is not None:
            view.close()
        if status:
            status.stop()
        if previous is not None:
            # After a Ctrl-C the command is on its way out (exit 130): a second one, even while the
            # process is still exiting (model finalisers can take a second), still quits at once
            # with 130 instead of meeting the default handler and killing the process by SIGINT.
            signal.signal(signal.SIGINT, on_interrupt if cancel.is_set() else previous)
    assert result is not None
    return result


def _print_quiet(result) -> None:
    """``--quiet``: the answer, then the image path when a picture was really drawn."""
    if result.answer:
        out.print(printable(result.answer), markup=False)
    if result.image_generated and result.image_path:
        out.print(printable(result.image_path, oneline=True), markup=False)


def _print_result(result) -> None:
    """The result's labelled lines; on a terminal the answer's markdown (lists, bold) is rendered."""
    from rich.padding import Padding

    from agent.ui.render import answer_markdown, facts, plain_lines

    f = facts(result)
    lines = plain_lines(f)

    def show(line: str) -> None:  # on a terminal, long lines wrap at word boundaries, under the value
        line = printable(line, oneline=True)
        if out.is_terminal:
            line = wrap_lines(line, out.width, hang=3 if line.startswith(" ") else 12)
        out.print(line, markup=False)

    if out.is_terminal and f.answer and "Answer:" in lines:
        start = lines.index("Answer:") + 1
        end = start + len(f.answer.splitlines())
        for line in lines[:start]:
            show(line)
        out.print(Padding(answer_markdown(f.answer), (0, 0, 0, 2)))
        lines = lines[end:]
    for line in lines:
        show(line)


@app.command("trace")
def show_trace(
    run_id: Annotated[Optional[str], typer.Argument(help="Run id, run folder, or omit for the latest run.")] = None,
    out_dir: OutDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the raw JSON events.")] = False,
) -> None:
    """Print a run's steps and decisions as a readable timeline (a run that never finished, and
    damaged trace lines, are marked; --json prints the valid events and notes the rest on stderr)."""
    from agent.trace import UNFINISHED, format_timeline, load_trace

    out_dir = out_dir or _settings_or_fail({}).out_dir
    if run_id is None:
        runs = sorted((d for d in out_dir.glob("*") if (d / "trace.jsonl").exists()), key=lambda d: d.stat().st_mtime)
        if not runs:
            _fail(f"no runs in {out_dir}/ (askdraw ask and chat write them there; --out DIR reads another folder)")
        folder = runs[-1]
    else:
        folder = Path(run_id) if Path(run_id).is_dir() else out_dir / run_id
    if not (folder / "trace.jsonl").exists():
        _fail(f"no trace for run '{run_id}' (looked for {folder / 'trace.jsonl'})")
    try:
        log = load_trace(folder)
    except OSError as exc:
        _fail(f"cannot read {folder / 'trace.jsonl'}: {exc.strerror or exc}")
    if json_out:
        for e in log.events:
            sys.stdout.write(printable_json(e.model_dump_json()) + "\n")
        for bad in log.skipped:
            _note("note", f"{folder / 'trace.jsonl'} {bad}")
        if not log.finished:
            _note("note", f"{UNFINISHED} ({folder})")
    else:
        text = printable(format_timeline(log))
        out.print(wrap_lines(text, out.width) if out.is_terminal else text, markup=False)


def _settings_or_fail(overrides: dict[str, Any]):
    """Settings from the options given (``overrides``), the environment and the defaults. A bad
    setting is a one-line usage error (exit 2) naming its option and environment variable."""
    from pydantic import ValidationError

    from agent.options import env_name
    from agent.settings import Settings

    def bad(field: str, message: str) -> None:
        where = " / ".join(dict.fromkeys([option_name(field), env_name(field)]))
        _fail(f"invalid setting {field} ({where}): {message}", 2)

    try:
        settings = Settings(**overrides)
        # Runs are found again from any folder (chat --resume, /trace): a relative --out is made absolute.
        settings.out_dir = Path(os.path.abspath(settings.out_dir.expanduser()))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        if not field:
            _fail(f"invalid settings: {message}", 2)
        bad(field, message)
    problem = settings.wiki_problem()
    if problem:
        bad("wiki", problem)
    problem = settings.device_problem()
    if problem:
        bad("device", problem)
    return settings


def _agent_or_fail(overrides: dict[str, Any]):
    """An Agent with :func:`_settings_or_fail`'s settings."""
    from agent.agent import Agent
    from tools.common import quiet_transformers

    settings = _settings_or_fail(overrides)
    quiet_transformers()
    return Agent(settings)


@app.command()
@with_settings
def chat(
    thread: Annotated[Optional[str], typer.Argument(metavar="ID", show_default=False,
                                                    help="With --resume: the conversation to resume (default: the most recent).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Resume a past conversation: the most recent, or ID (askdraw history lists them).")] = False,
    *,
    overrides: dict[str, Any],
) -> None:
    """Talk with the agent: typed, spoken (/voice) or audio-file (/file) questions, follow-ups in context."""
    if thread is not None and not resume:
        _fail(f"unexpected argument '{thread}' (to resume a conversation: askdraw chat --resume {thread})", 2)
    agent = _agent_or_fail(overrides)
    from agent.ui.chat import run_chat
    from agent.ui.threads import ChatError

    try:
        code = run_chat(agent, resume=resume, thread_id=thread)
    except ChatError as exc:
        _fail(str(exc), exc.code)
    raise typer.Exit(code)


def _quit_now(message: str, code: int = 130) -> None:
    """Exit at once: a model step still running in another thread (a transcription, a decoding)
    would otherwise keep the process alive until it ends, since threads cannot be interrupted."""
    if message:
        err.print(message, markup=False)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@app.command()
@with_settings
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (non-loopback needs --allow-remote).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)] = 7860,
    allow_remote: Annotated[bool, typer.Option("--allow-remote", help="Allow a --host other machines can reach: anyone who reaches it can ask and upload audio "
                                                                       "(no login, no HTTPS); it serves no file of yours, only each asker's own images.")] = False,
    *,
    overrides: dict[str, Any],
) -> None:
    """Run the web app (Gradio): chat, voice or audio-file questions, answers, sources, image, trace."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from agent.ui.server import is_loopback

    if not is_loopback(host):
        if not allow_remote:
            _fail(f"--host {host} is reachable from other machines; add --allow-remote to serve on it", 2)
        err.print(f"askdraw: warning: serving on {printable(host, oneline=True)}: anyone who can reach this machine can use the agent "
                  "(there is no authentication)", markup=False)
    agent = _agent_or_fail(overrides)
    from agent.ui.server import serve as run_server

    err.print("askdraw: loading models…", markup=False)

    def ready(url: str) -> None:
        out.print(f"askdraw web app: {printable(url, oneline=True)}  (Ctrl-C stops it)", markup=False)
        sys.stdout.flush()

    try:
        run_server(host, port, agent=agent, allow_remote=allow_remote, on_ready=ready)
    except OSError as exc:
        _fail(f"cannot serve on {host}:{port}: {exc}", 1)


@app.command()
def history() -> None:
    """List past chat conversations (newest first): id, last update, turns, first question."""
    from agent.ui.threads import history_lines
    from agent.memory import MemoryCorrupt

    agent = _agent_or_fail({})  # conversations live in $ASKDRAW_HOME/conversations.sqlite (ASKDRAW_MEMORY_PATH)
    try:
        lines = history_lines(agent)
    except MemoryCorrupt as exc:
        _fail(str(exc), 1)
    for line in lines:
        out.print(printable(line), markup=False)  # past questions are data


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library warnings about how a library calls another, with nothing for a user to act on
    # (only these: any other warning still shows).
    warnings.filterwarnings("ignore", message=r"The `local_dir_use_symlinks` argument is deprecated",
                            category=UserWarning)  # huggingface_hub, when diffusers looks up an uncached hub id
    _help_width_when_piped()
    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:
        err.print("askdraw: interrupted", markup=False)
        sys.exit(130)
    except typer.Abort:
        err.print("askdraw: interrupted", markup=False)
        sys.exit(130)
    except typer.TyperException as exc:  # click's errors (typer vendors click, so these are its classes)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `askdraw` alone: the help, as before
            exc.ctx.get_help()  # typer prints the help itself
            sys.exit(exc.exit_code)
        # A bad option or value: one line, like every other usage error.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None and exc.exit_code == 2 else ""
        err.print(f"askdraw: error: {printable(exc.format_message(), oneline=True)}{hint}", markup=False)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _help_width_when_piped() -> None:
    """Help printed to a pipe or a file (``askdraw ask --help | cat``) is laid out 120 columns
    wide instead of 80, so no option's help is cut short with an ellipsis. A terminal's own width,
    and TERMINAL_WIDTH / COLUMNS when set, still win."""
    if sys.stdout.isatty() or os.environ.get("TERMINAL_WIDTH") or os.environ.get("COLUMNS"):
        return
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = 120


if __name__ == "__main__":
    main()
