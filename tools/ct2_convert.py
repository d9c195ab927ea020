"""CTranslate2 Whisper -> transformers Whisper, with numpy alone (no ctranslate2 needed).

:func:`convert_ct2_whisper` reads a CTranslate2 ``model.bin`` (whole or in parts), maps its
variables to transformers' names and writes a ``WhisperForConditionalGeneration`` folder (model,
generation config, processor) with a marker file; :func:`cache_valid` says whether a converted
folder can be reused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tools.audio import SAMPLE_RATE
from tools.common import ToolError, staged_dir

__all__ = ["CONVERTER_VERSION", "cache_valid", "convert_ct2_whisper", "find_weight_parts"]

CONVERTER_VERSION = 1
_MARKER = "askdraw_conversion.json"

# CTranslate2 DataType enum (include/ctranslate2/types.h)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


# --------------------------------------------------------------------------------------
# model.bin
# --------------------------------------------------------------------------------------


class _Cursor:
    """Reads ``model.bin`` front to back: little-endian numbers, strings and arrays."""

    def __init__(self, buf: bytes | bytearray | memoryview):
        self.buf = memoryview(buf)
        self.off = 0

    def num(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.off)
        self.off += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.num("H")
        text = bytes(self.buf[self.off : self.off + n]).rstrip(b"\0").decode("utf-8")
        self.off += n
        return text

    def array(self, name: str) -> np.ndarray:
        shape = [self.num("I") for _ in range(self.num("B"))]
        dtype_id, nbytes = self.num("B"), self.num("I")
        if dtype_id not in _CT2_DTYPES:
            raise ToolError(f"unknown CTranslate2 dtype {dtype_id} for {name}")
        dtype = _CT2_DTYPES[dtype_id]
        if dtype == "bfloat16":
            raw = np.frombuffer(self.buf, dtype=np.uint16, count=nbytes // 2, offset=self.off)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(self.buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=self.off)
        self.off += nbytes
        return arr.reshape(shape)


def _read_ct2_bin(buf: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Parse CTranslate2's ``model.bin`` (binary version >= 4; ``ModelSpec._serialize``).

    Layout (little endian): u32 version, str spec name, u32 revision, u32 count, then per
    variable: str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, raw bytes; then u32
    alias count and (str alias, str target) pairs. ``str`` is u16 length (incl. NUL) + bytes.
    """
    cur = _Cursor(buf)
    try:
        version = cur.num("I")
        if not 4 <= version <= 6:
            raise ToolError(f"unsupported CTranslate2 model.bin version {version} (expected 4-6)")
        spec = cur.string()
        if spec != "WhisperSpec":
            raise ToolError(f"not a Whisper CTranslate2 model (spec is {spec!r})")
        cur.num("I")  # spec revision
        out: dict[str, np.ndarray] = {}
        for _ in range(cur.num("I")):
            name = cur.string()
            out[name] = cur.array(name)
        for _ in range(cur.num("I")):
            alias, target = cur.string(), cur.string()
            out[alias] = out[target]
    except struct.error:
        raise ToolError("CTranslate2 model.bin is truncated or corrupt") from None
    return out


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


def find_weight_parts(src: Path) -> list[Path]:
    """``src/model.bin``, or the pieces of a split one (``model.bin.part1``, ...) in order."""
    if (src / "model.bin").is_file():
        return [src / "model.bin"]
    parts = sorted(src.glob("model.bin.part*"), key=lambda p: int(re.sub(r"\D", "", p.suffix) or 0))
    if not parts:
        raise ToolError(f"no CTranslate2 model.bin in {src}")
    return parts


# --------------------------------------------------------------------------------------
# CT2 names -> transformers names
# --------------------------------------------------------------------------------------


class _Mapper:
    """Copies CT2 Whisper variables into a transformers state dict (``sd``), de-quantising."""

    def __init__(self, ct2: dict[str, np.ndarray]):
        self.ct2 = ct2
        self.sd: dict[str, np.ndarray] = {}

    def weight(self, name: str) -> np.ndarray:
        w = self.ct2[name]
        scale = self.ct2.get(name + "_scale")
        if w.dtype in (np.int8, np.int16):  # CT2 int8/int16 quantisation: q = round(w * scale)
            if scale is None:
                raise ToolError(f"quantized weight {name} has no scale")
            scale = np.asarray(scale, dtype=np.float32)
            w = w.astype(np.float32) / (scale[:, None] if scale.ndim == 1 else scale)
        return np.asarray(w, dtype=np.float16 if w.dtype != np.float32 else np.float32)

    def linear(self, src: str, dst: str) -> None:
        self.sd[dst + ".weight"] = self.weight(src + "/weight")
        self.sd[dst + ".bias"] = self.weight(src + "/bias")

    def norm(self, src: str, dst: str) -> None:
        self.sd[dst + ".weight"] = self.weight(src + "/gamma")
        self.sd[dst + ".bias"] = self.weight(src + "/beta")

    def split(self, src: str, dsts: Sequence[str], k_index: int | None) -> None:
        w, b = self.weight(src + "/weight"), self.weight(src + "/bias")
        for i, (dw, db, dst) in enumerate(zip(np.split(w, len(dsts)), np.split(b, len(dsts)), dsts, strict=True)):
            self.sd[dst + ".weight"] = dw
            if i != k_index:  # transformers' k_proj has no bias (CT2 stores zeros)
                self.sd[dst + ".bias"] = db

    def layers(self, prefix: str) -> int:
        pat = re.compile(rf"^{prefix}/layer_(\d+)/")
        ids = {int(m.group(1)) for k in self.ct2 if (m := pat.match(k))}
        if not ids or ids != set(range(len(ids))):
            raise ToolError(f"CTranslate2 Whisper model has no (or non-contiguous) {prefix} layers")
        return len(ids)

    def self_attention(self, s: str, d: str) -> None:
        self.split(f"{s}/self_attention/linear_0", [f"{d}.self_attn.{p}_proj" for p in "qkv"], 1)
        self.linear(f"{s}/self_attention/linear_1", f"{d}.self_attn.out_proj")
        self.norm(f"{s}/self_attention/layer_norm", f"{d}.self_attn_layer_norm")

    def cross_attention(self, s: str, d: str) -> None:
        self.linear(f"{s}/attention/linear_0", f"{d}.encoder_attn.q_proj")
        self.split(f"{s}/attention/linear_1", [f"{d}.encoder_attn.{p}_proj" for p in "kv"], 0)
        self.linear(f"{s}/attention/linear_2", f"{d}.encoder_attn.out_proj")
        self.norm(f"{s}/attention/layer_norm", f"{d}.encoder_attn_layer_norm")

    def ffn(self, s: str, d: str) -> None:
        self.linear(f"{s}/ffn/linear_0", f"{d}.fc1")
        self.linear(f"{s}/ffn/linear_1", f"{d}.fc2")
        self.norm(f"{s}/ffn/layer_norm", f"{d}.final_layer_norm")

    def stack(self, side: str, n_layers: int, blocks: Sequence[Callable[[str, str], None]]) -> None:
        """Each layer of the ``side`` ('encoder', 'decoder'): its ``blocks`` in order."""
        for i in range(n_layers):
            for block in blocks:
                block(f"{side}/layer_{i}", f"model.{side}.layers.{i}")

    def encoder(self, n_layers: int) -> None:
        for c in ("conv1", "conv2"):
            self.linear(f"encoder/{c}", f"model.encoder.{c}")
        self.sd["model.encoder.embed_positions.weight"] = self.weight("encoder/position_encodings/encodings")
        self.norm("encoder/layer_norm", "model.encoder.layer_norm")
        self.stack("encoder", n_layers, (self.self_attention, self.ffn))

    def decoder(self, n_layers: int) -> None:
        self.sd["model.decoder.embed_tokens.weight"] = self.weight("decoder/embeddings/weight")
        self.sd["model.decoder.embed_positions.weight"] = self.weight("decoder/position_encodings/encodings")
        self.norm("decoder/layer_norm", "model.decoder.layer_norm")
        self.stack("decoder", n_layers, (self.self_attention, self.cross_attention, self.ffn))


def _dims(ct2: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, int]:
    """The model sizes, inferred from the variables' shapes."""
    conv1 = ct2["encoder/conv1/weight"]
    return {
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


def _ct2_to_state_dict(ct2: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Map CT2 Whisper variables to transformers names; infer the model sizes from shapes."""
    mapper = _Mapper(ct2)
    try:
        n_enc, n_dec = mapper.layers("encoder"), mapper.layers("decoder")
        mapper.encoder(n_enc)
        mapper.decoder(n_dec)
        dims = _dims(ct2, n_enc, n_dec)
    except KeyError as exc:
        raise ToolError(f"CTranslate2 Whisper model is missing variable {exc.args[0]}") from None
    return mapper.sd, dims


# --------------------------------------------------------------------------------------
# The transformers folder
# --------------------------------------------------------------------------------------


def _save_processor(src: Path, out: Path, dims: dict[str, int]) -> dict[str, int]:
    """Write the tokenizer and feature extractor (from the package's tokenizer.json only); return
    the vocabulary."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tok_src = out / "_tok"
    tok_src.mkdir()
    shutil.copy2(src / "tokenizer.json", tok_src / "tokenizer.json")
    tokenizer = WhisperTokenizer.from_pretrained(str(tok_src), local_files_only=True)
    shutil.rmtree(tok_src)
    vocab = tokenizer.get_vocab()
    if vocab.get("<|endoftext|>") is None or vocab.get("<|startoftranscript|>") is None:
        raise ToolError(f"{src / 'tokenizer.json'} is not a Whisper tokenizer")
    tokenizer.bos_token = tokenizer.eos_token = tokenizer.unk_token = tokenizer.pad_token = "<|endoftext|>"
    feature_extractor = WhisperFeatureExtractor(
        feature_size=dims["num_mel_bins"], sampling_rate=SAMPLE_RATE, hop_length=160, chunk_length=30, n_fft=400
    )
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(str(out))
    return vocab


def _save_configs(out: Path, dims: dict[str, int], ct2_cfg: dict[str, Any], vocab: dict[str, int]) -> None:
    """Write the model config and the generation config."""
    from transformers import GenerationConfig, WhisperConfig

    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    begin_suppress = ct2_cfg.get("suppress_ids_begin", [220, eot])
    WhisperConfig(
        **dims, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        begin_suppress_tokens=begin_suppress, suppress_tokens=ct2_cfg.get("suppress_ids", []),
        tie_word_embeddings=True, architectures=["WhisperForConditionalGeneration"],
    ).save_pretrained(str(out))
    multilingual = dims["vocab_size"] >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=dims["max_target_positions"],
        suppress_tokens=list(ct2_cfg.get("suppress_ids", [])),
        begin_suppress_tokens=list(begin_suppress),
        alignment_heads=[list(h) for h in ct2_cfg.get("alignment_heads", [])],
        no_timestamps_token_id=vocab.get("<|notimestamps|>"),
        prev_sot_token_id=vocab.get("<|startofprev|>"),
        max_initial_timestamp_index=50, return_timestamps=False, is_multilingual=multilingual,
        do_sample=False, num_beams=1,
    )
    if multilingual:
        id_to_tok = {v: k for k, v in vocab.items()}
        gen.lang_to_id = {id_to_tok[i]: int(i) for i in ct2_cfg.get("lang_ids", []) if i in id_to_tok}
        gen.task_to_id = {"transcribe": vocab.get("<|transcribe|>"), "translate": vocab.get("<|translate|>")}
        gen.forced_decoder_ids = None
    gen.save_pretrained(str(out))


def _save_weights(out: Path, sd: dict[str, np.ndarray]) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out / "model.safetensors", 0o666 & ~umask)


def _check_source(src: Path) -> None:
    if not src.is_dir():
        raise ToolError(f"CTranslate2 model folder does not exist: {src}")
    for needed in ("config.json", "tokenizer.json"):
        if not (src / needed).is_file():
            raise ToolError(f"CTranslate2 Whisper folder {src} lacks {needed}")


def convert_ct2_whisper(src: Path, out_dir: Path, *, weight_parts: Sequence[Path] | None = None) -> Path:
    """Convert a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``)
    into a transformers Whisper folder (model, generation config, processor) at ``out_dir``.

    ``weight_parts``: the pieces of a split ``model.bin`` in order, if they are not in ``src``.
    The folder is written to a temporary sibling and renamed into place, so a half-written
    conversion is never visible. Returns ``out_dir``.
    """
    src, out_dir = Path(src), Path(out_dir)
    _check_source(src)
    parts = list(weight_parts) if weight_parts else find_weight_parts(src)
    ct2_cfg = json.loads((src / "config.json").read_text())
    sd, dims = _ct2_to_state_dict(_read_ct2_bin(_read_parts(parts)))
    with staged_dir(out_dir, keep=cache_valid) as tmp:
        vocab = _save_processor(src, tmp, dims)
        _save_configs(tmp, dims, ct2_cfg, vocab)
        _save_weights(tmp, sd)
        del sd
        marker = {
            "converter_version": CONVERTER_VERSION,
            "source": str(src.resolve()),
            "weights": [str(p) for p in parts],
            "weights_bytes": sum(p.stat().st_size for p in parts),
            "multilingual": dims["vocab_size"] >= 51865,
            "dims": dims,
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=2))
    return out_dir


def cache_valid(folder: Path, sources: Sequence[Path] | None = None) -> bool:
    """``folder`` holds a finished conversion by this converter version (and, given the
    ``sources``, of weights of their size; sources that are gone do not count against it)."""
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
