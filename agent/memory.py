"""Conversation memory: LangGraph's SQLite checkpointer keeps each thread's state (its turns, as
messages: ``agent.messages``), and a small table beside it lists the threads for ``askdraw history``.

Three guarantees, each tested (tests/test_memory.py, tests/test_conversation_safety.py):

* **One writer per conversation.** A turn on a thread holds that thread's lock (a lock file
  beside the database, ``flock``-ed, so it also holds across processes and is released by the
  kernel when a process dies). A second turn on the same thread waits for the first, in this
  process or another, so no turn's update is lost. A chat session claims its thread for its whole
  life: a second ``askdraw chat --resume`` of it is refused with :class:`ThreadBusy`.
* **Bounded size.** The graph keeps only the last ``HISTORY_TURNS`` turns' messages (``agent.messages``), and
  after each turn only the thread's latest checkpoint is kept (SqliteSaver stores every step's
  whole state, so a thread's database would otherwise grow with the square of its turns).
* **A clear error for a broken file.** A database that is not SQLite or is damaged raises
  :class:`MemoryCorrupt`, one line naming the file and what to do, instead of a traceback.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from agent.messages import thread_turns
from tools.common import ToolError

try:  # POSIX; elsewhere the lock holds within one process only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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

SESSION, TURN = "chat session", "turn"


class MemoryCorrupt(ToolError):
    """The conversation database cannot be read (not SQLite, or damaged)."""

    def __init__(self, path: Path, exc: BaseException) -> None:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        super().__init__(f"the conversation database {path} is unreadable ({detail}); move it aside to start "
                         f"afresh (mv '{path}' '{path}.broken'), or set ASKDRAW_MEMORY_PATH to another file")
        self.path = path


class ThreadBusy(ToolError):
    """Another process (a chat session, or a turn that did not finish in time) holds the thread."""

    def __init__(self, thread_id: str, holder: str) -> None:
        super().__init__(f"conversation {thread_id} is in use by another askdraw process ({holder}); "
                         "close it first, or start a new conversation")
        self.thread_id, self.holder = thread_id, holder


class _Claim:
    """This process's hold on one thread: the open, locked lock file and a lock for its turns."""

    def __init__(self, fd: int | None, kind: str) -> None:
        self.fd, self.kind = fd, kind


class Memory:
    def __init__(self, path: str | Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.locks_dir = self.path.with_name(self.path.name + ".locks")
        # One connection shared by the checkpointer and the thread list, and one lock for both
        # (SqliteSaver's own): a commit of ours never lands in the middle of one of its writes.
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._saver = SqliteSaver(self._conn)
        with self._sql() as cur:
            cur.execute(_SCHEMA)
        self._graph: Any = None
        self._graph_lock = threading.Lock()
        self._claims: dict[str, _Claim] = {}
        self._claims_lock = threading.Lock()
        self._turn_locks: dict[str, threading.Lock] = {}

    # -- SQL ------------------------------------------------------------------------------------
    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Cursor]:
        """A cursor under the checkpointer's lock, committed at the end; a damaged file becomes
        :class:`MemoryCorrupt`."""
        try:
            with self._saver.cursor() as cur:
                yield cur
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            raise MemoryCorrupt(self.path, exc) from None

    def graph(self) -> Any:
        """The askdraw graph compiled with this SQLite checkpointer."""
        with self._graph_lock:
            if self._graph is None:
                from agent.graph import build_graph

                self._graph = build_graph(checkpointer=self._saver)
            return self._graph

    def record_turn(self, thread_id: str, result: Any) -> None:
        now = time.time()
        question = (result.question or "")[:200]
        with self._sql() as cur:
            cur.execute(
                "INSERT INTO askdraw_threads (thread_id, created_at, updated_at, turns, first_question, last_question)"
                " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(thread_id) DO UPDATE SET"
                " updated_at = excluded.updated_at, turns = turns + 1, last_question = excluded.last_question",
                (thread_id, now, now, question, question),
            )

    def compact(self, thread_id: str) -> None:
        """Keep only the thread's latest checkpoint (and its pending writes): the next turn reads
        nothing else, and older ones would make the file grow with every step of every turn."""
        with self._sql() as cur:
            row = cur.execute("SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ''",
                              (thread_id,)).fetchone()
            if not row or row[0] is None:
                return
            cur.execute("DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_id != ?", (thread_id, row[0]))
            cur.execute("DELETE FROM writes WHERE thread_id = ? AND checkpoint_id != ?", (thread_id, row[0]))

    def threads(self) -> list[dict[str, Any]]:
        with self._sql() as cur:
            rows = cur.execute(
                "SELECT thread_id, created_at, updated_at, turns, first_question, last_question"
                " FROM askdraw_threads ORDER BY updated_at DESC"
            ).fetchall()
        keys = ("thread_id", "created_at", "updated_at", "turns", "first_question", "last_question")
        return [dict(zip(keys, row)) for row in rows]

    def exists(self, thread_id: str) -> bool:
        with self._sql() as cur:
            row = cur.execute("SELECT 1 FROM askdraw_threads WHERE thread_id = ?", (thread_id,)).fetchone()
        return row is not None

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """The turns of a thread as the graph remembers them (run_id, question, route, answer, topic:
        ``agent.messages.turns_of`` its messages); the last ``agent.state.HISTORY_TURNS`` only."""
        try:
            state = self.graph().get_state({"configurable": {"thread_id": thread_id}})
        except sqlite3.DatabaseError as exc:
            raise MemoryCorrupt(self.path, exc) from None
        return thread_turns(state.values)

    # -- one writer per thread -------------------------------------------------------------------
    def _lock_path(self, thread_id: str) -> Path:
        return self.locks_dir / (hashlib.sha1(thread_id.encode("utf-8")).hexdigest()[:20] + ".lock")

    def _try_lock(self, thread_id: str, kind: str) -> tuple[int | None, str | None]:
        """Lock the thread's lock file: ``(fd, None)``, or ``(None, holder)`` when another process has it."""
        if fcntl is None:
            return None, None
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path(thread_id), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            finally:
                os.close(fd)
            return None, holder
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {kind}".encode(), 0)
        return fd, None

    def claim(self, thread_id: str) -> None:
        """Hold ``thread_id`` for this process until :meth:`release` (a chat session does, for its
        whole life). Raises :class:`ThreadBusy` when another process holds it."""
        with self._claims_lock:
            if thread_id in self._claims:
                return
            fd, holder = self._try_lock(thread_id, SESSION)
            if holder is not None:
                raise ThreadBusy(thread_id, holder)
            self._claims[thread_id] = _Claim(fd, SESSION)

    def release(self, thread_id: str) -> None:
        with self._claims_lock:
            claim = self._claims.pop(thread_id, None)
        if claim is not None and claim.fd is not None:
            os.close(claim.fd)  # closing the file releases the flock

    @contextmanager
    def turn(self, thread_id: str, *, cancel: threading.Event | None = None, timeout: float = 600.0,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold ``thread_id`` for one turn. Another turn on it (this process or another) is waited
        for, up to ``timeout`` seconds (``on_wait(holder)`` is called once when waiting starts);
        a thread claimed by another process's chat session raises :class:`ThreadBusy` at once."""
        from tools.common import Cancelled

        with self._claims_lock:
            local = self._turn_locks.setdefault(thread_id, threading.Lock())
        deadline = time.monotonic() + timeout
        told = False
        while not local.acquire(timeout=0.1):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if not told and on_wait is not None:
                on_wait("another turn in this process")
                told = True
            if time.monotonic() > deadline:
                raise ThreadBusy(thread_id, "another turn in this process")
        try:
            with self._claims_lock:
                held = thread_id in self._claims
            fd = None
            if not held:
                while True:
                    fd, holder = self._try_lock(thread_id, TURN)
                    if holder is None:
                        break
                    if SESSION in holder or time.monotonic() > deadline:
                        raise ThreadBusy(thread_id, holder)
                    if not told and on_wait is not None:
                        on_wait(holder)
                        told = True
                    if cancel is not None and cancel.wait(0.1):
                        raise Cancelled("cancelled")
                    time.sleep(0 if cancel is not None else 0.1)
            try:
                yield
            finally:
                if fd is not None:
                    os.close(fd)
        finally:
            local.release()

    def close(self) -> None:
        for thread_id in list(self._claims):
            self.release(thread_id)
        with self._saver.lock:
            self._conn.close()

    @asynccontextmanager
    async def agraph(self) -> AsyncIterator[Any]:
        """The askdraw graph compiled with LangGraph's async SQLite checkpointer on this same file,
        for ``ainvoke``/``astream`` (a thread goes on across :meth:`graph` and this). Its own
        connection, open while the block runs: ``async with memory.agraph() as graph: ...``."""
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        from agent.graph import build_graph

        async with AsyncSqliteSaver.from_conn_string(str(self.path)) as saver:
            yield build_graph(checkpointer=saver)
