"""Runtime context: the settings and the loaded tools a run uses (not part of the graph state).

Models live in a :class:`Toolbox`; each loads lazily on first use and is then reused by every
run that gets the same toolbox (an :class:`agent.Agent` keeps one for its lifetime).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.settings import Settings


class Toolbox:
    """The tools of one agent, built from its settings. Any of them can be passed in (tests)."""

    def __init__(self, settings: Settings, *, llm: Any = None, asr: Any = None, wiki: Any = None,
                 image: Any = None) -> None:
        self.settings = settings
        self._llm, self._asr, self._wiki, self._image = llm, asr, wiki, image
        self._router: Any = None
        self._lock = threading.RLock()

    @property
    def llm(self) -> Any:
        with self._lock:
            if self._llm is None:
                s = self.settings
                if s.llm_endpoint:
                    from tools.llm import EndpointLLM

                    self._llm = EndpointLLM(s.llm_endpoint, s.llm_model, max_new_tokens=s.max_answer_tokens,
                                            **_endpoint_options(s))
                else:
                    from tools.llm import LocalLLM

                    self._llm = LocalLLM(s.llm, max_new_tokens=s.max_answer_tokens)
            return self._llm

    @property
    def router(self) -> Any:
        with self._lock:
            if self._router is None:
                from agent.router import Router

                self._router = Router(self.llm)
            return self._router

    @property
    def asr(self) -> Any:
        with self._lock:
            if self._asr is None:
                s = self.settings
                if s.asr_endpoint:
                    from tools.asr import EndpointASR

                    self._asr = EndpointASR(s.asr_endpoint, s.asr_model, **_endpoint_options(s))
                else:
                    from tools.asr import WhisperASR

                    self._asr = WhisperASR(s.asr)
            return self._asr

    @property
    def wiki(self) -> Any:
        with self._lock:
            if self._wiki is None:
                from tools.wikipedia import make_backend

                self._wiki = make_backend(self.settings.wiki, timeout=self.settings.wiki_timeout)
            return self._wiki

    @property
    def image(self) -> Any:
        with self._lock:
            if self._image is None:
                from tools.diffusion import ImageGenerator

                s = self.settings
                if s.image_endpoint:
                    from tools.diffusion import EndpointImageGenerator

                    self._image = EndpointImageGenerator(s.image_endpoint, s.image_model, width=s.image_size,
                                                         height=s.image_size, **_endpoint_options(s))
                else:
                    self._image = ImageGenerator(s.image_model, steps=s.image_steps, width=s.image_size,
                                                 height=s.image_size)
            return self._image


def _endpoint_options(settings: Settings) -> dict[str, Any]:
    return {"api_key_env": settings.endpoint_api_key_env, "timeout": settings.endpoint_timeout,
            "retries": settings.endpoint_retries}


_default_toolbox: Toolbox | None = None
_default_lock = threading.Lock()


def default_toolbox() -> Toolbox:
    """Tools for runs started without a context (e.g. by LangGraph's server), from env settings."""
    global _default_toolbox
    with _default_lock:
        if _default_toolbox is None:
            _default_toolbox = Toolbox(Settings())
        return _default_toolbox


@dataclass(kw_only=True)
class Context:
    """What every node may use besides the state."""

    tools: Toolbox | None = field(default=None, metadata={"description": "Loaded models and backends."})
    cancel: threading.Event | None = field(
        default=None, metadata={"description": "Set to cancel the running turn (checked between steps and tokens)."}
    )
    on_progress: Callable[[dict[str, Any]], None] | None = field(
        default=None,
        metadata={"description": "Called with fine-grained progress: answer tokens, image steps."},
    )

    @property
    def toolbox(self) -> Toolbox:
        return self.tools or default_toolbox()

    @property
    def settings(self) -> Settings:
        return self.toolbox.settings

    def progress(self, **event: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(event)
