"""Run trace: one JSON event per step in ``runs/<run_id>/trace.jsonl``, and a readable timeline."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from tools.text import one_line

_write_lock = threading.Lock()


class StepRecord(BaseModel):
    """What a step tells the trace about its work: the tool it used, a summary of its input and
    output, the decision it took and why (where it took one), the model, and any error it
    recovered from. Nodes fill it in; a misspelt field raises instead of vanishing."""

    model_config = ConfigDict(validate_assignment=True)

    tool: str | None = None
    input: str | None = None
    output: str | None = None
    decision: str | None = None
    reason: str | None = None
    model: str | None = None
    error: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class TraceEvent(StepRecord):
    """One line of ``trace.jsonl``: a step's record, which run and step it belongs to, when it
    ended and how long it took."""

    run_id: str
    step: str
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    ms: float = 0.0  # the step's own time, without model loading
    load_ms: float | None = None  # models loading (or calibrating) on their first use during the step


def summarise(value: Any, limit: int = 240) -> str | None:
    """One line, at most ``limit`` characters, for trace input/output fields."""
    if value is None:
        return None
    return one_line(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str), limit)


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


UNFINISHED = "run did not finish: no result was saved (killed, crashed or still running)"


class SkippedLine(NamedTuple):
    """A line of ``trace.jsonl`` that is not a trace event: ``line`` (1-based) and why."""

    line: int
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.why}, skipped"


@dataclass
class TraceLog:
    """A run's trace as read from its folder, damage included.

    ``entries``: the file's lines in order, each a :class:`TraceEvent` or a :class:`SkippedLine`
    (a line cut off by a crash, bytes that are not UTF-8, JSON that is not an event);
    ``events`` and ``skipped`` are the two kinds apart. ``finished``: see :func:`run_finished`.
    """

    run_dir: Path
    entries: list[TraceEvent | SkippedLine] = field(default_factory=list)
    finished: bool = True

    @property
    def events(self) -> list[TraceEvent]:
        return [e for e in self.entries if isinstance(e, TraceEvent)]

    @property
    def skipped(self) -> list[SkippedLine]:
        return [e for e in self.entries if isinstance(e, SkippedLine)]


def run_finished(run_dir: str | Path) -> bool:
    """Whether a run finished: its ``result.json`` is there and is a JSON object.

    The run's status is computed from its folder, nothing is written to say it: ``Agent`` writes
    ``result.json`` (atomically: whole or not at all) as a run's very last act, after its last
    trace event, whether the run answered, failed or was cancelled. So a folder with a trace and
    no (readable) ``result.json`` is a run that never finished: it was killed, it crashed, or it
    is still running -- or its result could not be written (a full disk).
    """
    try:
        return isinstance(json.loads((Path(run_dir) / "result.json").read_bytes()), dict)
    except (OSError, ValueError):
        return False


def load_trace(run_dir: str | Path) -> TraceLog:
    """Read ``run_dir/trace.jsonl`` leniently: every line that is a valid event is kept, every
    other one (cut off mid-way by a crash, not UTF-8, not a trace event) becomes a
    :class:`SkippedLine`; it never raises for the file's content. Raises ``OSError`` when the
    file cannot be read at all (``FileNotFoundError`` when there is none)."""
    run_dir = Path(run_dir)
    log = TraceLog(run_dir=run_dir, finished=run_finished(run_dir))
    with (run_dir / "trace.jsonl").open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                log.entries.append(TraceEvent.model_validate_json(raw.decode("utf-8")))
            except ValueError:  # not UTF-8, not JSON, or JSON of the wrong shape (ValidationError)
                try:
                    json.loads(raw.decode("utf-8"))
                except ValueError:  # a line cut mid-way (even mid-character) or garbage bytes
                    log.entries.append(SkippedLine(number, "unreadable (cut off or corrupt)"))
                else:
                    log.entries.append(SkippedLine(number, "not a trace event (wrong fields)"))
    return log


def read_trace(run_dir: str | Path) -> list[TraceEvent]:
    """The valid events of ``run_dir/trace.jsonl`` (damaged lines are left out: :func:`load_trace`
    says which)."""
    return load_trace(run_dir).events


def format_event(event: TraceEvent) -> str:
    """One event as a few readable lines (the same format the CLI's --trace prints live)."""
    head = f"{event.ms / 1000:7.2f}s  {event.step}"
    if event.tool:
        head += f" [{event.tool}]"
    if event.model:
        head += f" ({event.model})"
    lines = [head]
    if event.load_ms:
        lines.append(f"           load: {event.load_ms / 1000:.2f}s (models loading on first use, not counted above)")
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


def format_timeline(trace: list[TraceEvent] | TraceLog) -> str:
    """A run's steps as a timeline under a header line. Given a :class:`TraceLog`, the header also
    counts skipped lines and says when the run did not finish, and each skipped line is marked
    where it was."""
    log = trace if isinstance(trace, TraceLog) else None
    entries: list[TraceEvent | SkippedLine] = list(trace.entries if log else trace)
    events = [e for e in entries if isinstance(e, TraceEvent)]
    skipped = len(entries) - len(events)
    if events:
        total = sum(e.ms + (e.load_ms or 0) for e in events)
        head = f"run {events[0].run_id}  started {events[0].at}  {len(events)} steps  {total / 1000:.2f}s"
        loading = sum(e.load_ms or 0 for e in events)
        if loading:
            head += f" (load {loading / 1000:.2f}s)"
    elif log:
        head = f"run {log.run_dir.name}  (no readable steps)" if skipped else f"run {log.run_dir.name}  (empty trace)"
    else:
        return "(empty trace)"
    if skipped:
        head += f"  {skipped} bad line{'' if skipped == 1 else 's'} skipped"
    lines = [head]
    if log and not log.finished:
        lines.append(UNFINISHED)
    lines += [format_event(e) if isinstance(e, TraceEvent) else f"{'?':>8}  {e}" for e in entries]
    return "\n".join(lines)
