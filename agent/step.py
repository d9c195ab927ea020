"""The node wrapper: :func:`step` times a node, writes its trace event and reports it to whoever
streams the run. Nothing else: the turn's ids and folder come from the graph's ``start_turn``
node, and notices and timings are merged by the reducers declared in :mod:`agent.state`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.context import Context
from agent.state import State
from agent.trace import StepRecord, TraceEvent, append_event
from tools.base import Loadable
from tools.common import Cancelled, ToolError, cancellable
from tools.text import exception_line


class StepError(RuntimeError):
    """A step failed in a way the run cannot recover from; the message is for the user."""


TRACE_NOT_WRITTEN = "the trace could not be written"


def _event(record: StepRecord, run_id: str, name: str, ms: float, load_ms: float,
           failure: BaseException | None) -> TraceEvent:
    fields = record.model_dump()
    if failure is not None:
        fields["error"] = error_message(failure)
    return TraceEvent(run_id=run_id, step=name, ms=ms, load_ms=load_ms or None, **fields)


def load_ms_of(record: StepRecord) -> float:
    """How long the step spent loading models (the ``load_<key>_ms`` that :func:`ensure_loaded`
    recorded), so that it is reported as loading, not as the step's own work."""
    return round(sum(v for k, v in record.data.items()
                     if k.startswith("load_") and k.endswith("_ms") and isinstance(v, (int, float))), 1)


Node = Callable[[State, Context, StepRecord], "dict[str, Any] | Command"]


def context_of(runtime: Runtime[Context] | None) -> Context:
    ctx = getattr(runtime, "context", None)
    return ctx if isinstance(ctx, Context) else Context()  # runtime.context is None without context=


def check_cancelled(ctx: Context) -> None:
    if ctx.cancel is not None and ctx.cancel.is_set():
        raise Cancelled("cancelled")


def step(name: str, tool: str | None = None) -> Callable[[Node], Callable]:
    """Wrap ``fn(state, ctx, record) -> update | Command`` as a graph node named ``name``."""

    def decorate(fn: Node) -> Callable:
        def node(state: State, runtime: Runtime[Context]) -> Any:
            ctx = context_of(runtime)
            check_cancelled(ctx)
            record = StepRecord(tool=tool)
            start = time.perf_counter()
            failure: BaseException | None = None
            out: Any = {}
            try:
                with cancellable(ctx.cancel):
                    out = fn(state, ctx, record)
            except BaseException as exc:  # recorded in the trace, then re-raised to stop the run
                failure = exc
            load_ms = min(load_ms_of(record), round((time.perf_counter() - start) * 1000, 1))
            ms = round((time.perf_counter() - start) * 1000 - load_ms, 1)  # the step's own work
            _publish(ctx, state["run_dir"], _event(record, state["run_id"], name, ms, load_ms, failure))
            if failure is not None:
                raise failure
            return _timed(out, name, ms, load_ms)

        # Not functools.wraps: LangGraph reads the signature to pass `runtime`, and __wrapped__
        # would show it fn's own (state, ctx, record) instead.
        node.__name__, node.__qualname__, node.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        return node

    return decorate


def _timed(out: Any, name: str, ms: float, load_ms: float = 0.0) -> Any:
    """The node's update plus its timing (summed by the ``timings_ms`` reducer): model loading
    as ``load``, apart from the step's own time."""
    timings = {"load": load_ms, name: ms} if load_ms else {name: ms}
    if isinstance(out, Command):
        return Command(goto=out.goto, update={**(out.update or {}), "timings_ms": timings})
    return {**(out or {}), "timings_ms": timings}


def _publish(ctx: Context, run_dir: str, event: TraceEvent) -> None:
    """Append the event to the run's trace and stream it (a trace that cannot be written is a
    notice: the run goes on)."""
    try:
        append_event(run_dir, event)
    except OSError as exc:
        ctx.progress(type="notice", kind="unsaved", step=event.step,
                     text=f"{TRACE_NOT_WRITTEN} to {run_dir}: {exc.strerror or exc}")
    try:
        writer = get_stream_writer()
    except RuntimeError:  # called outside a graph run
        return
    writer({"type": "step", "event": event.model_dump()})


def error_message(exc: BaseException) -> str:
    """One line for the user: our own errors as they are, others with their type."""
    if isinstance(exc, Cancelled):
        return "cancelled"
    return exception_line(exc, own=(ToolError, StepError, ValueError))


def ensure_loaded(tool: Any, record: StepRecord, key: str, ctx: Context | None = None, what: str | None = None) -> None:
    """Load a model now if it is not loaded yet, and record how long that took in the trace
    (``data.load_<key>_ms``), so a cold step's time is reported as loading (the ``load`` timing,
    the event's ``load_ms``), not as its work. With ``ctx``, a status "loading the <what>" says
    so while it loads."""
    if not isinstance(tool, Loadable) or tool.loaded:
        return
    timed_load(lambda: tool.load(), record, key, ctx, what)


def timed_load(load: Callable[[], Any], record: StepRecord, key: str, ctx: Context | None = None,
               what: str | None = None, *, text: str | None = None) -> Any:
    """Run ``load()`` (a model's one-time load or setup), its time recorded as
    ``data.load_<key>_ms``; with ``ctx``, a status says so (``text``, else "loading the <what>")."""
    if ctx is not None:
        ctx.progress(type="status", step=None, text=text or f"loading the {what or key}")
    start = time.perf_counter()
    try:
        return load()
    finally:
        record.data[f"load_{key}_ms"] = round(record.data.get(f"load_{key}_ms", 0) + (time.perf_counter() - start) * 1000, 1)
