"""Which accelerator the local models run on, and in which dtype: the ``device`` setting.

``auto`` (the default) is CUDA when torch sees a CUDA GPU, then Apple's MPS, then the CPU; ``cpu``,
``cuda``, ``cuda:N`` and ``mps`` ask for one. Every torch model (the transformers LLM, Whisper on
transformers, the MiniLM embedder on transformers, the diffusers pipeline) follows it; the
CTranslate2 Whisper runs on ``cuda`` or ``cpu``; llama.cpp offloads its layers to the GPU when
its build can (the wheel ``make llama`` compiles is CPU-only, and says so).

Resolving ``auto`` imports torch (to ask it about GPUs), so it happens when a torch model loads,
never at start-up: a typed question on the llama.cpp path must not pay torch's ~2 s import. A
device asked for by name is checked at once (:func:`check_device`), so a machine without it gets
a one-line usage error before any work starts.
"""

from __future__ import annotations

import re
from typing import Any

from tools.common import ToolError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICES = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}


class DeviceError(ToolError):
    """A device that is not on this machine, or a setting that names none."""


def check_spec(spec: str | None) -> str:
    """``spec`` normalised (lower case, no spaces; None and "" are ``auto``), or a DeviceError naming
    the accepted forms. Cheap: torch is not imported."""
    value = (spec or "auto").strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise DeviceError(f"unknown device '{spec}': use {DEVICES}")
    return value


def _torch() -> Any:
    import torch

    return torch


def _mps(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available() -> list[str]:
    """The devices torch can use here, CPU last: e.g. ``['cuda:0', 'cuda:1', 'cpu']``."""
    torch = _torch()
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return found + (["mps"] if _mps(torch) else []) + ["cpu"]


def resolve(spec: str | None = "auto") -> str:
    """The torch device ``spec`` means here: ``auto`` is ``cuda`` when torch sees a CUDA GPU, else
    ``mps``, else ``cpu``. A device asked for by name and absent is a one-line DeviceError saying
    what there is."""
    name = check_spec(spec)
    if name == "cpu":
        return "cpu"
    here = available()
    gpus = [d for d in here if d.startswith("cuda")]
    if name == "auto":
        return "cuda" if gpus else "mps" if "mps" in here else "cpu"
    if name.startswith("cuda"):
        if not gpus:
            torch = _torch()
            build = " (this torch is a CPU-only build)" if getattr(torch.version, "cuda", None) is None else ""
            raise DeviceError(f"device '{name}' is not available: torch {torch.__version__} sees no CUDA GPU{build}; "
                              "use --device cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= len(gpus):
            count = len(gpus)
            raise DeviceError(f"device '{name}' is not available: torch sees {count} CUDA GPU{'s' if count != 1 else ''} "
                              f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if name == "mps" and "mps" not in here:
        raise DeviceError("device 'mps' is not available: torch sees no Apple MPS device (Apple silicon with macOS "
                          "12.3 or later); use --device cpu or auto")
    return name


def check_device(spec: str | None) -> str:
    """For start-up: ``spec`` normalised; a device named explicitly (not ``auto`` or ``cpu``) must
    exist (this imports torch, which a user asking for a GPU needs anyway)."""
    spec = check_spec(spec)
    if spec not in ("auto", "cpu"):
        resolve(spec)
    return spec


def dtype_spec(dtype: str | None) -> str:
    """``dtype`` normalised to one of :data:`DTYPES` (``fp16``, ``half``, ``bf16``, ``fp32`` are
    accepted), or a DeviceError."""
    name = _DTYPE_NAMES.get((dtype or "auto").strip().lower())
    if name is None:
        raise DeviceError(f"unknown dtype '{dtype}': use auto, float32, float16 or bfloat16")
    return name


def torch_dtype(device: str, dtype: str | None = "auto") -> Any:
    """The torch dtype for weights on ``device``: ``auto`` is float16 on CUDA and MPS (half the
    memory and the GPU's fast path) and float32 on the CPU (CPUs have no fast float16 matmul)."""
    name = dtype_spec(dtype)
    if name == "auto":
        name = "float32" if device == "cpu" else "float16"
    return getattr(_torch(), name)


def resolve_dtype(dtype: str | None, device: str) -> Any:
    """:func:`torch_dtype` with the arguments the other way round (the diffusion tool's order)."""
    return torch_dtype(device, dtype)


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (torch's, or one only named so)."""
    torch = _torch()
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


__all__ = ["DEVICES", "DTYPES", "DeviceError", "available", "check_device", "check_spec", "dtype_name", "dtype_spec",
           "is_out_of_memory", "resolve", "resolve_dtype", "torch_dtype"]
