"""Past conversations: ``askdraw history``'s listing and ``askdraw chat --resume [ID]``'s choice."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from agent.ui.render import clip


class ChatError(Exception):
    """A problem that ends ``askdraw chat`` before the session starts (e.g. an unknown --resume id)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def resolve_resume(agent: Any, wanted: str | None) -> dict[str, Any]:
    """The conversation ``--resume [ID]`` names: ``wanted`` (an id or a unique prefix of one), or
    the most recent one. Raises :class:`ChatError` (exit 2) when there is none such."""
    known = list(agent.conversations())
    if not known:
        raise ChatError("no conversations to resume yet (start one with `askdraw chat`)")
    if wanted is None:
        return known[0]
    exact = [c for c in known if c.get("thread_id") == wanted]
    matches = exact or [c for c in known if str(c.get("thread_id", "")).startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ChatError(f"no conversation '{wanted}' (askdraw history lists them)")
    raise ChatError(f"'{wanted}' matches {len(matches)} conversations; give more of the id (askdraw history)")


def past_turns(agent: Any, thread_id: str) -> tuple[list[dict[str, Any]], Any]:
    """A resumed conversation's remembered turns (question, route, answer, run_id; the last
    ``agent.state.HISTORY_TURNS``) and its last turn's :class:`~agent.agent.Result` read back from
    the run folder (None when that folder is gone), for the banner, ``/trace`` and ``/image``."""
    from agent.agent import load_result
    from agent.messages import thread_turns

    memory = getattr(agent, "memory", None)
    if memory is None or not hasattr(memory, "graph"):
        return [], None
    values = memory.graph().get_state({"configurable": {"thread_id": thread_id}}).values or {}
    turns = thread_turns(values)
    folders: list[Path] = []
    if values.get("done_dir"):  # the folder the last turn really wrote (whatever --out it had)
        folders.append(Path(values["done_dir"]))
    if turns and turns[-1].get("run_id"):
        folders.append(Path(agent.settings.out_dir) / str(turns[-1]["run_id"]))
    for folder in folders:
        try:
            return turns, load_result(folder)
        except (OSError, ValueError):
            continue
    return turns, None


def when(value: Any) -> str:
    """A conversation time as local 'YYYY-MM-DD HH:MM'."""
    if value is None or value == "":
        return "?"
    try:
        if isinstance(value, (int, float)):
            stamp = datetime.fromtimestamp(value)
        else:
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if stamp.tzinfo is not None:
                stamp = stamp.astimezone()
        return stamp.strftime("%Y-%m-%d %H:%M")
    except (ValueError, OSError, OverflowError):
        return str(value)[:16]


def history_lines(agent: Any) -> list[str]:
    """``askdraw history``: one line per past conversation, newest first."""
    known = list(agent.conversations())
    if not known:
        return ["no conversations yet"]
    width = max(len(str(c.get("thread_id", ""))) for c in known)
    lines = [f"{'id'.ljust(width)}  {'updated'.ljust(16)}  turns  first question"]
    for c in known:
        turns = c.get("turns")
        lines.append(f"{str(c.get('thread_id', '')).ljust(width)}  {when(c.get('updated_at')).ljust(16)}  "
                     f"{str(turns if turns is not None else '?').rjust(5)}  {clip(c.get('first_question'), 70)}")
    return lines


__all__ = ["ChatError", "resolve_resume", "past_turns", "history_lines", "when"]
