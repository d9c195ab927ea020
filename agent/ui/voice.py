"""Asking by voice in ``askdraw chat`` (``/voice``): :func:`record_question` records until Enter,
silence, or a time limit, with a level meter, and says why when there is nothing to ask.

:class:`Recorder` reads fixed-size blocks from an input stream and returns 16 kHz mono float32
samples. The stream comes from ``sounddevice`` (PortAudio) by default, or from any
``stream_factory`` (tests feed audio blocks that way, with no device).

A stream is anything with ``read(frames) -> (array, overflowed)`` that is also a context manager
(``sounddevice.InputStream`` is one); an empty array means the stream has ended. It may have a
``samplerate`` attribute: when it differs from 16 kHz the recording is resampled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000

StreamFactory = Callable[..., Any]


class RecorderUnavailable(RuntimeError):
    """No microphone can be opened here (no PortAudio, or no input device); the message says which."""


class BlockStream:
    """A stream over given audio blocks (1-D or (n, channels) arrays), for tests and replays."""

    def __init__(self, blocks: Iterable[np.ndarray], samplerate: int = SAMPLE_RATE) -> None:
        self._blocks = iter(blocks)
        self.samplerate = samplerate
        self.closed = False

    def __enter__(self) -> BlockStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed = True

    def read(self, frames: int) -> tuple[np.ndarray, bool]:
        block = next(self._blocks, None)
        if block is None:
            return np.zeros((0, 1), dtype=np.float32), False
        return np.asarray(block, dtype=np.float32), False


def _sounddevice() -> Any:
    """Import sounddevice, turning 'PortAudio library not found' into :class:`RecorderUnavailable`."""
    try:
        import sounddevice
    except OSError as exc:  # the Python package is there, the PortAudio shared library is not
        raise RecorderUnavailable(
            "no input device: PortAudio is not installed (install it, e.g. `apt install libportaudio2`)"
        ) from exc
    except ImportError as exc:
        raise RecorderUnavailable("no input device: the sounddevice package is not installed") from exc
    return sounddevice


def _default_input(sd: Any) -> dict[str, Any]:
    """The default input device's info, or :class:`RecorderUnavailable` when there is none."""
    try:
        info = sd.query_devices(kind="input")
    except Exception as exc:  # PortAudioError or ValueError: no default input device
        detail = " ".join(str(exc).split())
        raise RecorderUnavailable(f"no input device found (PortAudio: {detail or 'no default input'})") from exc
    if not info or int(info.get("max_input_channels", 0)) < 1:
        raise RecorderUnavailable("no input device found (PortAudio lists no microphone)")
    return info


def sounddevice_stream(*, samplerate: int, blocksize: int, device: Any = None) -> Any:
    """A mono float32 ``sounddevice.InputStream``; at the device's own rate when it refuses 16 kHz."""
    sd = _sounddevice()
    info = _default_input(sd) if device is None else sd.query_devices(device, kind="input")
    try:
        sd.check_input_settings(device=device, channels=1, dtype="float32", samplerate=samplerate)
        rate = samplerate
    except Exception:  # e.g. a device that only runs at 44.1/48 kHz: record at its rate, resample after
        rate = int(info.get("default_samplerate") or 48_000)
        blocksize = int(round(blocksize * rate / samplerate))
    return sd.InputStream(samplerate=rate, blocksize=blocksize, device=device, channels=1, dtype="float32")


def rms(block: np.ndarray) -> float:
    if block.size == 0:
        return 0.0
    x = block.astype(np.float64, copy=False)
    return float(np.sqrt(np.mean(x * x)))


class Recorder:
    """Record one utterance from the microphone (or an injected stream).

    >>> audio = Recorder().record(stop_event)      # 16 kHz mono float32, stops on Enter or silence
    """

    def __init__(self, *, stream_factory: StreamFactory | None = None, device: Any = None,
                 block_seconds: float = 0.1, threshold: float = 0.01) -> None:
        """``threshold``: block RMS (full scale 1.0) above which a block may count as speech; the
        effective threshold rises with the background noise (see ``_speech_and_trailing_quiet``)."""
        self.stream_factory = stream_factory
        self.device = device
        self.block_seconds = block_seconds
        self.threshold = threshold

    # -- availability -----------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """``(True, device name)`` when a microphone can be opened, else ``(False, one-line reason)``."""
        if self.stream_factory is not None:
            return True, "injected stream"
        try:
            sd = _sounddevice()
            info = _default_input(sd) if self.device is None else sd.query_devices(self.device, kind="input")
        except RecorderUnavailable as exc:
            return False, str(exc)
        except Exception as exc:  # a device given by name or index that does not exist
            return False, f"no input device: {' '.join(str(exc).split())}"
        return True, str(info.get("name", "default input"))

    # -- recording --------------------------------------------------------------------------
    def _speech_and_trailing_quiet(self, chunks: list[np.ndarray], levels: list[float]) -> tuple[bool, int]:
        """Whether speech was heard, and how many frames of quiet end the recording so far.

        A block is loud when its RMS is above ``threshold`` and 4x (12 dB) above the quietest block
        so far (the room's noise floor). Judging from the whole recording means a steady hum is
        not speech, and speech that starts at once is recognised when the first pause comes.
        """
        cutoff = max(self.threshold, 4.0 * min(levels))
        if max(levels) <= cutoff:
            return False, 0
        quiet = 0
        for block, level in zip(reversed(chunks), reversed(levels)):
            if level > cutoff:
                break
            quiet += block.size
        return True, quiet

    def _open(self, blocksize: int) -> Any:
        if self.stream_factory is not None:
            return self.stream_factory(samplerate=SAMPLE_RATE, blocksize=blocksize)
        return sounddevice_stream(samplerate=SAMPLE_RATE, blocksize=blocksize, device=self.device)

    def record(self, stop: threading.Event | None = None, *, max_seconds: float = 30.0,
               silence_seconds: float = 1.5,
               on_block: Callable[[float, float, bool], None] | None = None) -> np.ndarray:
        """Record until ``stop`` is set, ``silence_seconds`` of quiet follow speech, ``max_seconds``
        have been recorded, or the stream ends. Returns 16 kHz mono float32 samples (everything
        recorded, trailing silence included; at most ``max_seconds`` long).

        ``on_block(seconds_so_far, block_rms, speech_started)`` is called after every block (for a
        level meter). Raises :class:`RecorderUnavailable` when no microphone can be opened.
        """
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        blocksize = max(1, int(round(SAMPLE_RATE * self.block_seconds)))
        chunks: list[np.ndarray] = []
        levels: list[float] = []  # RMS of each block, parallel to chunks
        frames = 0
        try:
            stream = self._open(blocksize)
        except RecorderUnavailable:
            raise
        except Exception as exc:  # PortAudioError opening the device
            raise RecorderUnavailable(f"could not open the microphone: {' '.join(str(exc).split())}") from exc
        rate = int(getattr(stream, "samplerate", SAMPLE_RATE) or SAMPLE_RATE)
        limit = int(round(max_seconds * rate))
        quiet_limit = int(round(silence_seconds * rate))
        with stream:
            while frames < limit and not (stop is not None and stop.is_set()):
                data, _overflowed = stream.read(int(round(blocksize * rate / SAMPLE_RATE)))
                block = np.asarray(data, dtype=np.float32)
                if block.ndim == 2:
                    block = block.mean(axis=1)
                block = block.reshape(-1)
                if block.size == 0:
                    break  # the stream ended
                block = block[: limit - frames]
                chunks.append(block)
                frames += block.size
                level = rms(block)
                levels.append(level)
                speech, quiet = self._speech_and_trailing_quiet(chunks, levels)
                if on_block is not None:
                    on_block(frames / rate, level, speech)
                if speech and silence_seconds > 0 and quiet >= quiet_limit:
                    break
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        if rate != SAMPLE_RATE and audio.size:
            import soxr

            audio = soxr.resample(audio, rate, SAMPLE_RATE)
        return np.ascontiguousarray(audio, dtype=np.float32)


def stop_on_enter(stop: threading.Event, done: threading.Event, stdin: Any = None) -> threading.Thread:
    """Start a thread that sets ``stop`` when a line is entered on ``stdin``. It polls with
    ``select`` and exits once ``done`` is set, so it never swallows a line typed after the
    recording (where ``select`` cannot poll stdin, e.g. Windows, it falls back to a plain read)."""
    import os
    import sys

    stream = stdin if stdin is not None else sys.stdin

    def watch() -> None:
        from tools.common import signals_to_main_thread

        signals_to_main_thread()
        try:
            import select

            fd = stream.fileno()
            while not done.is_set() and not stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.05)
                if ready:
                    # A terminal hands over one line per read; os.read leaves no half-read
                    # buffer behind for the next input() (readline reads the fd directly).
                    os.read(fd, 4096) if stream.isatty() else stream.readline()
                    stop.set()
                    return
        except (OSError, ValueError, AttributeError, TypeError):
            try:
                if not done.is_set():
                    stream.readline()
                    stop.set()
            except (OSError, ValueError):  # no readable stdin at all: only silence or the limit stop it
                pass

    thread = threading.Thread(target=watch, name="askdraw-enter", daemon=True)
    thread.start()
    return thread


# -- the recording in the chat ----------------------------------------------------------------------
RECORDING = "recording: speak now, then press Enter (it also stops after 1.5 s of silence, or at 30 s)"
Say = Callable[..., None]  # ChatSession.say: (text, style)


def _meter(status: Any, heard: dict[str, Any]) -> Callable[[float, float, bool], None]:
    """``Recorder.record``'s ``on_block``: notes whether speech was heard, and shows a level meter
    in ``status`` (a Rich status, or None off a terminal) 5 times a second."""
    last_shown = [0.0]

    def on_block(seconds: float, level: float, speech: bool) -> None:
        heard["speech"], heard["seconds"] = speech, seconds
        if status is not None and seconds - last_shown[0] >= 0.2:
            last_shown[0] = seconds
            bar = "#" * min(20, int(level * 100))
            status.update(f"recording {seconds:4.1f} s  {bar}")

    return on_block


def record_question(recorder: Recorder, say: Say, ctrl_c: Any, *, console: Any, live: bool,
                    stdin: Any = None) -> np.ndarray | None:
    """Record one spoken question for the chat: Enter (on ``stdin``), silence or the time limit
    stop it, Ctrl-C (counted by ``ctrl_c``, an :class:`~agent.ui.interrupts.CtrlC`) cancels it.
    Returns the audio, or None when there is nothing to ask (``say`` has said why)."""
    stop, done = threading.Event(), threading.Event()
    heard = {"speech": False, "seconds": 0.0}
    say(RECORDING, "bold")
    status = console.status("recording", spinner="dots") if live else None
    watcher = stop_on_enter(stop, done, stdin)
    cancelled = False
    with ctrl_c.catching(stop.set):
        if status is not None:
            status.start()
        try:
            audio = recorder.record(stop, on_block=_meter(status, heard))
        except RecorderUnavailable as exc:
            say(f"/voice: {exc}; type the question or use /file PATH", "yellow")
            return None
        finally:
            if status is not None:
                status.stop()
            done.set()
            cancelled = ctrl_c.count > 0
    watcher.join(0.5)
    if cancelled:
        say("recording cancelled", "yellow")
        return None
    if len(audio) < SAMPLE_RATE * 0.3:
        say("nothing was recorded; try again, or type the question", "yellow")
        return None
    if not heard["speech"]:
        say("note: the recording sounded like silence; asking anyway", "dim")
    return audio


__all__ = ["Recorder", "RecorderUnavailable", "BlockStream", "SAMPLE_RATE", "stop_on_enter", "rms",
           "record_question"]
