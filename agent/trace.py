"""Run trace: one JSON event per step in ``runs/<run_id>/trace.jsonl``, and a readable timeline."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

_write_lock = threading.Lock()


class TraceEvent(BaseModel):
    """What one step did: the tool it used, a summary of its input and output, the decision it
    took and why (where it took one), the model, how long it took, and any error."""

    run_id: str
    step: str
    tool: str | None = None
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    input: str | None = None
    output: str | None = None
    decision: str | None = None
    reason: str | None = None
    model: str | None = None
    ms: float = 0.0
    error: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def summarise(value: Any, limit: int = 240) -> str | None:
    """One line, at most ``limit`` characters, for trace input/output fields."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def append_event(run_dir: str | Path, event: TraceEvent) -> None:
    """Append one event to ``run_dir/trace.jsonl`` (the folder is created if needed)."""
    path = Path(run_dir) / "trace.jsonl"
    line = event.model_dump_json() + "\n"
    with _write_lock:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(line)


def step_times(timings_ms: dict[str, float] | None) -> str:
    """A run's step timings on one line: ``transcribe 3.16s, decide 1.09s, ...``."""
    return ", ".join(f"{k} {v / 1000:.2f}s" for k, v in (timings_ms or {}).items())


def read_trace(run_dir: str | Path) -> list[TraceEvent]:
    path = Path(run_dir) / "trace.jsonl"
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            events.append(TraceEvent.model_validate_json(line))
    return events


def format_event(event: TraceEvent) -> str:
    """One event as a few readable lines (the same format the CLI's --trace prints live)."""
    head = f"{event.ms / 1000:7.2f}s  {event.step}"
    if event.tool:
        head += f" [{event.tool}]"
    if event.model:
        head += f" ({event.model})"
    lines = [head]
    if event.decision:
        lines.append(f"           decision: {event.decision}" + (f" - {event.reason}" if event.reason else ""))
    elif event.reason:
        lines.append(f"           why: {event.reason}")
    if event.input:
        lines.append(f"           in:  {event.input}")
    if event.output:
        lines.append(f"           out: {event.output}")
    if event.error:
        lines.append(f"           ERROR: {event.error}")
    return "\n".join(lines)


def format_timeline(events: list[TraceEvent]) -> str:
    if not events:
        return "(empty trace)"
    total = sum(e.ms for e in events)
    head = f"run {events[0].run_id}  started {events[0].at}  {len(events)} steps  {total / 1000:.2f}s"
    return "\n".join([head, *(format_event(e) for e in events)])
