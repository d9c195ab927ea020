"""Voice activity detection: Silero VAD v6 (MIT), run locally, offline, in numpy.

The ``silero-vad`` wheel ships the model (``silero_vad/data/silero_vad.jit``, 2 MB, a TorchScript
zip archive). Its 16 kHz weights are read from that archive without torch (:func:`_read_jit_weights`:
the raw tensor files, and a pickle reader that builds nothing but arrays) and the model's ops run
here in numpy, batched: the per-frame feature stack (STFT as a convolution, four convolutions)
runs on every 32 ms frame at once, and only the LSTM cell steps through time. That gives the
package's own frame-by-frame probabilities (within 1e-4, checked by tests/test_vad.py; 2e-5
measured), imports neither torch nor ``silero_vad`` itself (whose import sets torch to one thread
for the whole process), and has no TorchScript warm-up.

The wheel's ``silero_vad_16k.safetensors`` (for its tinygrad example) holds other weights: its
probabilities differ from the package's by up to 0.52 (measured on the example question, jfk and
noise), so it is not used.

:func:`speech_segments` turns probabilities into speech stretches as Silero's
``get_speech_timestamps`` does (enter at ``threshold``, leave below ``threshold - 0.15`` held
for ``min_silence_ms``, drop stretches shorter than ``min_speech_ms``), without its padding.
"""

from __future__ import annotations

import collections
import io
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tools.audio import SAMPLE_RATE
from tools.common import ToolError, load_once

__all__ = ["SileroVAD", "default_vad", "speech_segments", "FRAME", "SAMPLE_RATE"]

FRAME = 512  # samples per probability: 32 ms
CONTEXT = 64  # samples of the previous frame the model sees with each frame
THRESHOLD = 0.5  # Silero's default: a frame above it is speech
MIN_SPEECH_MS = 250  # Silero's defaults for get_speech_timestamps
MIN_SILENCE_MS = 100
_SHAPES = {  # the 16 kHz model's tensors in silero-vad 6's archive (under "_model.")
    "stft.forward_basis_buffer": (258, 1, 256),  # real and imaginary DFT rows
    **{f"encoder.{i}.reparam_conv.{p}": shape for i, (w, b) in enumerate(
        [((128, 129, 3), (128,)), ((64, 128, 3), (64,)), ((64, 64, 3), (64,)), ((128, 64, 3), (128,))])
       for p, shape in (("weight", w), ("bias", b))},
    "decoder.rnn.weight_ih": (512, 128), "decoder.rnn.weight_hh": (512, 128),
    "decoder.rnn.bias_ih": (512,), "decoder.rnn.bias_hh": (512,),
    "decoder.decoder.2.weight": (1, 128, 1), "decoder.decoder.2.bias": (1,),
}


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


class _Module:
    """A TorchScript module in the archive's pickle: only its attributes are kept."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _tensor(storage: np.ndarray, offset: int, size: Any, stride: Any, *_: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2, as a numpy array (a copy, in C order)."""
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides).copy()


class _JitUnpickler(pickle.Unpickler):
    """Reads a TorchScript archive's ``data.pkl``: modules become :class:`_Module`, tensors numpy
    arrays from the archive's ``data/N`` files; any other class is refused (nothing is executed)."""

    _CLASSES = {("torch._utils", "_rebuild_tensor_v2"): _tensor, ("torch", "FloatStorage"): np.float32,
                ("collections", "OrderedDict"): collections.OrderedDict, ("torch.jit._pickle", "build_intlist"): list}

    def __init__(self, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(archive.read(f"{prefix}/data.pkl")))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            return _Module
        if (module, name) in self._CLASSES:
            return self._CLASSES[(module, name)]
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a TorchScript archive")

    def persistent_load(self, pid: Any) -> np.ndarray:
        _, dtype, key, _, numel = pid
        if dtype is not np.float32:
            raise pickle.UnpicklingError(f"unexpected storage {dtype!r} in a TorchScript archive")
        return np.frombuffer(self.archive.read(f"{self.prefix}/data/{key}"), dtype=np.float32, count=numel)


def _read_jit_weights(path: Path) -> dict[str, np.ndarray]:
    """The 16 kHz model's tensors (names under ``_model.``, float64) from silero-vad's archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = archive.namelist()[0].split("/", 1)[0]
            root = _JitUnpickler(archive, prefix).load()
        found: dict[str, np.ndarray] = {}

        def walk(obj: Any, name: str) -> None:
            if isinstance(obj, _Module):
                obj = obj.state
            if isinstance(obj, dict):
                for key, value in obj.items():
                    walk(value, f"{name}.{key}" if name else str(key))
            elif isinstance(obj, np.ndarray):
                found[name] = obj

        walk(root.state["_model"], "")
    except Exception as exc:  # noqa: BLE001 - a damaged or unexpected file
        raise ToolError(f"cannot load the Silero VAD model {path.name}: {' '.join(str(exc).split())}") from None
    wrong = [k for k, shape in _SHAPES.items() if k not in found or found[k].shape != shape]
    if wrong:
        raise ToolError(f"the Silero VAD model {path.name} is not the expected one (missing or reshaped: "
                        f"{', '.join(wrong)}); reinstall silero-vad 6")
    return {k: found[k].astype(np.float64) for k in _SHAPES}


def _conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int, padding: int) -> np.ndarray:
    """torch's ``conv1d`` on (batch, channels, length) with zero padding."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    out_ch, in_ch, k = weight.shape
    cols = np.lib.stride_tricks.sliding_window_view(x, k, axis=2)[:, :, ::stride]  # (batch, in, l_out, k)
    y = np.einsum("bilk,oik->bol", cols, weight, optimize=True)
    return y if bias is None else y + bias[None, :, None]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SileroVAD:
    """Speech probability per 32 ms frame of 16 kHz mono audio. Loads once; thread-safe (calls
    run one at a time: each takes a few hundredths of a second per 30 s window)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._w: dict[str, np.ndarray] | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._w is not None

    @load_once
    def load(self) -> None:
        self._w = _read_jit_weights(_model_file())

    def frame_probs(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32 ms frame of ``audio`` (float32, 16 kHz, mono); frame ``i``
        covers samples ``[512 i, 512 (i + 1))``, the last one zero-padded. The LSTM runs from a
        fresh state over the whole array, as Silero's ``get_speech_timestamps`` does."""
        self.load()
        w = self._w
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        n = -(-x.size // FRAME)
        if n == 0:
            return np.zeros(0, np.float32)
        with self._run_lock:
            x = np.pad(x, (CONTEXT, n * FRAME - x.size))
            h = np.lib.stride_tricks.sliding_window_view(x, CONTEXT + FRAME)[::FRAME][:, None, :]  # (n, 1, 576)
            h = np.concatenate([h, h[:, :, -2:-66:-1]], axis=2)  # reflect-pad 64 on the right
            h = _conv1d(h, w["stft.forward_basis_buffer"], None, stride=128, padding=0)  # (n, 258, 4)
            h = np.sqrt(h[:, :129] ** 2 + h[:, 129:] ** 2)
            for i, stride in enumerate((1, 2, 2, 1)):
                conv = f"encoder.{i}.reparam_conv"
                h = np.maximum(_conv1d(h, w[f"{conv}.weight"], w[f"{conv}.bias"], stride=stride, padding=1), 0.0)
            # LSTM cell through time (gates i, f, g, o), the input part for every frame at once
            rnn = "decoder.rnn"
            gates_in = h[:, :, 0] @ w[f"{rnn}.weight_ih"].T + w[f"{rnn}.bias_ih"] + w[f"{rnn}.bias_hh"]
            w_hh = w[f"{rnn}.weight_hh"].T
            state, cell = np.zeros(128), np.zeros(128)
            out = np.empty((n, 128))
            for t in range(n):
                g = gates_in[t] + state @ w_hh
                i_g, f_g, c_g, o_g = _sigmoid(g[:128]), _sigmoid(g[128:256]), np.tanh(g[256:384]), _sigmoid(g[384:])
                cell = f_g * cell + i_g * c_g
                state = o_g * np.tanh(cell)
                out[t] = state
            weight, bias = w["decoder.decoder.2.weight"], w["decoder.decoder.2.bias"]
            p = _sigmoid(np.maximum(out, 0.0) @ weight[0, :, 0] + bias[0])
        return p.astype(np.float32)


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
