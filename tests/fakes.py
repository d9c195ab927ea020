"""Test doubles (unit tests only; integration tests run the real models)."""

from __future__ import annotations

from collections.abc import Sequence
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

    def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="") -> str:
        self.calls.append(("chat", list(messages)))
        reply = self.replies.pop(0) if self.replies else ""
        if isinstance(reply, BaseException):
            raise reply
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
