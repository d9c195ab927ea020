"""Test doubles (unit tests only; integration tests run the real models)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

Message = dict[str, str]


class ScriptedLLM:
    """A stand-in LLM for unit tests: replies come from a script, not a model.

    ``replies`` are returned by :meth:`chat` in order; ``labels`` (strings) by :meth:`score_labels`
    as certainty for that label. A reply that is an Exception instance is raised.
    """

    def __init__(self, replies: Sequence[Any] = (), labels: Sequence[Any] = (), name: str = "scripted") -> None:
        self.replies = list(replies)
        self.labels = list(labels)
        self.name = name
        self.calls: list[tuple[str, list[Message]]] = []
        self.loaded = True

    def load(self) -> None:
        pass

    def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None) -> str:
        self.calls.append(("chat", list(messages)))
        reply = self.replies.pop(0) if self.replies else ""
        if isinstance(reply, BaseException):
            raise reply
        if stop is not None:  # like generation: the reply ends at the first point stop() accepts
            for end in range(1, len(reply) + 1):
                if stop(reply[:end]):
                    reply = reply[:end]
                    break
        if on_token:
            for word in reply.split(" "):
                on_token(word + " ")
        return reply

    def score_labels(self, messages, labels, *, prefix="") -> dict[str, float]:
        self.calls.append(("score", list(messages)))
        choice = self.labels.pop(0) if self.labels else labels[0]
        if isinstance(choice, BaseException):
            raise choice
        if isinstance(choice, dict):
            return choice
        return {label: (1.0 if label == choice else 0.0) for label in labels}


class FakeImage:
    """A stand-in image model for graph tests: it writes a flat grey PNG and says it generated
    it. Unit tests only; tests/test_diffusion.py runs a real diffusers pipeline."""

    def __init__(self, model: str = "fake-image-model") -> None:
        self.model = self.name = model
        self.prompts: list[str] = []

    def generate(self, prompt, out_path, *, seed=0, progress=None, status=None):
        from PIL import Image

        from tools.base import ImageResult

        self.prompts.append(prompt)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (128, 128, 128)).save(out_path)
        return ImageResult(path=str(out_path), generated=True, model=self.model, prompt=prompt, seed=seed,
                           steps=1, width=64, height=64, ms=1.0)
