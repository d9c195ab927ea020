"""``askdraw serve``: a local Gradio web app on the same agent as ``askdraw ask`` and ``chat``
(the page: :mod:`agent.ui.page`; its turns: :mod:`agent.ui.web`).

Files: the server serves no folder of ours (no ``allowed_paths``). Gradio serves only its cache
folder, which ``serve`` makes private to this server (a fresh ``mkdtemp`` folder, set as
``GRADIO_TEMP_DIR``): the audio uploads, and a copy of each turn's image under a random name
(``served_copy``), handed only to the session that asked. Run folders (question, answer, trace)
are never served. The folder is emptied of files older than an hour while the server runs and
removed when it stops (Ctrl-C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.ui.page import CSS, build_app, offline_theme

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    host = (host or "").strip().lower()
    return host in LOOPBACK or host.startswith("127.")


class ServerTemp:
    """The server's private Gradio temp folder: a fresh ``mkdtemp`` folder (mode 0700) under
    ``$GRADIO_TEMP_DIR`` or the system temp folder, set as ``GRADIO_TEMP_DIR`` (uploads, served
    copies) and ``GRADIO_EXAMPLES_CACHE`` (by default ``./.gradio/cached_examples``, which Gradio
    serves) while the server runs. ``remove()`` deletes it and restores the environment."""

    def __init__(self) -> None:
        parent = os.environ.get("GRADIO_TEMP_DIR") or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="askdraw-web-", dir=parent)).resolve()
        self._set = {"GRADIO_TEMP_DIR": str(self.path), "GRADIO_EXAMPLES_CACHE": str(self.path / "cached_examples")}
        self._saved = {key: os.environ.get(key) for key in self._set}
        os.environ.update(self._set)
        self._removed = False

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        for key, value in self._saved.items():
            if os.environ.get(key) != self._set[key]:
                continue  # changed since: leave it
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path.exists():  # a file written while it was being removed
            shutil.rmtree(self.path, ignore_errors=True)


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
# Largest upload: a 10-minute recording (the audio limit) as 48 kHz stereo 16-bit WAV is 115 MB.
MAX_UPLOAD = "200mb"


def _stop_on_signals() -> dict[int, Any]:
    """In the main thread: SIGINT, SIGTERM and SIGHUP (unless ignored, e.g. under nohup) raise
    KeyboardInterrupt, so the server closes and removes its temp folder. Returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None or (name == "SIGHUP" and signal.getsignal(sig) == signal.SIG_IGN):
            continue
        old[sig] = signal.signal(sig, stop)
    return old


def _restore_signals(old: dict[int, Any], *, ignore: bool = False) -> None:
    """Put back the handlers ``old`` (``ignore``: ignore those signals instead, while closing)."""
    for sig, handler in old.items():
        signal.signal(sig, signal.SIG_IGN if ignore else (handler if handler is not None else signal.SIG_DFL))


def _launch(demo: Any, host: str, port: int, temp: ServerTemp) -> str:
    """Start ``demo`` listening on ``host:port``; returns its URL."""
    # No allowed_paths: Gradio then serves its (private) cache folder only. Deep links would
    # write sessions' state into it as state.json: never serve those.
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                quiet=True, show_error=True, blocked_paths=[str(temp.path / "deep_links")], ssr_mode=False,
                max_file_size=MAX_UPLOAD,
                pwa=False, mcp_server=False, footer_links=["api"], css=CSS, theme=offline_theme())
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{demo.server_port}/"


def _remove_temp_on_close(demo: Any, temp: ServerTemp) -> Any:
    """``demo`` whose ``close()`` also removes ``temp`` (for a server that does not block)."""
    close = demo.close

    def close_and_remove_temp(verbose: bool = True) -> None:
        try:
            close(verbose)
        finally:
            temp.remove()

    demo.close = close_and_remove_temp
    return demo


def _run_until_stopped(demo: Any, temp: ServerTemp, old_handlers: dict[int, Any]) -> None:
    """Serve until Ctrl-C, SIGTERM or SIGHUP; then close and remove ``temp``."""
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP
        pass
    finally:
        _restore_signals(old_handlers, ignore=True)  # a second Ctrl-C does not cut the clean-up short
        try:
            demo.close()
        finally:
            temp.remove()
            _restore_signals(old_handlers)


def serve(host: str = "127.0.0.1", port: int = 7860, settings: Any = None, *, agent: Any = None,
          allow_remote: bool = False, preload: bool = True, block: bool = True,
          on_ready: Any = None) -> Any:
    """Run the web app on ``host:port``. A non-loopback ``host`` needs ``allow_remote=True``
    (ValueError otherwise). ``on_ready(url)`` is called once the server listens.

    The server gets a private temp folder (``ServerTemp``), removed when it stops: on Ctrl-C,
    SIGTERM or SIGHUP when ``block``, else by the returned app's ``close()``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"--host {host} would accept connections from other machines; add --allow-remote to allow it")
    if agent is None:
        from agent.agent import Agent

        agent = Agent(settings)
    if preload:
        try:
            agent.preload()
        except Exception:  # the first turn reports the real error in the page
            pass
    old_handlers = _stop_on_signals() if block else {}
    temp = ServerTemp()
    try:
        demo = build_app(agent)
        url = _launch(demo, host, port, temp)
        if on_ready is not None:
            on_ready(url)
    except BaseException:
        temp.remove()
        _restore_signals(old_handlers)
        raise
    if not block:
        return _remove_temp_on_close(demo, temp)
    _run_until_stopped(demo, temp, old_handlers)
    return demo


__all__ = ["serve", "is_loopback", "ServerTemp"]
