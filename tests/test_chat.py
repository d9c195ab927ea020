"""``askdraw chat`` and ``askdraw history``.

Fast tests drive :class:`agent.ui.chat.ChatSession` in-process over a real :class:`Agent` with
scripted models (output to a non-terminal console, Ctrl-C as a real SIGINT). The slow test runs a
real session with the starter models through a pseudo-terminal (pexpect), as a user would.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from agent.agent import Agent
from agent.ui.chat import PROMPT, ChatSession, run_chat
from agent.context import Toolbox
from agent.ui.threads import ChatError, history_lines, resolve_resume
from agent.ui.voice import BlockStream, Recorder
from agent.settings import Settings
from agent.trace import read_trace
from tests.fakes import ScriptedLLM
from tests.test_graph import FakeASR, FakeWiki
from tools.diffusion import ImageGenerator
from tools.wikipedia import Passage

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CODES = r"(?:\x1b\[[0-9;]*m)*"  # colour codes between words in terminal output
TURTLE = Passage(title="Sea turtle", url="https://en.wikipedia.org/wiki/Sea_turtle",
                 text="Sea turtles can live for 50 years or more. Sea turtles eat seagrass, jellyfish and sponges.")


def make_agent(tmp_path: Path, llm, asr=None) -> Agent:
    settings = Settings(out_dir=tmp_path / "runs", memory_path=tmp_path / "memory.sqlite")
    return Agent(settings, tools=Toolbox(settings, llm=llm, wiki=FakeWiki([TURTLE]), asr=asr or FakeASR(),
                                         image=ImageGenerator(None)))


def scripted_input(*lines, write=None):
    """An input() replacement: the given lines (an exception is raised), then Ctrl-D. Like input(),
    it writes the prompt (to ``write``)."""
    queue = list(lines)

    def read(prompt: str) -> str:
        assert prompt == PROMPT
        if write is not None:
            write(prompt)
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read


def session(agent, *lines, terminal=False, **kwargs):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=120, highlight=False)
    kwargs.setdefault("preload", False)
    kwargs.setdefault("opener", lambda path: False)
    chat = ChatSession(agent, console=console, input_fn=scripted_input(*lines, write=buffer.write), echo=True,
                       **kwargs)
    return chat, buffer


def turtle_llm(**kw) -> ScriptedLLM:
    return ScriptedLLM(
        replies=["Sea turtles can live for 50 years or more.", "sea turtles, photo",   # turn 1: answer, image prompt
                 # turn 2: the standalone question comes from the rule (no LLM call)
                 "Sea turtles eat seagrass, jellyfish and sponges.", "sea turtles eating, photo"],
        labels=["search", "search"], **kw)


# -- fast: the session over a real Agent with scripted models -----------------------------------
def test_typed_turns_follow_up_trace_image_and_commands(tmp_path):
    opened: list[str] = []
    agent = make_agent(tmp_path, turtle_llm())
    chat, buffer = session(agent, "How long do sea turtles live?", "And what do they eat?", "/trace", "/image",
                           "/bogus", "/help", "/new", "quit",
                           opener=lambda path: opened.append(path) or False)
    assert chat.run() == 0
    out = buffer.getvalue()
    assert not ANSI.search(out), "no escape codes when the console is not a terminal"
    assert out.startswith("askdraw chat")
    for command in ("/voice", "/file PATH", "/trace", "/image", "/new", "/help", "exit"):
        assert command in out.split(PROMPT)[0]  # the banner lists the commands
    turn1, turn2, trace, image, bogus, help_, new, _ = out.split(PROMPT)[1:]
    # live progress: a line per step, the streamed answer, then the final panel
    assert "decided: search - " in turn1 and 'searching Wikipedia for "How long do sea turtles live"' in turn1
    assert "writing the answer" in turn1 and "Sea turtles can live for 50 years or more." in turn1
    assert re.search(r"answer \(search\)", turn1) and "1. Sea turtle - https://en.wikipedia.org/wiki/Sea_turtle" in turn1
    assert "NOT generated: a labelled card" in turn1 and "image.png" in turn1
    assert re.search(r"Time +\d+\.\ds total", turn1)
    # the follow-up is understood in context (the lead's memory work)
    assert re.search(r"Understood +What do sea turtles eat\?", turn2) and "jellyfish" in turn2
    assert chat.last.standalone_question == "What do sea turtles eat?"
    threads = agent.conversations()
    assert len(threads) == 1 and threads[0]["turns"] == 2 and threads[0]["thread_id"] == chat.last.thread_id
    # /trace: the last turn's timeline, as `askdraw trace` prints it
    assert "decide [llm]" in trace and "decision: search" in trace and "standalone" in trace
    assert chat.last.run_id in trace
    # /image: no viewer here, so the path is printed
    assert opened == [chat.last.image_path]
    assert f"the image is at {chat.last.image_path}" in image and "labelled card" in image
    assert "unknown command /bogus" in bogus
    assert "/file PATH" in help_
    assert f"new conversation {chat.thread_id}" in new and chat.thread_id != chat.last.thread_id
    assert out.rstrip().endswith("bye")


def test_clear_and_bare_words_are_commands(tmp_path):
    """`clear` used to be sent to the drawing route: /clear is /new, and help, clear, exit typed
    alone are commands (a question that starts with one of them is still a question)."""
    llm = ScriptedLLM(replies=["Sea turtles can live for 50 years or more.", "photo"], labels=["search"])
    agent = make_agent(tmp_path, llm)
    chat, buffer = session(agent, "/clear", "clear", "HELP", "How long do sea turtles live?", "exit", "never read")
    assert chat.run() == 0
    out = buffer.getvalue()
    clear1, clear2, help_, turn, leave = out.split(PROMPT)[1:]
    assert clear1.count("new conversation") == 1 and clear2.count("new conversation") == 1
    assert "/file PATH" in help_ and "a question" in help_
    assert "answer (search)" in turn
    assert leave.strip() == "exit\nbye" and "never read" not in out
    asked = [c for c in llm.calls if c[0] != "score"]
    assert all("clear" not in json.dumps(c[1]).lower() for c in asked)  # the model never saw `clear`
    assert [c["turns"] for c in agent.conversations()] == [1]


def test_piped_output_is_plain_lines(tmp_path):
    """No box, no padding, no trailing spaces when stdout is not a terminal (as the README says)."""
    agent = make_agent(tmp_path, turtle_llm())
    chat, buffer = session(agent, "How long do sea turtles live?", "And what do they eat?", "/trace")
    assert chat.run() == 0
    out = buffer.getvalue()
    assert not set("╭╮╰╯│─") & set(out), out
    trailing = [ln for ln in out.splitlines() if ln != ln.rstrip()]
    assert not trailing, trailing
    assert "answer (search), run " in out and "Sources     1. Sea turtle - https://" in out
    assert re.search(r"^Understood  What do sea turtles eat\?$", out, flags=re.MULTILINE)


def test_no_image_note_once_per_session(tmp_path):
    """With no image model every turn has a labelled card: the note says so once, in one line, and
    the progress lines never say "drawing"."""
    agent = make_agent(tmp_path, turtle_llm())
    chat, buffer = session(agent, "How long do sea turtles live?", "And what do they eat?")
    assert chat.run() == 0
    out = buffer.getvalue()
    notes = [ln for ln in out.splitlines() if "No image was generated" in ln]
    assert notes == ["note: No image was generated: no --image-model is set, so a labelled card stands in"]
    assert "drawing" not in out
    assert out.count("NOT generated: a labelled card") == 2  # each turn's Image line still says so


def test_markdown_answers_and_word_wrap_on_a_terminal():
    from agent.agent import Result
    from agent.ui.progress import TurnView
    from agent.ui.render import answer_panel, facts
    from agent.ui.terminal import wrap_lines

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=60, highlight=False)
    result = Result(run_id="r1", question="q", route="answer", answer="Two kinds:\n- **green** turtles\n- leatherbacks")
    console.print(answer_panel(facts(result), 1.0))
    plain = ANSI.sub("", buffer.getvalue())
    assert "**" not in plain and "• green turtles" in plain and "• leatherbacks" in plain

    # streamed tokens (cut mid-word, as a model sends them) wrap at word boundaries
    text = ("Sea turtles are reptiles of the order Testudines and of the suborder Cryptodira; "
            "the seven existing species are found in all oceans except the Arctic.")
    buffer = io.StringIO()
    view = TurnView(Console(file=buffer, force_terminal=True, width=40), True, time.perf_counter())
    for i in range(0, len(text), 3):
        view.token(text[i:i + 3])
    view.close()
    lines = ANSI.sub("", buffer.getvalue()).replace("\r", "").strip("\n").split("\n")
    assert len(lines) > 3 and all(len(ln) <= 40 for ln in lines), lines
    assert " ".join(ln.strip() for ln in lines) == text  # no word was cut

    wrapped = wrap_lines("  1.20s  answer [llm]\n           out: " + text, 40).split("\n")
    assert all(len(ln) <= 40 for ln in wrapped) and wrapped[0] == "  1.20s  answer [llm]"
    assert " ".join(ln.strip() for ln in wrapped[1:]) == "out: " + text
    assert all(ln.startswith(" " * 13) for ln in wrapped[2:])  # under the line's own indentation


def test_new_conversation_forgets_the_topic(tmp_path):
    llm = ScriptedLLM(replies=["Sea turtles can live for 50 years or more.", "photo", "I do not know.", "photo"],
                      labels=["search", "answer"])
    agent = make_agent(tmp_path, llm)
    chat, buffer = session(agent, "How long do sea turtles live?", "/new", "And what do they eat?")
    assert chat.run() == 0
    first, second = [c["thread_id"] for c in agent.conversations()][::-1]
    assert first != second and chat.thread_id == second
    assert chat.last.standalone_question is None  # nothing earlier in the new conversation


def test_file_turn_and_missing_file(tmp_path):
    asr = FakeASR("How long do sea turtles live?")
    agent = make_agent(tmp_path, turtle_llm(), asr=asr)
    wav = REPO / "examples" / "who_painted_the_mona_lisa.wav"
    chat, buffer = session(agent, "/file", f"/file {tmp_path / 'nope.wav'}", f"/file '{wav}'")
    assert chat.run() == 0
    out = buffer.getvalue()
    assert "usage: /file PATH" in out and "no such audio file" in out
    assert "transcribing" in out and 'heard: "How long do sea turtles live?"' in out
    assert re.search(r"Heard +How long do sea turtles live\?", out)
    assert asr.calls and chat.last.transcript == "How long do sea turtles live?"


def test_voice_without_a_microphone_says_so_and_stays(tmp_path):
    agent = make_agent(tmp_path, turtle_llm())
    chat, buffer = session(agent, "/voice", "How long do sea turtles live?")
    assert chat.run() == 0
    out = buffer.getvalue()
    ok, reason = Recorder().available()
    if ok:
        pytest.skip(f"this machine has a microphone ({reason})")
    line = next(ln for ln in out.splitlines() if ln.startswith("/voice:"))
    assert "no input device" in line or "PortAudio" in line
    assert "answer (search)" in out  # the session went on


def test_voice_with_an_injected_microphone(tmp_path):
    rng = np.random.default_rng(0)
    blocks = [(0.1 * rng.standard_normal(1600)).astype(np.float32) for _ in range(10)]
    blocks += [np.zeros(1600, dtype=np.float32)] * 40
    recorder = Recorder(stream_factory=lambda **kw: BlockStream(blocks))
    asr = FakeASR("How long do sea turtles live?")
    agent = make_agent(tmp_path, turtle_llm(), asr=asr)
    read_fd, write_fd = os.pipe()  # stdin for the Enter watcher: nobody presses Enter
    with os.fdopen(read_fd) as stdin, os.fdopen(write_fd, "w"):
        chat, buffer = session(agent, "/voice", recorder=recorder, stdin=stdin)
        assert chat.run() == 0
    out = buffer.getvalue()
    assert "recording: speak now" in out and "asking with 2.5 s of recorded audio" in out
    assert chat.last.transcript == "How long do sea turtles live?"
    assert (Path(chat.last.trace_path).parent / "input.wav").exists()
    assert len(asr.calls) == 1


def test_ctrl_c_cancels_the_running_turn_and_the_session_goes_on(tmp_path):
    class SlowLLM(ScriptedLLM):
        def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None):
            self.calls.append(("chat", list(messages)))
            for _ in range(200):  # 10 s unless cancelled
                time.sleep(0.05)
                if on_token:
                    on_token("word ")
            return "word " * 200

    agent = make_agent(tmp_path, SlowLLM(labels=["answer", "answer"]))
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    chat, buffer = session(agent, "Write a poem about the sea", "/trace")
    try:
        assert chat.run() == 0
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 8
    out = buffer.getvalue()
    assert "cancelling this turn" in out and "cancelled after" in out
    assert chat.last.error == "cancelled"
    events = read_trace(Path(chat.last.trace_path).parent)
    assert events[-1].error == "cancelled"
    assert "ERROR: cancelled" in out.split(PROMPT)[2]  # /trace shows the cancelled turn
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_ctrl_c_and_ctrl_d_at_the_prompt_leave_cleanly(tmp_path):
    agent = make_agent(tmp_path, ScriptedLLM())
    for ending in (KeyboardInterrupt(), EOFError()):
        buffer = io.StringIO()
        chat = ChatSession(agent, console=Console(file=buffer, width=100), preload=False,
                           input_fn=scripted_input("/help", ending))
        assert chat.run() == 0
        assert buffer.getvalue().rstrip().endswith("bye")


def test_terminal_mode_spinner_and_panel(tmp_path):
    agent = make_agent(tmp_path, turtle_llm())
    chat, buffer = session(agent, "How long do sea turtles live?", terminal=True)
    assert chat.run() == 0
    plain = ANSI.sub("", buffer.getvalue())
    assert "decided: search" in plain and "answer (search)" in plain and "Sea turtles can live" in plain


class FakeAgent:
    """Just what the session needs from an agent, to test preloading and resuming."""

    def __init__(self, threads=(), progress=(), **result):
        self.threads = list(threads)
        self.progress = list(progress)
        self.result = {"run_id": "r1", "answer": "Fine.", "route": "answer", **result}
        self.settings = Settings()
        self.preloads = 0

    def conversations(self):
        return self.threads

    def new_thread_id(self):
        return "new-thread"

    def claim_thread(self, thread_id):
        self.claimed = thread_id

    def release_thread(self, thread_id):
        self.claimed = None

    def preload(self):
        self.preloads += 1
        time.sleep(0.2)
        return {"llm": 1234.0, "wikipedia": 56.0}

    def stream(self, text=None, audio=None, *, progress=False, thread_id=None, cancel=None, **kw):
        from agent.agent import Result, StepEvent

        yield StepEvent(kind="progress", progress={"type": "status", "step": "decide", "text": "decided: answer",
                                                   "reason": "because"})
        for item in self.progress:
            yield StepEvent(kind="progress", progress=item)
        yield StepEvent(kind="result", result=Result(question=text or "", thread_id=thread_id, **self.result))


def test_models_preload_once_and_the_first_turn_shows_it():
    agent = FakeAgent()
    chat, buffer = session(agent, "hello", "again", preload=True)
    assert chat.run() == 0
    out = buffer.getvalue()
    assert agent.preloads == 1
    assert out.count("models loaded (llm 1.2s, wikipedia 0.1s)") == 1
    assert out.count("Fine.") == 2


def test_image_steps_and_errors_in_plain_output():
    steps = [{"type": "image_step", "step": "generate_image", "done": i, "total": 40,
              "text": f"drawing, step {i}/40"} for i in range(1, 41)]
    agent = FakeAgent(progress=[{"type": "status", "step": "generate_image", "text": "drawing"}, *steps],
                      image_path=__file__, image_generated=True, image_model="tiny-sd")
    agent.settings = Settings(image_model="tiny-sd")
    chat, buffer = session(agent, "draw a cat")
    chat.run()
    out = buffer.getvalue()
    shown = re.findall(r"drawing, step (\d+)/40", out)
    assert shown[-1] == "40" and 8 <= len(shown) <= 11  # about every 10%, not 40 lines
    assert "generated with tiny-sd" in out and "NOT generated" not in out

    # no image model: the labelled card is not "drawing"
    agent = FakeAgent(progress=[{"type": "status", "step": "generate_image", "text": "drawing"}],
                      image_path=__file__, image_generated=False, no_image_kind="no_model",
                      no_image_reason="No image model is configured, so no picture was drawn.")
    chat, buffer = session(agent, "draw a cat")
    chat.run()
    out = buffer.getvalue()
    assert "drawing" not in out and "NOT generated: a labelled card" in out

    agent = FakeAgent(answer=None, route=None, error="no speech recognised in the audio",
                      notices=["the question was long"], trace_path="/nowhere/trace.jsonl")
    chat, buffer = session(agent, "hello")
    chat.run()
    out = buffer.getvalue()
    assert "error: no speech recognised in the audio" in out and "note: the question was long" in out
    assert "answer (" not in out


THREADS = [
    {"thread_id": "20260101-120000-aaaaaa", "updated_at": 1767268800.0, "turns": 3,
     "first_question": "How long do sea turtles live?", "last_question": "And what do they eat?"},
    {"thread_id": "20251231-090000-bbbbbb", "updated_at": 1767171600.0, "turns": 1,
     "first_question": "Who painted the Mona Lisa?", "last_question": "Who painted the Mona Lisa?"},
]


def test_resume_picks_the_latest_an_id_or_a_unique_prefix():
    agent = FakeAgent(THREADS)
    assert resolve_resume(agent, None)["thread_id"] == THREADS[0]["thread_id"]
    assert resolve_resume(agent, "20251231-090000-bbbbbb") is THREADS[1]
    assert resolve_resume(agent, "20251231") is THREADS[1]
    for wanted, message in (("nope", "no conversation 'nope'"), ("20", "matches 2 conversations")):
        with pytest.raises(ChatError, match=message) as info:
            resolve_resume(agent, wanted)
        assert info.value.code == 2
    with pytest.raises(ChatError, match="no conversations to resume yet"):
        resolve_resume(FakeAgent(), None)


def test_resumed_session_banner_and_thread():
    agent = FakeAgent(THREADS)
    buffer = io.StringIO()
    code = run_chat(agent, resume=True, thread_id="20251231", console=Console(file=buffer, width=120),
                    input_fn=scripted_input("hi"), preload=False, echo=False)
    assert code == 0
    out = buffer.getvalue()
    assert 'resumed conversation 20251231-090000-bbbbbb (1 turn; last: "Who painted the Mona Lisa?")' in out


def test_resume_from_another_folder_shows_the_turns_and_trace(tmp_path, monkeypatch):
    """Runs and conversations live in $ASKDRAW_HOME whatever the working directory: a conversation
    had in one folder is resumed in another, its opening lines list the turns, and /trace and
    /image show its last turn."""
    home, here, there = tmp_path / "home", tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    monkeypatch.setenv("ASKDRAW_HOME", str(home))
    monkeypatch.delenv("ASKDRAW_OUT_DIR", raising=False)
    monkeypatch.delenv("ASKDRAW_MEMORY_PATH", raising=False)

    def agent_here(llm) -> Agent:
        settings = Settings()  # the defaults: runs and conversations under $ASKDRAW_HOME
        return Agent(settings, tools=Toolbox(settings, llm=llm, wiki=FakeWiki([TURTLE]), asr=FakeASR(),
                                             image=ImageGenerator(None)))

    monkeypatch.chdir(here)
    first = agent_here(turtle_llm())
    chat, _ = session(first, "How long do sea turtles live?", "And what do they eat?")
    assert chat.run() == 0
    last = chat.last
    assert Path(last.trace_path).parent == home / "runs" / last.run_id

    monkeypatch.chdir(there)
    buffer = io.StringIO()
    opened: list[str] = []
    code = run_chat(agent_here(ScriptedLLM()), resume=True, console=Console(file=buffer, width=120),
                    input_fn=scripted_input("/trace", "/image", write=buffer.write), preload=False, echo=True,
                    opener=lambda path: opened.append(path) or False)
    assert code == 0
    banner, trace, image = buffer.getvalue().split(PROMPT)[:3]
    assert f"resumed conversation {last.thread_id} (2 turns" in banner
    assert re.search(r"1\. How long do sea turtles live\? -> search: .*50 years", banner), banner
    assert re.search(r"2\. What do sea turtles eat\? -> search: .*[Ss]eagrass", banner), banner  # as understood
    assert f"/trace and /image show the last turn (run {last.run_id})" in banner
    assert f"run {last.run_id}" in trace and "decision: search" in trace and "standalone" in trace
    assert opened == [last.image_path] and f"the image is at {last.image_path}" in image
    assert not (here / "runs").exists() and not (there / "runs").exists()

    proc = askdraw(there, "history", env_set={"ASKDRAW_HOME": str(home)},
                   env_unset=("ASKDRAW_OUT_DIR", "ASKDRAW_MEMORY_PATH"))
    assert proc.returncode == 0 and last.thread_id in proc.stdout, proc.stderr
    assert "How long do sea turtles live?" in proc.stdout


def test_history_lines():
    assert history_lines(FakeAgent()) == ["no conversations yet"]
    lines = history_lines(FakeAgent(THREADS))
    assert lines[0].split() == ["id", "updated", "turns", "first", "question"]
    assert lines[1].startswith("20260101-120000-aaaaaa") and "How long do sea turtles live?" in lines[1]
    assert re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d +3 ", lines[1])


# -- the command line (subprocess) ----------------------------------------------------------------
def _command() -> list[str]:
    exe = Path(sys.executable).with_name("askdraw")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "agent.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)  # ASKDRAW_HOME unchanged: the converted starter weights are reused
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["ASKDRAW_MEMORY_PATH"] = str(tmp_path / "memory.sqlite")  # this test's conversations only
    env["HF_HUB_OFFLINE"] = "1"
    env["ASKDRAW_OUT_DIR"] = str(tmp_path / "runs")  # never the user's $ASKDRAW_HOME/runs
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):  # never open a real viewer
        env.pop(name, None)
    return env


def askdraw(tmp_path: Path, *args: str, stdin: str | None = None, env_set: dict[str, str] | None = None,
            env_unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = _env(tmp_path)
    for name in env_unset:
        env.pop(name, None)
    env.update(env_set or {})
    return subprocess.run([*_command(), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_cli_history_empty_and_resume_errors(tmp_path):
    proc = askdraw(tmp_path, "history")
    assert proc.returncode == 0 and proc.stdout.strip() == "no conversations yet", proc.stderr
    for args, fragment in ((["chat", "--resume"], "no conversations to resume yet"),
                           (["chat", "--resume", "nope"], "no conversations to resume yet"),
                           (["chat", "some-id"], "askdraw chat --resume some-id"),
                           (["chat", "--image-size", "100"], "multiple of 8")):
        proc = askdraw(tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("askdraw: error:") and fragment in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_cli_chat_with_piped_input_is_plain_text(tmp_path):
    proc = askdraw(tmp_path, "chat", "--out", str(tmp_path / "runs"), stdin="/help\n/voice\n/trace\n")
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stdout) and "Traceback" not in proc.stderr
    assert "askdraw chat" in proc.stdout and "/file PATH" in proc.stdout
    assert "no turn yet" in proc.stdout and proc.stdout.rstrip().endswith("bye")
    assert f"{PROMPT}/voice" in proc.stdout  # piped input is echoed after the prompt
    assert not [ln for ln in proc.stdout.splitlines() if ln != ln.rstrip()]  # plain lines: no trailing spaces


# -- slow: a real session with the starter models, through a pseudo-terminal --------------------------
def _run_names(runs: Path) -> set[str]:
    return {d.name for d in runs.iterdir() if d.is_dir()} if runs.exists() else set()


@pytest.mark.slow
def test_real_chat_session_in_a_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    runs = tmp_path / "runs"
    command = _command()
    child = pexpect.spawn(command[0], [*command[1:], "chat", "--out", str(runs)], env=_env(tmp_path),
                          cwd=str(tmp_path), encoding="utf-8", timeout=180, dimensions=(50, 200))
    transcript = io.StringIO()
    child.logfile_read = transcript
    prompt = re.escape(PROMPT)
    last_runs: list[Path] = []

    def turn(line: str, *expected: str) -> str:
        """Send a line, wait for each expected pattern in order and the next prompt; return the
        output (escape codes removed). ``last_runs`` gets the run folders the line created."""
        before = _run_names(runs)
        start = len(transcript.getvalue())
        child.sendline(line)
        for pattern in expected:
            child.expect(pattern)
        child.expect(prompt)
        last_runs[:] = [runs / name for name in sorted(_run_names(runs) - before)]
        return ANSI.sub("", transcript.getvalue()[start:])

    try:
        child.expect("askdraw chat", timeout=60)
        child.expect(rf"new conversation {CODES}(\d{{8}}-\d{{6}}-\w+)", timeout=10)
        thread = child.match.group(1)
        child.expect(prompt)

        out = turn("Who painted the Mona Lisa?", "loading models", "decided: search", r"answer \(search\)",
                   "NOT generated: a labelled card")
        assert "Leonardo da Vinci" in out and "image.png" in out and "Mona Lisa - https://" in out
        assert re.search(r"Time +\d+\.\ds total", out)

        wav = REPO / "examples" / "who_painted_the_mona_lisa.wav"
        out = turn(f"/file {wav}", "transcribing", "heard:", r"answer \(search\)")
        assert "loading models" not in out and "Mona Lisa" in out

        # follow-ups keep their question word and what they ask (issue 17's two reproductions)
        out = turn("When was it painted?", r"answer \(")
        assert re.search(r"Understood +When was the Mona Lisa painted\?", out), out
        turn("Who was Marie Curie?", r"answer \(")
        out = turn("What did she discover?", r"answer \(")
        assert re.search(r"Understood +What did Marie Curie discover\?", out), out

        turn("How long do sea turtles live?", r"answer \(")
        out = turn("And what do they eat?", r"answer \(")
        assert len(last_runs) == 1
        result = json.loads((last_runs[0] / "result.json").read_text())
        assert result["question"] == "And what do they eat?"
        assert "turtle" in (result["standalone_question"] or "").lower(), result
        assert "Understood" in out

        out = turn("/trace", "decide", "decision:")
        assert "standalone" in out

        out = turn("/image", "image is at")
        assert "labelled card" in out

        # Ctrl-C during a turn: the turn stops, the session goes on, the trace is still written
        before = _run_names(runs)
        child.sendline("Tell me about the history of the Roman Empire")
        child.expect("decided:")
        child.sendintr()
        child.expect("cancelled after")
        child.expect(prompt)
        (cancelled,) = [runs / name for name in _run_names(runs) - before]
        assert (cancelled / "trace.jsonl").exists()
        assert json.loads((cancelled / "result.json").read_text())["error"] == "cancelled"

        out = turn("/voice")
        assert "no input device" in out or "PortAudio" in out
        assert len([ln for ln in out.splitlines() if "/voice:" in ln]) == 1

        # /clear and a bare `clear` start a new conversation (never a question to draw)
        for line in ("/clear", "clear"):
            out = turn(line, "new conversation")
            assert "decided:" not in out

        child.sendline("quit")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, transcript.getvalue()[-2000:]
    assert "Traceback" not in transcript.getvalue()

    # models loaded once per session: no model load is recorded twice across the session's runs
    loads = [key for run in runs.iterdir() if (run / "trace.jsonl").exists()
             for event in read_trace(run) for key in event.data if key.startswith("load_")]
    assert len(loads) == len(set(loads)), loads

    # `askdraw history` lists the conversation; `chat --resume` resumes it
    proc = askdraw(tmp_path, "history")
    assert proc.returncode == 0 and thread in proc.stdout and "Who painted the Mona Lisa?" in proc.stdout
    assert re.search(rf"{thread}\s+\S+ \S+\s+7\s", proc.stdout), proc.stdout  # 7 answered turns: the cancelled one is not remembered
    proc = askdraw(tmp_path, "chat", "--resume", "nope")
    assert proc.returncode == 2 and "no conversation 'nope'" in proc.stderr

    elsewhere = tmp_path / "elsewhere"  # resumed from another folder: its runs are found all the same
    elsewhere.mkdir()
    child = pexpect.spawn(command[0], [*command[1:], "chat", "--resume"], env=_env(tmp_path),
                          cwd=str(elsewhere), encoding="utf-8", timeout=60, dimensions=(50, 200))
    try:
        child.expect(rf"resumed conversation {CODES}{thread}", timeout=60)
        child.expect("And what do they eat|What do sea turtles eat")  # the opening lines list the turns
        child.expect(prompt)
        child.sendline("/trace")  # the resumed conversation's last turn
        child.expect("decision:")
        child.expect(prompt)
        child.sendintr()  # Ctrl-C at the prompt leaves (while the models load in the background)
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
