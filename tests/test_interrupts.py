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
    from tools.asr import load_audio

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
        time.sleep(0.5)
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
    assert child.exitstatus == 130, output
    assert "askdraw: interrupted; quitting without waiting" in output and "Traceback" not in output


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
    assert waited < 3.0, f"the chat lived {waited:.1f} s after 'exit'"
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
