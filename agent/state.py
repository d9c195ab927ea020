"""Graph state: small, typed, msgpack-serialisable (paths, not images or arrays)."""

from __future__ import annotations

from typing import Annotated, Literal

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12


Route = Literal["search", "answer", "draw"]
ROUTES: tuple[Route, ...] = ("search", "answer", "draw")
NoImageKind = Literal["no_model", "failed", "blocked", "unsaved"]  # "unsaved": not even the card could be written


def no_image_notice(reason: str) -> str:
    """The result notice for a turn without a picture (built here only, so it can be told apart)."""
    return f"No image was generated: {reason}"


def add_timings(left: dict | None, right: dict | None) -> dict:
    """Merge step timings; a step that ran more than once (search retries) adds up."""
    merged = dict(left or {})
    for key, value in (right or {}).items():
        merged[key] = round(merged.get(key, 0.0) + value, 1)
    return merged


HISTORY_TURNS = 12  # turns a thread's messages keep: follow-ups read the last 3; older ones only cost space


def add_notices(left: list[str] | None, right: list[str] | None) -> list[str]:
    """A turn's notices, in the order its steps raised them."""
    return [*(left or []), *(right or [])]


class Source(TypedDict):
    title: str
    url: str
    snippet: str


class InputState(TypedDict, total=False):
    """What a caller passes in: a typed question, or a path to an audio file (or both); or, as a
    chat client (Studio, Agent Chat UI) does, ``messages`` ending with the user's message."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]  # the conversation (agent.messages)
    audio_path: str
    run_id: str
    run_dir: str
    seed: int
    force_route: Route | None  # skip the decision and take this route (None: the LLM decides)
    want_image: bool | None  # False: text only; True: always a picture; None: a picture where one helps


class State(InputState, total=False):
    # Per-turn fields: reset by the graph's first node (agent.nodes.start_turn), so a
    # conversation thread's checkpoint never leaks one turn's results into the next.
    transcript: str | None
    standalone_question: str | None
    notices: Annotated[list[str], add_notices]
    route: Route | None
    route_reason: str | None
    route_scores: dict[str, float]
    route_fallback: bool
    search_query: str | None
    search_attempts: int
    passages: list[dict]
    sources: list[Source]
    answer: str | None  # as shown: the answer text, then its citation line (if any)
    answer_body: str | None  # the answer text alone
    citation: str | None  # 'Source: Wikipedia, "Title": "quote"' (None: no source to name)
    answer_found: bool | None  # False: the search route found no answer in the passages (None: not searched)
    image_prompt: str | None
    image_path: str | None
    image_model: str | None
    image_generated: bool
    no_image_kind: NoImageKind | None  # why there is no picture: no_model | failed | blocked | unsaved
    no_image_reason: str | None
    image_skipped_reason: str | None  # why the search/answer route drew no picture (a picture would not help)
    source_image: dict | None  # the top source's own picture (tools.source_image.SourceImage, dumped)
    timings_ms: Annotated[dict[str, float], add_timings]  # ms per step (a retried step adds up)
    # Kept across the turns of a conversation thread.
    turn_of: str  # run_id of the turn the per-turn fields belong to
    done_run: str | None  # run_id / run_dir of the last finished turn (a new turn gets new ones)
    done_dir: str | None
    asked_message: str | None  # id of the chat client's human message this turn answers (None: finish adds one)
    history: list[dict] | None  # before messages: the turns as dicts; the next turn moves them into messages


TURN_RESET: dict = {
    "transcript": None, "standalone_question": None, "notices": [], "route": None, "route_reason": None,
    "route_scores": {}, "route_fallback": False, "search_query": None, "search_attempts": 0, "passages": [],
    "sources": [], "answer": None, "answer_body": None, "citation": None, "answer_found": None,
    "image_prompt": None, "image_path": None, "image_model": None, "image_generated": False,
    "no_image_kind": None, "no_image_reason": None, "image_skipped_reason": None, "source_image": None,
    "timings_ms": {},
}


class OutputState(TypedDict, total=False):
    run_id: str
    run_dir: str  # holds trace.jsonl and the image
    question: str
    transcript: str
    route: Route
    route_reason: str
    search_query: str
    sources: list[Source]
    answer: str
    citation: str | None
    answer_found: bool | None
    image_prompt: str
    image_path: str
    image_model: str | None
    image_generated: bool
    no_image_kind: str | None
    no_image_reason: str | None
    image_skipped_reason: str | None
    source_image: dict | None
    timings_ms: dict[str, float]
    notices: list[str]
    standalone_question: str | None
    messages: Annotated[list[AnyMessage], add_messages]  # the whole conversation, this turn last


def this_turn(values: dict, run_id: str) -> dict:
    """The fields of a streamed state that belong to turn ``run_id``: all of them once
    ``start_turn`` has opened it; before that (a thread's checkpoint still holds the previous
    turn's results) only what the caller sent."""
    if values.get("turn_of") == run_id:
        return values
    return {k: values.get(k) for k in ("question", "audio_path")}
