"""Conversation threads: follow-ups in context, per-turn state, SQLite persistence, cancel."""

from __future__ import annotations

import threading

from agent.agent import Agent
from agent.context import Toolbox
from agent.followup import needs_context, standalone_question
from agent.settings import Settings
from agent.trace import read_trace
from tests.fakes import ScriptedLLM
from tests.test_graph import FakeWiki
from tools.diffusion import ImageGenerator
from tools.wikipedia import Passage

TURTLE = Passage(title="Sea turtle", url="https://en.wikipedia.org/wiki/Sea_turtle",
                 text="Sea turtles can live for 50 years or more. Sea turtles eat seagrass, jellyfish and sponges.")


# The router calibrates once per agent, scoring content-free inputs after the first decision.
UNBIASED = [{"search": 1 / 3, "answer": 1 / 3, "draw": 1 / 3}] * 3


def make_agent(tmp_path, llm, wiki=None):
    settings = Settings(out_dir=tmp_path / "runs", memory_path=tmp_path / "memory.sqlite")
    return Agent(settings, tools=Toolbox(settings, llm=llm, wiki=wiki or FakeWiki([TURTLE]),
                                         image=ImageGenerator(None)))


def test_needs_context():
    assert needs_context("And what do they eat?")
    assert needs_context("What about in winter?")
    assert not needs_context("How long do sea turtles live?")


def test_follow_up_is_rewritten_with_the_earlier_topic(tmp_path):
    llm = ScriptedLLM(
        replies=["Sea turtles can live for 50 years or more.", "sea turtles, photo",   # turn 1: answer, image prompt
                 # turn 2: the rule puts the topic in place of "they" (no LLM rewrite asked)
                 "Sea turtles eat seagrass, jellyfish and sponges.", "sea turtles eating, photo"],
        labels=["search", "search"],
    )
    agent = make_agent(tmp_path, llm)
    thread = agent.new_thread_id()
    first = agent.ask(text="How long do sea turtles live?", thread_id=thread)
    second = agent.ask(text="And what do they eat?", thread_id=thread)
    assert first.standalone_question is None and first.thread_id == thread
    assert second.standalone_question == "What do sea turtles eat?"
    assert second.question == "And what do they eat?"
    assert second.search_query.lower().startswith("what do sea turtles eat")
    decide = next(e for e in read_trace(second.trace_path.rsplit("/", 1)[0]) if e.step == "decide")
    assert decide.data["standalone_question"] == "What do sea turtles eat?"
    assert decide.data["standalone_how"] == "by rule, without the LLM: 'they' replaced by 'sea turtles'"
    assert "standalone" in decide.input
    assert not any("Follow-up:" in str(messages) for _, messages in llm.calls)  # the LLM was not asked to rewrite
    # per-turn fields are this turn's own
    assert second.timings_ms.keys() >= {"decide", "search_wikipedia", "answer"}
    assert "jellyfish" in second.answer


def test_unusable_llm_rewrite_falls_back_to_the_topic(tmp_path):
    # "And why?" matches no rule, so the LLM is asked; its rewrite changes the question word
    # (the search route's answers are read from the passage: the only LLM reply is the rewrite)
    llm = ScriptedLLM(replies=["What do sea turtles eat?"],  # asks 'what', not 'why': rejected
                      labels=["search", "search"])
    agent = make_agent(tmp_path, llm)
    thread = agent.new_thread_id()
    agent.ask(text="How long do sea turtles live?", thread_id=thread)
    second = agent.ask(text="And why?", thread_id=thread)
    assert second.standalone_question == "Why (about sea turtles)?"  # the topic as the user worded it
    decide = next(e for e in read_trace(second.trace_path.rsplit("/", 1)[0]) if e.step == "decide")
    assert "rejected: it asks 'what' where the follow-up asks 'why'" in decide.data["standalone_how"]


def test_a_failed_turn_does_not_show_the_previous_answer(tmp_path):
    # the search route's answer is read from the passages (no LLM reply); the direct answer is empty
    llm = ScriptedLLM(replies=[""], labels=["search", *UNBIASED, "answer"])
    agent = make_agent(tmp_path, llm)
    thread = agent.new_thread_id()
    agent.ask(text="How long do sea turtles live?", thread_id=thread)
    failed = agent.ask(text="Write a haiku", thread_id=thread)  # the LLM returns an empty answer
    assert failed.error and failed.answer is None and failed.sources == []


def test_threads_persist_in_sqlite_across_agents(tmp_path):
    llm = ScriptedLLM(replies=["Fine.", "photo"], labels=["answer"])
    agent = make_agent(tmp_path, llm)
    thread = agent.new_thread_id()
    agent.ask(text="Write a haiku about rain", thread_id=thread)
    again = make_agent(tmp_path, ScriptedLLM())
    listed = again.conversations()
    assert [t["thread_id"] for t in listed] == [thread]
    assert listed[0]["turns"] == 1 and listed[0]["first_question"] == "Write a haiku about rain"
    assert [h["question"] for h in again.memory.history(thread)] == ["Write a haiku about rain"]


def test_cancel_stops_the_turn_and_still_writes_the_trace(tmp_path):
    cancel = threading.Event()

    class SlowLLM(ScriptedLLM):
        def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None):
            for word in ["one", "two", "three", "four"]:
                if word == "two":
                    cancel.set()
                on_token(word + " ")  # raises once cancelled
            return "one two three four"

    agent = make_agent(tmp_path, SlowLLM(labels=["answer"]))
    result = agent.ask(text="Write a haiku", cancel=cancel)
    assert result.error == "cancelled" and result.answer is None
    events = read_trace(result.trace_path.rsplit("/", 1)[0])
    assert [e.step for e in events] == ["decide", "answer"]
    assert events[-1].error == "cancelled"
