"""Where every evaluation writes its results, and how ``--json`` prints the headline."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, summary: dict, headline: dict | None = None, *, as_json: bool = False,
                 folder: Path | None = None) -> Path:
    """Write ``summary`` to ``bench/results/<name>.json`` (or ``folder``); with ``as_json``, print
    only ``headline`` (default: the summary) as one JSON object on stdout. Returns the file's path."""
    out = (folder or RESULTS) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if as_json:
        print(json.dumps(summary if headline is None else headline))
    return out


def run_suffix(llm: str | None, runtime: str = "auto") -> str:
    """Results-file suffix for an evaluation run on another LLM or runtime than the default
    (``_gemma3-270m``, ``_llamacpp``, ``_transformers``), so runs side by side keep their own files."""
    import re

    suffix = ""
    if llm:
        suffix += "_" + re.sub(r"[^\w.-]+", "_", llm.split(":")[-1].rsplit("/", 1)[-1].removesuffix(".gguf"))
    if runtime and runtime != "auto":
        suffix += "_" + runtime.replace(".", "")
    return suffix
