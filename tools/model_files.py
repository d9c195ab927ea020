"""Where a model setting points: a local folder or a Hugging Face hub id (one rule for all tools)."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "name" or "owner/name"


def looks_like_path(spec: str) -> bool:
    """Path syntax: a hub id is ``name`` or ``owner/name``, so anything that starts with ``/``,
    ``.`` or ``~``, ends with ``/``, holds a backslash or more than one ``/`` names a folder."""
    return (
        spec.startswith(("/", ".", "~"))
        or spec.endswith("/")
        or "\\" in spec
        or spec.count("/") > 1
        or os.path.isabs(spec)
    )


def local_folder(spec: str) -> Path | None:
    """The path ``spec`` names (``~`` expanded) when it exists or has path syntax; None for a hub id."""
    path = Path(spec).expanduser()
    return path if path.exists() or looks_like_path(spec) else None


def safe_name(name: str) -> str:
    """``name`` with anything but letters, digits, ``_``, ``.`` and ``-`` replaced (for cache folders)."""
    return re.sub(r"[^\w.-]+", "_", name) or "model"


__all__ = ["HUB_ID", "local_folder", "looks_like_path", "safe_name"]
