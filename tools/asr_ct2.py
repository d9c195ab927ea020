"""Whisper on CTranslate2, without torch or transformers: numpy features, ``tokenizers`` tokens.

:class:`CT2Whisper` runs a Whisper model in CTranslate2 format (``model.bin``, whole or split in
parts, ``config.json``, ``tokenizer.json``) with ``ctranslate2.models.Whisper``: the encoder once
per batch of 30 s windows, Whisper's no-speech probability from one decoder step, then greedy
decoding. It does for :class:`tools.asr.WhisperASR` what the transformers engine there does, with
the same prompts (``<|startoftranscript|>``, for a multilingual model ``<|en|><|transcribe|>``,
then ``<|notimestamps|>``) and the same suppressed tokens (the model's ``suppress_ids``, and
``suppress_ids_begin`` at the first step). Importing this module imports neither.

:func:`log_mel` computes Whisper's input features in numpy (80 or 128 Slaney mel bins, 25 ms Hann
windows every 10 ms over 30 s, log10, clipped 8 below the peak, scaled): transformers'
``WhisperFeatureExtractor`` gives the same (tests/test_asr.py compares them), but importing it
imports torch (3 s in a fresh process).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.audio import SAMPLE_RATE
from tools.common import ToolError

__all__ = ["COMPUTE_TYPES", "DEFAULT_COMPUTE_TYPE", "CT2Whisper", "binding_problem", "log_mel", "mel_filters"]

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # every window is padded to Whisper's 30 s
MAX_TARGET_POSITIONS = 448  # the decoder's positions: prompt + generated tokens
#: int8 weights (de-quantised per layer) against float32: the same WER on bench/eval_asr.py's 12 clips,
#: and faster (README "Speech recognition" has the numbers).
COMPUTE_TYPES = ("int8", "int8_float32", "float32", "float16", "int8_float16")  # the last two: CUDA
DEFAULT_COMPUTE_TYPE = "int8"


# -- features ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = 80) -> np.ndarray:
    """Whisper's mel filter bank, (n_mels, N_FFT // 2 + 1): triangles on the Slaney mel scale from
    0 Hz to 8 kHz, each of area one (Slaney normalisation), as librosa and transformers build it."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.float64(0.0)), hz_to_mel(np.float64(SAMPLE_RATE / 2)), n_mels + 2))
    ramps = edges[:, None] - fft_freqs[None, :]
    width = np.diff(edges)
    up, down = -ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(up, down))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic, as torch.hann_window


def log_mel(windows: Sequence[np.ndarray], n_mels: int = 80) -> np.ndarray:
    """Whisper's log-mel features of each window (16 kHz mono, at most 30 s, zero-padded to 30 s):
    float32, shape (len(windows), n_mels, 3000)."""
    filters = mel_filters(n_mels).T
    out = np.empty((len(windows), n_mels, WINDOW_SAMPLES // HOP), np.float32)
    for i, audio in enumerate(windows):
        x = np.zeros(WINDOW_SAMPLES + N_FFT, np.float64)
        audio = np.asarray(audio, dtype=np.float64)[:WINDOW_SAMPLES]
        x[N_FFT // 2 : N_FFT // 2 + audio.size] = audio
        # centred frames: reflect the first and last N_FFT // 2 samples, as torch.stft(center=True)
        x[: N_FFT // 2] = x[N_FFT // 2 + 1 : N_FFT + 1][::-1]
        x[-(N_FFT // 2) :] = x[-N_FFT - 1 : -(N_FFT // 2) - 1][::-1]
        frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:-1]  # the last frame is dropped
        spec = np.fft.rfft(frames * _hann(), axis=-1)
        mel = np.log10(np.maximum((spec.real**2 + spec.imag**2) @ filters, 1e-10))
        out[i] = ((np.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0).T
    return out


# -- the model ---------------------------------------------------------------------------------------
def binding_problem() -> str | None:
    """Why ctranslate2 cannot run here (not installed, or its library does not load), or None."""
    try:
        import ctranslate2

        ctranslate2.models.Whisper  # noqa: B018 - the compiled extension loaded
    except (ImportError, AttributeError) as exc:
        return f"the ctranslate2 package does not import ({' '.join(str(exc).split())}): pip install 'ctranslate2==4.8.5'"
    return None


class CT2Whisper:
    """A CTranslate2 Whisper model and its tokenizer, for :class:`tools.asr.WhisperASR`.

    ``folder``: the model's folder (``config.json``, ``tokenizer.json``, a vocabulary file);
    ``weight_parts``: the pieces of ``model.bin`` in order (default: ``folder/model.bin``, or its
    ``model.bin.part*``), joined in memory. ``threads``: CTranslate2's intra-op threads.
    """

    runtime = "ctranslate2"

    def __init__(self, folder: Path, *, weight_parts: Sequence[Path] | None = None, threads: int = 1,
                 compute_type: str = DEFAULT_COMPUTE_TYPE, device: str = "cpu", device_index: int = 0):
        import ctranslate2
        from tokenizers import Tokenizer

        from tools.ct2_convert import find_weight_parts

        if compute_type not in COMPUTE_TYPES:
            raise ToolError(f"unknown CTranslate2 compute type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}")
        folder = Path(folder)
        for needed in ("config.json", "tokenizer.json"):
            if not (folder / needed).is_file():
                raise ToolError(f"CTranslate2 Whisper folder {folder} lacks {needed}")
        parts = list(weight_parts) if weight_parts else find_weight_parts(folder)
        missing = [str(p) for p in parts if not p.is_file()]
        if missing:
            raise ToolError(f"CTranslate2 weights not found: {', '.join(missing)}")
        try:
            self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "config.json").read_text())
        except Exception as exc:  # noqa: BLE001 - a damaged file: say which
            raise ToolError(f"cannot read the Whisper tokenizer or config in {folder}: {' '.join(str(exc).split())}") from None
        ids = {name: self.tokenizer.token_to_id(f"<|{name}|>")
               for name in ("endoftext", "startoftranscript", "notimestamps", "en", "transcribe")}
        if ids["endoftext"] is None or ids["startoftranscript"] is None or ids["notimestamps"] is None:
            raise ToolError(f"{folder / 'tokenizer.json'} is not a Whisper tokenizer")
        self.eot = ids["endoftext"]
        files = None
        if len(parts) > 1 or parts[0] != folder / "model.bin":  # split weights: joined in memory, not on disk
            from tools.ct2_convert import _read_parts

            files = {"model.bin": bytes(_read_parts(parts))}
            files.update({p.name: p.read_bytes() for p in folder.iterdir()
                          if p.name in ("config.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")})
        try:
            self.model = ctranslate2.models.Whisper(str(folder), device=device, device_index=device_index,
                                                    compute_type=compute_type, intra_threads=threads, files=files)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ToolError(f"cannot load the CTranslate2 Whisper model in {folder}: {' '.join(str(exc).split())}") from None
        self.threads, self.compute_type = threads, compute_type
        self.multilingual = bool(self.model.is_multilingual)
        self.n_mels = int(getattr(self.model, "n_mels", 0) or config.get("num_mel_bins") or 80)
        prompt = [ids["startoftranscript"]]
        if self.multilingual:
            if ids["en"] is None or ids["transcribe"] is None:
                raise ToolError(f"{folder / 'tokenizer.json'} is a multilingual Whisper tokenizer without <|en|> or <|transcribe|>")
            prompt += [ids["en"], ids["transcribe"]]
        self.prompt = prompt + [ids["notimestamps"]]

    def encode(self, windows: Sequence[np.ndarray]) -> Any:
        """The encoder's output for a batch of windows (a CTranslate2 StorageView on the CPU)."""
        import ctranslate2

        return self.model.encode(ctranslate2.StorageView.from_array(log_mel(windows, self.n_mels)), to_cpu=True)

    def _generate(self, encoded: Any, **options: Any) -> list[Any]:
        n = encoded.shape[0]
        return self.model.generate(encoded, [self.prompt] * n, beam_size=1, suppress_blank=True, suppress_tokens=[-1],
                                   **options)

    def no_speech_probs(self, encoded: Any) -> np.ndarray:
        """Whisper's no-speech probability of each encoded window (one decoder step)."""
        # max_length counts the prompt: this generates one token, scored after <|startoftranscript|>
        results = self._generate(encoded, max_length=len(self.prompt), return_no_speech_prob=True)
        return np.array([r.no_speech_prob for r in results], dtype=np.float64)

    @staticmethod
    def select(encoded: Any, keep: np.ndarray) -> Any:
        """The rows of ``encoded`` where ``keep`` is true."""
        import ctranslate2

        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoded)[keep]))

    def decode(self, encoded: Any) -> list[str]:
        """Greedy decoding of encoded windows, one text each."""
        results = self._generate(encoded, max_length=MAX_TARGET_POSITIONS)  # prompt + text, as transformers
        texts = []
        for r in results:
            ids = [t for t in r.sequences_ids[0] if t < self.eot]  # text tokens only (no timestamps, no specials)
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True).strip())
        return texts
