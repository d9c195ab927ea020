"""The seams between the agent and its tools: what a chat model, a speech recogniser, an image
generator and a Wikipedia backend must offer. Local models and OpenAI-compatible endpoints both
implement them; tests pass fakes that do. Every tool loads lazily: ``loaded`` says whether
``load()`` has run (a step that must load first records how long that took)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": "..."}


@runtime_checkable
class Loadable(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def loaded(self) -> bool: ...

    def load(self) -> Any: ...


@runtime_checkable
class ChatModel(Loadable, Protocol):
    """A chat LLM: a reply to ``messages`` (streamed through ``on_token``), and the probability
    of each of a few labels as the reply (the route decision)."""

    def chat(self, messages: Sequence[Message], *, max_new_tokens: int | None = None,
             on_token: Callable[[str], None] | None = None, prefix: str = "",
             stop: Callable[[str], bool] | None = None) -> str: ...

    def score_labels(self, messages: Sequence[Message], labels: Sequence[str], *,
                     prefix: str = "") -> dict[str, float]: ...


@runtime_checkable
class SpeechRecognizer(Loadable, Protocol):
    """Speech to text: ``audio`` is a path or 16 kHz mono float32 samples."""

    def transcribe(self, audio: Any) -> str: ...


NoImageKind = Literal["no_model", "failed", "blocked"]


class ImageResult(BaseModel):
    """What an image generator produced. ``generated=False`` means ``path`` is a "NO IMAGE
    GENERATED" card, ``notice`` says why (``missing`` says which kind of why), and ``steps`` is 0."""

    path: str
    generated: bool
    model: str | None
    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    ms: float
    notice: str | None = None  # e.g. "No picture was drawn: <reason>"
    reason: str | None = None  # why nothing was drawn, in a few words (None when generated)
    missing: NoImageKind | None = None  # which kind of why (None when generated)


@runtime_checkable
class ImageGenerator(Loadable, Protocol):
    """Text to image. Never raises for model problems: returns a labelled card instead.
    ``model`` is None when no image model is configured (nothing will be drawn)."""

    model: str | None

    def generate(self, prompt: str, out_path: str | Path, *, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 status: Callable[[str], None] | None = None) -> ImageResult: ...


class Passage(BaseModel):
    title: str
    url: str
    text: str
    score: float = 0.0


@runtime_checkable
class WikipediaBackend(Protocol):
    """Search: the ``k`` best passages for ``query`` (raises ``ToolError`` when unreachable).
    Backends that need loading (an index) also implement :class:`Loadable`."""

    name: str

    def search(self, query: str, k: int = 3) -> list[Passage]: ...


__all__ = ["ChatModel", "ImageGenerator", "ImageResult", "Loadable", "Message", "NoImageKind", "Passage",
           "SpeechRecognizer", "WikipediaBackend"]
