"""Graph state: small, typed, msgpack-serialisable (paths, not images or arrays)."""

from __future__ import annotations

import operator
from typing import Annotated, Literal

from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

Route = Literal["search", "answer", "draw"]
ROUTES: tuple[Route, ...] = ("search", "answer", "draw")


def add_timings(left: dict | None, right: dict | None) -> dict:
    """Merge step timings; a step that ran more than once (search retries) adds up."""
    merged = dict(left or {})
    for key, value in (right or {}).items():
        merged[key] = round(merged.get(key, 0.0) + value, 1)
    return merged


class Source(TypedDict):
    title: str
    url: str
    snippet: str


class InputState(TypedDict, total=False):
    """What a caller passes in: a typed question, or a path to an audio file (or both)."""

    question: str
    audio_path: str
    run_id: str
    run_dir: str
    seed: int


class State(InputState, total=False):
    transcript: str
    notices: Annotated[list[str], operator.add]
    route: Route
    route_reason: str
    route_scores: dict[str, float]
    route_fallback: bool
    search_query: str
    search_attempts: int
    passages: list[dict]
    sources: list[Source]
    answer: str
    image_prompt: str
    image_path: str
    image_model: str | None
    image_generated: bool
    timings_ms: Annotated[dict[str, float], add_timings]
    errors: Annotated[list[str], operator.add]


class OutputState(TypedDict, total=False):
    question: str
    transcript: str
    route: Route
    route_reason: str
    search_query: str
    sources: list[Source]
    answer: str
    image_prompt: str
    image_path: str
    image_model: str | None
    image_generated: bool
    timings_ms: dict[str, float]
    notices: list[str]
    errors: list[str]
