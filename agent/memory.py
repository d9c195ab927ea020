"""Conversation memory: LangGraph's SQLite checkpointer keeps each thread's state (its history
of turns), and a small table beside it lists the threads for ``askdraw history``."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS askdraw_threads (
    thread_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    first_question TEXT,
    last_question TEXT
)
"""


class Memory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the checkpointer and the thread list; SqliteSaver serialises
        # its own use with a lock, and so does this class.
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False)
        self._conn.execute(_SCHEMA)
        self._conn.commit()
        self._lock = threading.Lock()
        self._graph: Any = None

    def graph(self) -> Any:
        """The askdraw graph compiled with this SQLite checkpointer."""
        with self._lock:
            if self._graph is None:
                from langgraph.checkpoint.sqlite import SqliteSaver

                from agent.graph import build_graph

                self._graph = build_graph(checkpointer=SqliteSaver(self._conn))
            return self._graph

    def record_turn(self, thread_id: str, result: Any) -> None:
        now = time.time()
        question = (result.question or "")[:200]
        with self._lock:
            self._conn.execute(
                "INSERT INTO askdraw_threads (thread_id, created_at, updated_at, turns, first_question, last_question)"
                " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(thread_id) DO UPDATE SET"
                " updated_at = excluded.updated_at, turns = turns + 1, last_question = excluded.last_question",
                (thread_id, now, now, question, question),
            )
            self._conn.commit()

    def threads(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT thread_id, created_at, updated_at, turns, first_question, last_question"
                " FROM askdraw_threads ORDER BY updated_at DESC"
            ).fetchall()
        keys = ("thread_id", "created_at", "updated_at", "turns", "first_question", "last_question")
        return [dict(zip(keys, row)) for row in rows]

    def exists(self, thread_id: str) -> bool:
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM askdraw_threads WHERE thread_id = ?", (thread_id,)).fetchone()
        return row is not None

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """The turns of a thread as the graph remembers them (question, route, answer, topic)."""
        state = self.graph().get_state({"configurable": {"thread_id": thread_id}})
        return list((state.values or {}).get("history") or [])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
