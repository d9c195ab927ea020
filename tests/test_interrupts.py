"""Ctrl-C during a long step (issue 14, point 6), through real processes and the real starter
Whisper: the first Ctrl-C cancels the run, a second one quits at once, as the message promises,
instead of waiting for the running transcription to end."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_chat import _command, _env

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/raw/speech"
SR = 16_000


@pytest.fixture(scope="module")
def long_speech(tmp_path_factory) -> Path:
    """About five minutes of real speech (the shared clips, three times over): about a minute of
    transcription on two cores."""
    clips = sorted(SPEECH.glob("*/*.ogg")) + sorted(SPEECH.glob("*/*.flac"))
    if not clips:
        pytest.skip(f"no speech clips at {SPEECH}")
    from tools.audio import load_audio

    audio = np.concatenate([load_audio(p) for p in clips] * 3)
    path = tmp_path_factory.mktemp("long") / "five_minutes.wav"
    sf.write(path, audio, SR)
    return path


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_during_a_long_transcription(tmp_path, long_speech):
    pexpect = pytest.importorskip("pexpect")
    command = _command()
    child = pexpect.spawn(command[0], [*command[1:], "ask", "--audio", str(long_speech), "--out",
                                       str(tmp_path / "runs"), "--no-image"],
                          env=_env(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=90, dimensions=(40, 200))
    try:
        child.expect("transcribing")  # the spinner's line: the ASR is loaded and the long step runs
        child.sendintr()
        child.expect("cancelling \\(Ctrl-C again to quit at once\\)")
        time.sleep(0.2)
        assert child.isalive(), "the first Ctrl-C cancels; it does not quit"
        child.sendintr()
        start = time.monotonic()
        child.expect(pexpect.EOF, timeout=60)
        waited = time.monotonic() - start
        output = child.before
        child.close()
    finally:
        child.close(force=True)
    assert waited < 3.0, f"the process lived {waited:.1f} s after the second Ctrl-C"
    assert child.exitstatus == 130, output  # never killed by the signal, whichever Ctrl-C ended it
    # The second Ctrl-C quit at once, or (when the transcription's window ended just then) the
    # first one had already cancelled the run, which then left at once.
    assert ("askdraw: interrupted; quitting without waiting" in output
            or "error: cancelled; the run's trace is in" in output), output
    assert "Traceback" not in output


@pytest.mark.slow
def test_the_chat_leaves_at_once_after_a_turn_it_stopped_waiting_for(tmp_path, long_speech):
    pexpect = pytest.importorskip("pexpect")
    command = _command()
    child = pexpect.spawn(command[0], [*command[1:], "chat", "--no-image", "--out", str(tmp_path / "runs")],
                          env=_env(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=90, dimensions=(40, 200))
    try:
        child.expect("ask> ")
        child.sendline(f"/file {long_speech}")
        child.expect("transcribing")  # the ASR is loaded and the long step runs
        child.sendintr()
        child.expect("Ctrl-C again to stop waiting")
        child.sendintr()
        child.expect("stopped waiting")
        child.expect("ask> ")
        child.sendline("exit")
        start = time.monotonic()
        child.expect(pexpect.EOF, timeout=30)
        waited = time.monotonic() - start
        child.close()
    finally:
        child.close(force=True)
    # The abandoned transcription has about a minute left; leaving at once means well under that.
    # (Python and torch take ~1 s to exit on an idle machine, 4 s was seen on a loaded one.)
    assert waited < 10.0, f"the chat lived {waited:.1f} s after 'exit'"
    assert child.exitstatus == 0


@pytest.mark.slow
def test_one_ctrl_c_stops_a_long_transcription_between_windows(tmp_path, long_speech):
    """The first Ctrl-C does not wait for the whole recording to be transcribed: the transcription
    stops after the batch of 30 s windows that is running, and the trace says it was cancelled."""
    pexpect = pytest.importorskip("pexpect")
    import json

    command = _command()
    runs = tmp_path / "runs"
    child = pexpect.spawn(command[0], [*command[1:], "ask", "--audio", str(long_speech), "--out", str(runs),
                                       "--no-image"],
                          env=_env(tmp_path), cwd=str(tmp_path), encoding="utf-8", timeout=120, dimensions=(40, 200))
    try:
        child.expect("transcribing")
        child.sendintr()
        child.expect(pexpect.EOF)
        output = child.before
        child.close()
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, output
    assert "cancelled; the run's trace is in" in output
    (trace,) = runs.glob("*/trace.jsonl")
    events = [json.loads(line) for line in trace.read_text("utf-8").splitlines()]
    assert [e["step"] for e in events] == ["transcribe"], events  # nothing after it ran
    assert events[0]["error"] == "cancelled" and not events[0]["output"]  # stopped mid-way, not finished


# -- which thread gets Ctrl-C (fast) ---------------------------------------------------------------
def _blocked() -> set:
    import signal

    return set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_the_agents_and_the_chats_threads_leave_ctrl_c_to_the_main_thread(tmp_path):
    """The kernel may hand SIGINT to any thread that does not block it; Python runs the handler
    only when the main thread runs, and a chat waiting in input() (readline's select) would not
    notice a Ctrl-C taken by a model thread until the next key press. So every thread askdraw
    starts blocks SIGINT, SIGTERM, SIGHUP (and the prompt's SIGALRM)."""
    import signal
    import threading

    from agent.agent import Agent
    from agent.ui.chat import ChatSession
    from agent.context import Toolbox
    from agent.settings import Settings
    from tests.fakes import ScriptedLLM
    from tools.diffusion import ImageGenerator

    seen: dict[str, set] = {}

    class RecordingLLM(ScriptedLLM):
        def chat(self, *args, **kwargs):
            seen["model"] = _blocked()
            return super().chat(*args, **kwargs)

    settings = Settings(out_dir=tmp_path / "runs", memory_path=tmp_path / "m.sqlite", route="answer", image=False)
    agent = Agent(settings, tools=Toolbox(settings, llm=RecordingLLM(replies=["Fine."]), image=ImageGenerator(None)))
    agent.preload = lambda: seen.setdefault("preload", _blocked()) and {}  # type: ignore[method-assign]
    lines = iter(["How are you?"])

    def next_line(prompt: str) -> str:
        seen.setdefault("main", _blocked())
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    session = ChatSession(agent, input_fn=next_line, echo=False)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (session.run(), done.set()))  # run() needs no main thread
    worker.start()
    worker.join(60)
    assert done.is_set()
    wanted = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM}
    assert wanted <= seen["model"], seen  # the graph's worker (and threads it starts)
    assert wanted <= seen["preload"], seen  # the chat's model preloading
    assert signal.SIGINT not in _blocked()  # the caller's own thread is left as it was


@pytest.mark.slow
def test_ctrl_c_right_at_the_prompt_always_leaves(tmp_path):
    """Ctrl-C sent the moment the prompt appears (while models load in the background): before
    the prompt's wake-up, readline sometimes had not started waiting yet, took the signal as
    noted and then waited for a key, so the chat hung (about 1 in 8 here, and once in CI)."""
    pexpect = pytest.importorskip("pexpect")
    import subprocess

    command = _command()
    env = _env(tmp_path)
    subprocess.run([*command, "chat", "--no-image", "--route", "answer", "--out", str(tmp_path / "runs")],
                   input="Say hello\n", text=True, env=env, cwd=tmp_path, capture_output=True, timeout=180, check=True)
    for attempt in range(8):
        child = pexpect.spawn(command[0], [*command[1:], "chat", "--resume", "--out", str(tmp_path / "runs")],
                              env=env, cwd=str(tmp_path), encoding="utf-8", timeout=60, dimensions=(50, 200))
        try:
            child.expect("resumed conversation")
            child.expect("ask> ")
            child.sendintr()
            child.expect("bye", timeout=15)  # a hang here is the race
            child.expect(pexpect.EOF)
            child.close()
        finally:
            child.close(force=True)
        assert child.exitstatus == 0, f"attempt {attempt}"
