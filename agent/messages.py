"""A conversation thread as LangChain messages: the state's ``messages`` channel (``add_messages``),
which LangGraph Studio's chat view and Agent Chat UI show, is the one record of a thread's turns.

Each finished turn is a ``HumanMessage`` (what was asked, or heard) and an ``AIMessage`` (the
answer as shown, with its citation line), with ids derived from the run id (``<run_id>-question``,
``<run_id>-answer``), so re-running a turn's last step replaces its messages instead of adding
them again. A chat client's own human message (input ``{"messages": [...]}``) is kept as sent
and not added a second time. The answer's ``response_metadata`` holds what the turn knows:

    run_id, route, standalone_question (the question as answered: a follow-up's standalone
    rewrite, else as asked), topic, sources ([{title, url, snippet}]), image_path,
    image_generated, source_image (the path of the top source's own picture, or None)

``response_metadata`` rather than ``additional_kwargs``: providers' adapters send
``additional_kwargs`` back to a model when messages are replayed; response metadata is never sent.

:func:`turns_of` turns the answers back into the turn dicts the follow-up rewriting, ``askdraw
chat --resume`` and the web page read (``{run_id, question, route, answer, topic}``). A thread
keeps its last ``HISTORY_TURNS`` turns (older messages are removed when a turn finishes).
Checkpoints written before messages (a ``history`` list of those dicts) are read as they are
and moved into messages by the next turn (:func:`legacy_messages`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, convert_to_messages

from agent.state import HISTORY_TURNS
ANSWER_CHARS = 500  # a turn dict's answer: the answer's first paragraph, cut to this


def message_text(message: BaseMessage) -> str:
    """The text of a message: its string content, or the text parts of a list content."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = [part if isinstance(part, str) else part.get("text", "") for part in content
             if isinstance(part, str) or (isinstance(part, Mapping) and part.get("type") == "text")]
    return " ".join(p.strip() for p in parts if p and p.strip())


def as_messages(messages: Iterable[Any] | None) -> list[BaseMessage]:
    """Messages as objects (a LangGraph server's JSON gives dicts)."""
    return convert_to_messages(list(messages or []))


def is_turn(message: BaseMessage) -> bool:
    """Is this an askdraw answer (an AI message a finished turn wrote)?"""
    return message.type == "ai" and bool(message.response_metadata.get("run_id"))


def turns_of(messages: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The finished turns of a thread's messages, oldest first, as ``{run_id, question, route,
    answer, topic}`` dicts (the follow-up rewriting reads the last ones)."""
    turns = []
    for message in as_messages(messages):
        if not is_turn(message):
            continue
        meta = message.response_metadata
        turns.append({
            "run_id": meta["run_id"],
            "question": meta.get("standalone_question") or "",
            "route": meta.get("route"),
            "answer": message_text(message).split("\n\n")[0][:ANSWER_CHARS],
            "topic": meta.get("topic") or "",
        })
    return turns


def thread_turns(values: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """A thread state's remembered turns: from its messages, or, in a checkpoint written before
    messages, its ``history``."""
    values = values or {}
    return turns_of(values.get("messages")) or list(values.get("history") or [])


def pending_question(messages: Sequence[BaseMessage], question: str | None) -> BaseMessage | None:
    """The human message a chat client sent for this turn: the last message, when it is a human
    one no turn answered yet. A ``question`` sent with the run wins over it, unless that is only
    the previous turn's question still in the thread's state (a text some earlier human message has)."""
    if not messages or messages[-1].type != "human":
        return None
    if question and " ".join(question.split()) not in {" ".join(message_text(m).split())
                                                         for m in messages[:-1] if m.type == "human"}:
        return None
    return messages[-1]


def turn_messages(run_id: str, asked: str | None, answer: str, metadata: dict[str, Any]) -> list[BaseMessage]:
    """A finished turn's messages: the question (None: the chat client's own message is already
    in the thread) and the answer with the turn's metadata."""
    said: list[BaseMessage] = [] if asked is None else [HumanMessage(content=asked, id=f"{run_id}-question")]
    return [*said, AIMessage(content=answer, id=f"{run_id}-answer", response_metadata={"run_id": run_id, **metadata})]


def trimmed(messages: Sequence[BaseMessage], added: Sequence[BaseMessage],
            keep: int = HISTORY_TURNS) -> list[RemoveMessage]:
    """Removals that keep the last ``keep`` turns once ``added`` joins ``messages``: everything up
    to the answer of the newest turn that falls out (so a thread's checkpoint stays bounded)."""
    known = {m.id for m in messages}
    everything = [*messages, *(m for m in added if m.id not in known)]
    answers = [i for i, m in enumerate(everything) if is_turn(m)]
    if len(answers) <= keep:
        return []
    cut = answers[-keep - 1] + 1
    return [RemoveMessage(id=m.id) for m in everything[:cut] if m.id in known]


def legacy_messages(history: Iterable[Mapping[str, Any]]) -> list[BaseMessage]:
    """A pre-messages checkpoint's ``history`` dicts as messages (question, answer and topic are all
    such a dict has)."""
    out: list[BaseMessage] = []
    for turn in history:
        run_id = str(turn.get("run_id") or f"legacy-{len(out) // 2}")
        out += turn_messages(run_id, turn.get("question") or "", turn.get("answer") or "",
                             {"route": turn.get("route"), "standalone_question": turn.get("question") or "",
                              "topic": turn.get("topic") or ""})
    return out


__all__ = ["message_text", "as_messages", "turns_of", "thread_turns", "pending_question",
           "turn_messages", "trimmed", "legacy_messages"]
