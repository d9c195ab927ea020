"""The chat's models loading in the background while the first question is typed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from agent.ui.render import clip
from tools.common import signals_to_main_thread


class Preload:
    """``agent.preload()`` in a thread (:meth:`start`); :meth:`report` says once how it went."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.thread: threading.Thread | None = None
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.reported = False

    def start(self) -> None:
        def load() -> None:
            signals_to_main_thread()
            try:
                self.result = dict(self.agent.preload() or {})
            except BaseException as exc:  # shown on the first turn; the turn then reports the real error
                self.error = exc

        self.thread = threading.Thread(target=load, name="askdraw-preload", daemon=True)
        self.thread.start()

    def report(self, say: Callable[..., None], waited: float) -> None:
        """Once the loading is over (``waited`` seconds for it): the time each model took, or why
        they could not be loaded up front."""
        self.reported = True
        if self.error is not None:
            say(f"note: could not load the models up front ({clip(self.error, 200)})", "yellow")
        elif self.result:
            parts = ", ".join(f"{name} {float(ms) / 1000:.1f}s" for name, ms in self.result.items())
            say(f"models loaded ({parts})" + (f"; waited {waited:.1f}s" if waited >= 0.1 else ""), "dim")
