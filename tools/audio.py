"""Audio for speech recognition: read and decode a file (or take an array), mix to mono, resample
to 16 kHz and refuse what cannot be used (:func:`load_audio`); cut long audio into Whisper's 30 s
windows and keep those with speech, by the voice detector (:func:`speech_windows`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tools.common import ToolError

__all__ = ["SAMPLE_RATE", "AudioError", "load_audio", "speech_windows", "window_speech"]

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.2
SILENCE_PEAK = 1e-3  # -60 dBFS: below this nothing audible was recorded
SILENCE_RMS = 1e-4  # -80 dBFS
CHUNK_SECONDS = 30.0  # Whisper's context
CUT_SEARCH_SECONDS = 10.0  # long audio: cut at the quietest pause in each window's last 10 s
VAD_MIN_SPEECH_SECONDS = 0.3  # a window is decoded only if the voice detector finds this much speech in it


class AudioError(ToolError):
    """The audio cannot be used (missing, undecodable, empty, too short/long, silent)."""


def _mono(x: np.ndarray) -> np.ndarray:
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(f"audio array must be 1-D or 2-D, got shape {tuple(x.shape)}")
    if x.size == 0:
        return x.reshape(-1)
    # (frames, channels) as soundfile returns it, or (channels, frames) as torchaudio does
    axis = 1 if x.shape[1] <= x.shape[0] else 0
    return x.mean(axis=axis)


def _to_float32(x: np.ndarray) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        scale = float(max(abs(info.min), info.max))
        if info.min == 0:  # unsigned PCM (e.g. 8-bit): centred on the middle value
            return ((x.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)).astype(np.float32)
        return (x.astype(np.float32) / scale).astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"audio array has unsupported dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def _read_file(path: Path, max_seconds: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"expected an audio file but got a directory: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        info = sf.info(str(path))
        if info.samplerate > 0 and info.frames > 0 and info.frames / info.samplerate > max_seconds + 1:
            raise AudioError(
                f"audio is too long ({info.frames / info.samplerate:.1f} s; the limit is {max_seconds:g} s): {path.name}"
            )
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile errors: corrupt, unknown format, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioError(
            f"cannot decode audio file {path.name} ({reason}); supported formats: wav, flac, ogg/vorbis, opus, mp3"
        ) from None
    return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0], int(sr)


def load_audio(source: Any, *, max_seconds: float = 600.0) -> np.ndarray:
    """Return ``source`` as float32 mono audio at 16 kHz.

    ``source`` is a file path (wav/flac/ogg/opus/mp3, any sample rate, any channel count),
    a numpy array (taken as 16 kHz mono already) or an ``(array, sample_rate)`` tuple.
    Raises :class:`AudioError` (one readable line) when the audio cannot be used.
    """
    if isinstance(source, (str, os.PathLike)):
        data, sr = _read_file(Path(source).expanduser(), max_seconds)
    elif isinstance(source, tuple) and len(source) == 2 and not isinstance(source[1], np.ndarray):
        data, sr = np.asarray(source[0]), source[1]
        try:
            sr = int(sr)
        except (TypeError, ValueError):
            raise AudioError(f"sample rate must be a positive integer, got {sr!r}") from None
        if sr <= 0:
            raise AudioError(f"sample rate must be a positive integer, got {sr}")
    elif isinstance(source, np.ndarray):
        data, sr = source, SAMPLE_RATE
    elif type(source).__module__.startswith("torch"):
        data, sr = source.detach().cpu().numpy(), SAMPLE_RATE
    else:
        raise AudioError(
            f"unsupported audio input of type {type(source).__name__}; pass a file path, a numpy array or (array, sample_rate)"
        )

    audio = _to_float32(_mono(np.asarray(data)))
    if audio.size == 0:
        raise AudioError("audio is empty (no samples)")
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    seconds = audio.size / sr
    if seconds > max_seconds:
        raise AudioError(f"audio is too long ({seconds:.1f} s; the limit is {max_seconds:g} s)")
    if seconds < MIN_SECONDS:
        raise AudioError(f"audio is too short ({seconds:.2f} s; at least {MIN_SECONDS:g} s is needed)")
    if sr != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    peak = float(np.max(np.abs(audio)))
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if peak < SILENCE_PEAK or rms < SILENCE_RMS:
        raise AudioError("no speech detected: the audio is silent")
    return np.ascontiguousarray(audio, dtype=np.float32)


def _split_windows(audio: np.ndarray) -> list[np.ndarray]:
    """Cut audio into <= 30 s windows. Each cut goes in the quietest 0.3 s stretch of the
    window's last 10 s (a pause between words or sentences), slightly preferring later ones."""
    size = int(CHUNK_SECONDS * SAMPLE_RATE)
    search = int(CUT_SEARCH_SECONDS * SAMPLE_RATE)
    frame = SAMPLE_RATE // 50  # 20 ms
    smooth = 15  # frames: 0.3 s
    chunks, start = [], 0
    while audio.size - start > size:
        lo = start + size - search
        n = search // frame
        energy = np.square(audio[lo : lo + n * frame].reshape(n, frame), dtype=np.float64).mean(axis=1)
        energy = np.convolve(energy, np.ones(smooth) / smooth, mode="valid")
        score = 10 * np.log10(energy + 1e-10) + 3.0 * (1 - np.arange(energy.size) / energy.size)
        cut = lo + int(np.argmin(score)) * frame + smooth * frame // 2
        chunks.append(audio[start:cut])
        start = cut
    chunks.append(audio[start:])
    return chunks


def window_speech(audio: np.ndarray, *, vad: bool = True) -> list[tuple[np.ndarray, float | None]]:
    """Each window of ``audio`` (:func:`_split_windows`) that is not silent (at least 0.2 s, peak
    above the silence level), with the seconds of speech Silero VAD finds in it (``None`` with
    ``vad=False``). The detector runs once over the whole audio, so its state carries across cuts."""
    windows = _split_windows(audio)
    offsets = np.cumsum([0] + [w.size for w in windows])
    keep = [i for i, w in enumerate(windows)
            if w.size >= MIN_SECONDS * SAMPLE_RATE and float(np.max(np.abs(w))) >= SILENCE_PEAK]
    if not vad or not keep:
        return [(windows[i], None) for i in keep]
    from tools.vad import FRAME, default_vad, speech_segments

    segments = speech_segments(default_vad().frame_probs(audio))
    out = []
    for i in keep:
        lo, hi = offsets[i] / FRAME, offsets[i + 1] / FRAME  # the window's bounds in VAD frames
        frames = sum(max(0.0, min(e, hi) - max(s, lo)) for s, e in segments)
        out.append((windows[i], round(frames * FRAME / SAMPLE_RATE, 3)))
    return out


def speech_windows(audio: np.ndarray, *, vad: bool = True) -> list[tuple[np.ndarray, float | None]]:
    """The windows of ``audio`` worth decoding, with their seconds of speech: not silent and
    (``vad``) holding at least ``VAD_MIN_SPEECH_SECONDS`` of speech by the voice detector. Noise,
    hum and music have none, and Whisper would turn them into made-up words ("I'm going to do
    that.": issue 14; bench/eval_vad.py measures it)."""
    return [(w, s) for w, s in window_speech(audio, vad=vad) if s is None or s >= VAD_MIN_SPEECH_SECONDS]

