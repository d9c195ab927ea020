"""Voice activity detection: Silero VAD v6 (MIT), run locally, offline.

The ``silero-vad`` wheel ships the model (``silero_vad/data/silero_vad.jit``, 2 MB). Its weights
are read from that file and run here as plain PyTorch ops, batched: the per-frame feature stack
(STFT as a convolution, four convolutions) runs on every 32 ms frame at once, and only the LSTM
steps through time. That gives the package's own frame-by-frame probabilities (within 1e-4,
checked by tests/test_vad.py; 2e-6 measured) about 10x faster (30 s of audio: 0.15 s against
1.7 s, one thread, busy 2-core machine), without TorchScript's slow first calls (about 5 s in a
fresh process), and without importing ``silero_vad`` itself, whose import sets torch to one
thread for the whole process (the Whisper encoder would lose its threads).

:func:`speech_segments` turns probabilities into speech stretches as Silero's
``get_speech_timestamps`` does (enter at ``threshold``, leave below ``threshold - 0.15`` held
for ``min_silence_ms``, drop stretches shorter than ``min_speech_ms``), without its padding.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tools.audio import SAMPLE_RATE
from tools.common import ToolError, load_once, torch_threads

__all__ = ["SileroVAD", "default_vad", "speech_segments", "FRAME", "SAMPLE_RATE"]

FRAME = 512  # samples per probability: 32 ms
CONTEXT = 64  # samples of the previous frame the model sees with each frame
THRESHOLD = 0.5  # Silero's default: a frame above it is speech
MIN_SPEECH_MS = 250  # Silero's defaults for get_speech_timestamps
MIN_SILENCE_MS = 100


def _model_file() -> Path:
    """The bundled TorchScript file, found without importing ``silero_vad`` (see the module doc)."""
    import importlib.util

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ToolError("voice activity detection needs the silero-vad package: pip install 'silero-vad==6.2.3'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
    if not path.is_file():
        raise ToolError(f"the silero-vad package has no model file {path}; reinstall silero-vad")
    return path


class SileroVAD:
    """Speech probability per 32 ms frame of 16 kHz mono audio. Loads once; thread-safe (calls
    run one at a time: each takes a tenth of a second or so per 30 s window)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._w: dict[str, Any] | None = None
        self._lstm = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._w is not None

    @load_once
    def load(self) -> None:
        import torch

        try:
            with warnings.catch_warnings():  # torch 2.13: "torch.jit.load is deprecated"; we only read weights
                warnings.simplefilter("ignore", DeprecationWarning)
                sd = torch.jit.load(str(_model_file()), map_location="cpu").state_dict()
        except ToolError:
            raise
        except Exception as exc:  # a damaged file
            raise ToolError(f"cannot load the Silero VAD model: {' '.join(str(exc).split())}") from None
        sd = {k.removeprefix("_model."): v.detach().clone() for k, v in sd.items() if k.startswith("_model.")}
        lstm = torch.nn.LSTM(128, 128, batch_first=True)
        with torch.no_grad():
            for ours, theirs in (("weight_ih_l0", "weight_ih"), ("weight_hh_l0", "weight_hh"),
                                 ("bias_ih_l0", "bias_ih"), ("bias_hh_l0", "bias_hh")):
                getattr(lstm, ours).copy_(sd[f"decoder.rnn.{theirs}"])
        lstm.eval()
        self._lstm = lstm
        self._w = {
            "stft": sd["stft.forward_basis_buffer"],  # (258, 1, 256): real and imaginary DFT rows
            "convs": [(sd[f"encoder.{i}.reparam_conv.weight"], sd[f"encoder.{i}.reparam_conv.bias"], stride)
                      for i, stride in enumerate((1, 2, 2, 1))],
            "out": (sd["decoder.decoder.2.weight"], sd["decoder.decoder.2.bias"]),
        }

    def frame_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of ``audio`` (float32, 16 kHz, mono); frame ``i``
        covers samples ``[512 i, 512 (i + 1))``, the last one zero-padded. The LSTM runs from a
        fresh state over the whole array, as Silero's ``get_speech_timestamps`` does."""
        import torch
        import torch.nn.functional as F

        self.load()
        w = self._w
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        n = -(-x.numel() // FRAME)
        if n == 0:
            return np.zeros(0, np.float32)
        # One thread: the model is tiny, and oneDNN's multi-threaded LSTM took 2-13 s on its
        # first call in a process on a busy 2-core machine (0.1-0.3 s with one thread).
        with self._run_lock, torch_threads(1), torch.inference_mode():
            x = F.pad(x, (CONTEXT, n * FRAME - x.numel()))
            h = x.unfold(0, CONTEXT + FRAME, FRAME).unsqueeze(1)  # (n, 1, 576)
            h = F.conv1d(F.pad(h, (0, 64), mode="reflect"), w["stft"], stride=128)
            h = torch.sqrt(h[:, :129] ** 2 + h[:, 129:] ** 2)
            for weight, bias, stride in w["convs"]:
                h = F.relu(F.conv1d(h, weight, bias, stride=stride, padding=1))
            h, _ = self._lstm(h.squeeze(-1).unsqueeze(0))  # (1, n, 128), through time
            weight, bias = w["out"]
            p = torch.sigmoid(F.linear(F.relu(h[0]), weight[:, :, 0], bias))
        return p.reshape(-1).numpy().astype(np.float32)


def speech_segments(probs: np.ndarray, *, threshold: float = THRESHOLD, min_speech_ms: float = MIN_SPEECH_MS,
                    min_silence_ms: float = MIN_SILENCE_MS) -> list[tuple[int, int]]:
    """Speech stretches as (first frame, end frame) pairs, by Silero's hysteresis rule."""
    neg = max(threshold - 0.15, 0.01)
    frame_ms = 1000 * FRAME / SAMPLE_RATE
    min_speech, min_silence = min_speech_ms / frame_ms, min_silence_ms / frame_ms
    out: list[tuple[int, int]] = []
    start = quiet_from = None
    for i, p in enumerate(np.asarray(probs, dtype=np.float64)):
        if start is None:
            if p >= threshold:
                start, quiet_from = i, None
            continue
        if p >= threshold:
            quiet_from = None
        elif p < neg:
            if quiet_from is None:
                quiet_from = i
            if i - quiet_from >= min_silence:
                if quiet_from - start > min_speech:
                    out.append((start, quiet_from))
                start = quiet_from = None
    if start is not None and len(probs) - start > min_speech:
        out.append((start, len(probs)))
    return out


_default: SileroVAD | None = None
_default_lock = threading.Lock()


def default_vad() -> SileroVAD:
    """The process-wide VAD, created on first use (its weights load on the first call)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = SileroVAD()
    return _default
