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
import threading
from typing import Any

from tools.common import ToolError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "float16", "bfloat16")


class DeviceError(ToolError):
    """A device that is not on this machine, or a setting that names none."""


def check_spec(spec: str) -> str:
    """``spec`` normalised (lower case, no spaces), or a DeviceError naming the accepted forms."""
    value = str(spec).strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return value


def _torch() -> Any:
    import torch

    return torch


def available() -> list[str]:
    """The devices torch can use here, CPU last: e.g. ``['cuda:0', 'cuda:1', 'cpu']``."""
    torch = _torch()
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


_resolved: dict[str, str] = {}
_lock = threading.Lock()


def resolve(spec: str = "auto") -> str:
    """The torch device ``spec`` means here (``auto``: the first of CUDA, MPS, CPU). A device that
    is absent raises DeviceError with the devices there are."""
    spec = check_spec(spec)
    if spec == "cpu":
        return "cpu"
    with _lock:
        if spec in _resolved:
            return _resolved[spec]
        here = available()
        if spec == "auto":
            device = "cuda" if any(d.startswith("cuda") for d in here) else ("mps" if "mps" in here else "cpu")
        else:
            wanted = "cuda:0" if spec == "cuda" else spec
            if wanted not in here:
                raise DeviceError(f"device {spec!r} is not available on this machine (available: {', '.join(here)})")
            device = spec
        _resolved[spec] = device
        return device


def check_device(spec: str) -> str:
    """For start-up: ``spec`` normalised; a device named explicitly (not ``auto`` or ``cpu``) must
    exist (this imports torch, which a user asking for a GPU needs anyway)."""
    spec = check_spec(spec)
    if spec not in ("auto", "cpu"):
        resolve(spec)
    return spec


def torch_dtype(device: str, dtype: str = "auto") -> Any:
    """The torch dtype for weights on ``device``: ``auto`` is float16 on CUDA and MPS (half the
    memory and the GPU's fast path) and float32 on the CPU (CPUs have no fast float16 matmul)."""
    torch = _torch()
    if dtype not in DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    return getattr(torch, dtype)


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (torch's, or one only named so)."""
    torch = _torch()
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return "out of memory" in str(exc).lower() and isinstance(exc, RuntimeError)


__all__ = ["DTYPES", "DeviceError", "available", "check_device", "check_spec", "dtype_name", "is_out_of_memory",
           "resolve", "torch_dtype"]
