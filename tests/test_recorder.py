"""The microphone recorder, fed audio blocks through an injected stream (no device needed)."""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np
import pytest

from agent.ui.voice import SAMPLE_RATE, BlockStream, Recorder, RecorderUnavailable, stop_on_enter

BLOCK = SAMPLE_RATE // 10  # the recorder reads 0.1 s blocks


def speech(seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Speech-like blocks: noise at about -20 dBFS, amplitude-modulated like syllables."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 10))
    t = np.arange(BLOCK) / SAMPLE_RATE
    return [(0.1 * rng.standard_normal(BLOCK) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * (t + i / 10))))
            .astype(np.float32) for i in range(n)]


def silence(seconds: float, level: float = 0.001, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(level * rng.standard_normal(BLOCK)).astype(np.float32) for _ in range(int(round(seconds * 10)))]


def factory(blocks, opened: list | None = None, samplerate: int = SAMPLE_RATE):
    """A stream factory as Recorder calls it (samplerate=, blocksize=), serving ``blocks``."""

    def make(**kwargs):
        stream = BlockStream(blocks, samplerate=samplerate)
        if opened is not None:
            opened.append((kwargs, stream))
        return stream

    return make


def test_stops_after_silence_following_speech():
    opened: list = []
    blocks = silence(0.5) + speech(2.0) + silence(5.0)
    audio = Recorder(stream_factory=factory(blocks, opened)).record(silence_seconds=1.5)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # 0.5 s lead-in + 2 s speech + 1.5 s of silence, then it stops (the rest is never read)
    assert len(audio) == int(4.0 * SAMPLE_RATE)
    assert opened[0][0]["blocksize"] == BLOCK
    assert opened[0][1].closed  # the stream is closed when recording ends


def test_silence_before_speech_does_not_stop_it():
    audio = Recorder(stream_factory=factory(silence(3.0) + speech(1.0) + silence(2.0))).record(silence_seconds=1.0)
    assert len(audio) == int(5.0 * SAMPLE_RATE)


def test_stereo_blocks_are_mixed_to_mono():
    blocks = [np.stack([b, b], axis=1) for b in speech(1.0) + silence(1.0)]
    audio = Recorder(stream_factory=factory(blocks)).record(silence_seconds=0.5)
    assert audio.ndim == 1 and len(audio) == int(1.5 * SAMPLE_RATE)


def test_loud_background_noise_raises_the_threshold():
    # a steady hum louder than the fixed threshold is not speech; speech well above it is
    hum = silence(1.0, level=0.02)
    audio = Recorder(stream_factory=factory(hum + [b * 3 for b in speech(1.0)] + silence(2.0, level=0.02))).record(
        silence_seconds=1.0)
    assert len(audio) == int(3.0 * SAMPLE_RATE)


def test_stop_event_stops_it():
    stop = threading.Event()
    seen: list[float] = []

    def on_block(seconds: float, level: float, started: bool) -> None:
        seen.append(seconds)
        if seconds >= 1.0:
            stop.set()  # as the chat's Enter-watching thread does

    endless = (speech(0.1, seed=i)[0] for i in itertools.count())
    audio = Recorder(stream_factory=factory(endless)).record(stop, on_block=on_block)
    assert len(audio) == SAMPLE_RATE
    assert seen[-1] == pytest.approx(1.0)


def test_stop_event_already_set_records_nothing():
    stop = threading.Event()
    stop.set()
    audio = Recorder(stream_factory=factory(speech(1.0))).record(stop)
    assert audio.dtype == np.float32 and len(audio) == 0


def test_max_seconds():
    endless = (speech(0.1, seed=i)[0] for i in itertools.count())
    audio = Recorder(stream_factory=factory(endless)).record(max_seconds=2.25, silence_seconds=1.0)
    assert len(audio) == int(2.25 * SAMPLE_RATE)  # cut to the limit mid-block


def test_stream_end_returns_what_was_read():
    audio = Recorder(stream_factory=factory(speech(0.7))).record()
    assert len(audio) == int(0.7 * SAMPLE_RATE)


def test_other_device_rates_are_resampled_to_16k():
    # a 48 kHz stream: blocks of 4800 frames
    rng = np.random.default_rng(0)
    blocks = [(0.1 * rng.standard_normal(4800)).astype(np.float32) for _ in range(10)]
    blocks += [np.zeros(4800, dtype=np.float32)] * 20
    audio = Recorder(stream_factory=factory(blocks, samplerate=48_000)).record(silence_seconds=1.0)
    assert len(audio) == pytest.approx(2.0 * SAMPLE_RATE, abs=2)


def test_injected_stream_is_available():
    assert Recorder(stream_factory=factory([])).available() == (True, "injected stream")


def test_available_reports_why_not():
    ok, reason = Recorder().available()
    assert isinstance(ok, bool) and reason and "\n" not in reason
    if ok:
        pytest.skip(f"this machine has an input device ({reason})")
    assert "PortAudio" in reason or "no input device" in reason
    try:
        import sounddevice  # noqa: F401
    except OSError:  # the case here: the package is installed, the PortAudio library is not
        assert "PortAudio" in reason
    with pytest.raises(RecorderUnavailable):
        Recorder().record(max_seconds=0.1)


def test_stop_on_enter_sets_the_event_and_leaves_later_lines_alone():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stdin, os.fdopen(write_fd, "w") as feed:
        stop, done = threading.Event(), threading.Event()
        thread = stop_on_enter(stop, done, stdin)
        feed.write("\n")
        feed.flush()
        assert stop.wait(2)
        thread.join(2)
        # once the recording is over the watcher is gone: the next line is the next question's
        stop2, done2 = threading.Event(), threading.Event()
        thread2 = stop_on_enter(stop2, done2, stdin)
        done2.set()
        thread2.join(2)
        assert not thread2.is_alive()
        feed.write("next question\n")
        feed.flush()
        assert stdin.readline() == "next question\n"
        assert not stop2.is_set()
