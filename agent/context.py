"""Runtime context: the settings and the loaded tools a run uses (not part of the graph state).

Models live in a :class:`Toolbox`, typed by the protocols in :mod:`tools.base`; each is built
from the settings and loads lazily on first use, then is reused by every run that gets the same
toolbox (an :class:`agent.Agent` keeps one for its lifetime).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from langgraph.config import get_stream_writer

from agent.settings import Settings
from tools.base import ChatModel, ImageGenerator, SpeechRecognizer, WikipediaBackend

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from agent.router import Router

T = TypeVar("T")


def build_llm(s: Settings) -> ChatModel:
    if s.llm_endpoint:
        from tools.llm import EndpointLLM

        return EndpointLLM(s.llm_endpoint, s.llm_model, max_new_tokens=s.max_answer_tokens, **_endpoint_options(s))
    from tools.llm import local_llm

    return local_llm(s.llm, runtime=s.llm_runtime, max_new_tokens=s.max_answer_tokens, threads=s.llm_threads,
                     device=s.device, dtype=s.dtype)


def build_asr(s: Settings) -> SpeechRecognizer:
    if s.asr_endpoint:
        from tools.asr import EndpointASR

        return EndpointASR(s.asr_endpoint, s.asr_model, **_endpoint_options(s))
    from tools.asr import WhisperASR

    return WhisperASR(s.asr, threads=s.asr_threads, runtime=s.asr_runtime, device=s.device, dtype=s.dtype)


def build_wiki(s: Settings) -> WikipediaBackend:
    from tools.wikipedia import default_embedder, make_backend

    default_embedder(s.device, s.embeddings_runtime)  # the shared MiniLM follows the settings
    return make_backend(s.wiki, timeout=s.wiki_timeout)


def build_image(s: Settings) -> ImageGenerator:
    if s.image_endpoint:
        from tools.diffusion import EndpointImageGenerator

        return EndpointImageGenerator(s.image_endpoint, s.image_model, width=s.image_size, height=s.image_size,
                                      **_endpoint_options(s))
    from tools.diffusion import ImageGenerator as DiffusersGenerator

    return DiffusersGenerator(s.image_model, steps=s.image_steps, width=s.image_size, height=s.image_size,
                              device=s.device, dtype=s.dtype)


def _endpoint_options(settings: Settings) -> dict[str, Any]:
    return {"api_key_env": settings.endpoint_api_key_env, "timeout": settings.endpoint_timeout,
            "retries": settings.endpoint_retries}


class _Built(Generic[T]):
    """A Toolbox attribute built from the settings on first use (then kept)."""

    def __init__(self, build: Callable[[Toolbox], T]) -> None:
        self.build = build

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = name

    def __get__(self, box: Toolbox, owner: type | None = None) -> T:
        with box._lock:
            if self.key not in box._tools:
                box._tools[self.key] = self.build(box)
            return box._tools[self.key]


def _router(box: Toolbox) -> Router:
    from agent.router import Router
    from tools.wikipedia import default_embedder

    default_embedder(box.settings.device, box.settings.embeddings_runtime)
    # The LLM's label scores plus the embedding classifier (agent/route_model.npz), whose MiniLM
    # is the one the offline Wikipedia shares; both load on the first decision.
    return Router(box.llm, classifier=True, decide=box.settings.decide)


class Toolbox:
    """The tools of one agent, built from its settings on first use. Any of them can be passed
    in instead (tests, or a model shared by several agents)."""

    llm = _Built[ChatModel](lambda box: build_llm(box.settings))
    asr = _Built[SpeechRecognizer](lambda box: build_asr(box.settings))
    wiki = _Built[WikipediaBackend](lambda box: build_wiki(box.settings))
    image = _Built[ImageGenerator](lambda box: build_image(box.settings))
    router = _Built["Router"](_router)

    def __init__(self, settings: Settings, *, llm: ChatModel | BaseChatModel | None = None, asr: SpeechRecognizer | None = None,
                 wiki: WikipediaBackend | None = None, image: ImageGenerator | None = None,
                 router: Router | None = None) -> None:
        self.settings = settings
        if llm is not None:
            from tools.chat import as_llm

            llm = as_llm(llm)  # a LangChain chat model (ChatOpenAI, ChatOllama, ...) is wrapped
        given = {"llm": llm, "asr": asr, "wiki": wiki, "image": image, "router": router}
        self._tools: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self._lock = threading.RLock()

    def as_langchain_tools(self) -> list[Any]:
        """These tools as LangChain ``StructuredTool``s with typed arguments, on these models (see
        :mod:`agent.langchain_tools`), e.g. for ``create_react_agent(model, toolbox.as_langchain_tools())``."""
        from agent.langchain_tools import langchain_tools

        return langchain_tools(self)


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
        metadata={"description": "Also called with each progress event (for callers that run a node outside "
                           "a streamed graph run; a graph run sends them to stream_mode='custom')."},
    )

    @property
    def toolbox(self) -> Toolbox:
        return self.tools or default_toolbox()

    @property
    def settings(self) -> Settings:
        return self.toolbox.settings

    def progress(self, **event: Any) -> None:
        """Report fine-grained progress (answer tokens, status lines, image steps) through
        LangGraph's stream writer: ``stream_mode="custom"`` carries them to ``Agent.stream``, to
        ``graph.stream`` callers and to clients of a LangGraph server alike."""
        try:
            writer = get_stream_writer()
        except RuntimeError:  # not inside a graph run (a node called directly)
            writer = None
        if writer is not None:
            writer(event)
        if self.on_progress is not None:
            self.on_progress(event)
