"""A conversation as LangChain messages (agent/messages.py): each turn is a HumanMessage and an
AIMessage with the turn's metadata; a chat client's ``{"messages": [...]}`` input is answered;
follow-ups are read from the messages; a checkpoint from before messages still resumes.

The graph runs with the real starter models (SmolLM2 135M, the offline Wikipedia leads) and no
image model: the turns are text only or end with a labelled card, a few seconds each.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.message import add_messages

from agent.agent import Agent
from agent.context import Context
from agent.graph import build_graph
from agent.messages import message_text, pending_question, trimmed, turn_messages, turns_of
from agent.settings import Settings
from agent.state import HISTORY_TURNS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MONA = "Who painted the Mona Lisa?"
DIED = "When did he die?"


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Agent:
    home = tmp_path_factory.mktemp("messages")
    return Agent(Settings(out_dir=home / "runs", memory_path=home / "conversations.sqlite", image_model=None))


def thread_values(agent: Agent, thread: str) -> dict:
    return agent.memory.graph().get_state({"configurable": {"thread_id": thread}}).values


def names_leonardo(text: str | None) -> bool:
    return "leonardo" in (text or "").lower()


@pytest.fixture(scope="module")
def two_turns(agent):
    thread = agent.new_thread_id()
    first = agent.ask(MONA, thread_id=thread, route="search", image=False)
    second = agent.ask(DIED, thread_id=thread, route="search", image=False)
    assert not first.error and not second.error, (first.error, second.error)
    return thread, first, second


def test_two_turns_are_human_and_ai_messages_with_the_turns_metadata(agent, two_turns):
    thread, first, second = two_turns
    messages = thread_values(agent, thread)["messages"]
    assert [type(m) for m in messages] == [HumanMessage, AIMessage, HumanMessage, AIMessage]
    assert [m.content for m in messages[::2]] == [MONA, DIED]
    assert [m.content for m in messages[1::2]] == [first.answer, second.answer]
    assert [m.id for m in messages] == [f"{first.run_id}-question", f"{first.run_id}-answer",
                                        f"{second.run_id}-question", f"{second.run_id}-answer"]
    for result, meta in ((first, messages[1].response_metadata), (second, messages[3].response_metadata)):
        assert meta["run_id"] == result.run_id and meta["route"] == "search"
        assert meta["sources"] == [dict(s) for s in result.sources] and meta["sources"]
        assert meta["image_path"] == result.image_path and meta["image_generated"] is False
    assert messages[1].response_metadata["standalone_question"] == MONA  # no rewrite: as asked
    assert messages[1].response_metadata["topic"] == "Mona Lisa"
    # every reader of the thread's turns reads them from the messages
    turns = agent.memory.history(thread)
    assert turns == turns_of(messages)
    assert [t["question"] for t in turns] == [MONA, second.standalone_question]
    assert names_leonardo(turns[0]["answer"])


def test_the_follow_up_is_rewritten_from_the_messages(agent, two_turns):
    thread, first, second = two_turns
    assert names_leonardo(first.answer), first.answer
    assert second.question == DIED
    assert names_leonardo(second.standalone_question), second.standalone_question
    assert thread_values(agent, thread)["messages"][3].response_metadata["standalone_question"] == \
        second.standalone_question


def test_a_thread_of_messages_alone_is_read_for_follow_ups(agent):
    """A thread whose only memory is messages written by someone else (no askdraw turn ran on it)."""
    thread = agent.new_thread_id()
    graph, config = agent.memory.graph(), {"configurable": {"thread_id": thread}}
    graph.update_state(config, {"messages": turn_messages("earlier", MONA, "Leonardo da Vinci. [1]", {
        "route": "search", "standalone_question": MONA, "topic": "Mona Lisa"})}, as_node="finish")
    result = agent.ask(DIED, thread_id=thread, route="search", image=False)
    assert names_leonardo(result.standalone_question), result.standalone_question
    assert [m.id for m in thread_values(agent, thread)["messages"]][:2] == ["earlier-question", "earlier-answer"]


def test_a_chat_clients_messages_input_is_answered(agent):
    """What Studio's chat view and Agent Chat UI send: only messages, no ``question``."""
    graph = build_graph(checkpointer=InMemorySaver())
    config, ctx = {"configurable": {"thread_id": "chat"}}, Context(tools=agent.tools)
    out = graph.invoke({"messages": [{"role": "user", "content": MONA, "id": "client-1"}]}, config, context=ctx)
    assert out["question"] == MONA and names_leonardo(out["answer"]), out
    assert [(m.type, m.id) for m in out["messages"]] == [("human", "client-1"), ("ai", f"{out['run_id']}-answer")]
    assert out["messages"][1].content == out["answer"]
    # the follow-up as a list of content parts (the text parts are the question)
    follow_up = {"role": "user", "content": [{"type": "text", "text": "When did"}, {"type": "text", "text": "he die?"}]}
    again = graph.invoke({"messages": [follow_up]}, config, context=ctx)
    assert again["question"] == DIED and again["run_id"] != out["run_id"]
    assert names_leonardo(again["standalone_question"]), again["standalone_question"]
    assert [m.type for m in again["messages"]] == ["human", "ai", "human", "ai"]  # the question not added twice
    assert again["messages"][3].response_metadata["standalone_question"] == again["standalone_question"]


def test_a_checkpoint_from_before_messages_resumes(agent):
    """conversations.sqlite written by an older askdraw: the turns are a ``history`` list of dicts."""
    thread = agent.new_thread_id()
    graph, config = agent.memory.graph(), {"configurable": {"thread_id": thread}}
    old = {"run_id": "20261101-120000-abcdef", "question": MONA, "route": "search",
           "answer": "Leonardo da Vinci.", "topic": "Mona Lisa"}
    graph.update_state(config, {"history": [old], "done_run": old["run_id"]}, as_node="finish")
    assert agent.memory.history(thread) == [old]
    result = agent.ask(DIED, thread_id=thread, route="search", image=False)
    assert names_leonardo(result.standalone_question), result.standalone_question
    values = thread_values(agent, thread)
    assert not values.get("history")  # moved into the messages: one record of the turns
    assert [m.type for m in values["messages"]] == ["human", "ai", "human", "ai"]
    assert [t["run_id"] for t in agent.memory.history(thread)] == [old["run_id"], result.run_id]
    assert agent.memory.history(thread)[0]["question"] == MONA


# -- the pieces, without models ---------------------------------------------------------------------

def test_message_text_reads_strings_and_text_parts():
    assert message_text(HumanMessage("Who?")) == "Who?"
    parts = [{"type": "text", "text": "What is "}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "this?"}]
    assert message_text(HumanMessage(parts)) == "What is this?"


def test_pending_question_is_the_unanswered_last_human_message():
    done = [HumanMessage(MONA, id="q1"), AIMessage("Leonardo.", id="a1")]
    assert pending_question(done, MONA) is None  # nothing new
    sent = [*done, HumanMessage(DIED, id="q2")]
    assert pending_question(sent, MONA).id == "q2"  # the state's question is the last turn's
    assert pending_question(sent, None).id == "q2"
    assert pending_question(sent, "Where is it kept?") is None  # a question sent with the run wins


def test_a_thread_keeps_its_last_turns_and_a_rerun_adds_nothing():
    messages: list = []
    for i in range(HISTORY_TURNS + 3):
        turn = turn_messages(f"run{i}", f"question {i}", f"answer {i}", {"route": "answer",
                                                                          "standalone_question": f"question {i}"})
        messages = add_messages(messages, [*turn, *trimmed(messages, turn)])
    turns = turns_of(messages)
    assert [t["run_id"] for t in turns] == [f"run{i}" for i in range(3, HISTORY_TURNS + 3)]
    assert len(messages) == 2 * HISTORY_TURNS and messages[0].id == "run3-question"
    again = turn_messages(f"run{HISTORY_TURNS + 2}", "question", "answer", {"route": "answer"})
    assert len(add_messages(messages, [*again, *trimmed(messages, again)])) == len(messages)
