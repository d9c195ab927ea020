"""The async API (issue 19, point 6): ``Agent.aask`` / ``Agent.astream`` on one event loop, the
compiled graph's ``ainvoke`` with the async SQLite checkpointer (``Memory.agraph``), a conversation
thread that goes on across ``ask`` and ``aask``, and a cancelled task. The concurrency tests run the
real starter models (slow); the others use the scripted LLMs of tests/test_web_turns.py (fast).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from agent.agent import Agent, load_result
from agent.context import Context
from agent.settings import Settings
from agent.trace import read_trace
from agent.ui.web import RunningTurns, aapi_ask, arun_turn, web_thread_id

try:
    from tests.test_web_turns import SlowLLM, slow_agent
except ImportError:  # tests/ is on sys.path itself
    from test_web_turns import SlowLLM, slow_agent

# (question, route, a word its answer or image prompt must have, a word only its own prompts have)
QUESTIONS = [
    ("Who painted the Mona Lisa?", "search", "Leonardo", "Mona Lisa"),
    ("Who wrote Hamlet?", "search", "Shakespeare", "Hamlet"),
    ("Show me a cat eating fish", "draw", "fish", "fish"),
    ("Say something kind to a tired student.", "answer", None, "student"),
]


class Prompts(BaseCallbackHandler):
    """What a LangChain callback handler given in one run's ``config`` sees: its LLM calls' prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(self, serialized, messages, **kw):
        self.prompts.append(" ".join(str(m.content) for batch in messages for m in batch))

    def on_llm_start(self, serialized, prompts, **kw):
        self.prompts.extend(prompts)


def span(result) -> tuple[datetime, datetime]:
    """When a run's first step started and its last one ended, from its trace."""
    events = read_trace(Path(result.trace_path).parent)
    first = datetime.fromisoformat(events[0].at) - timedelta(milliseconds=events[0].ms + (events[0].load_ms or 0))
    return first, datetime.fromisoformat(events[-1].at)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Agent:
    out = tmp_path_factory.mktemp("async-runs")
    agent = Agent(Settings(out_dir=out, memory_path=out / "conversations.sqlite"))
    agent.preload()  # warm models: the timings below compare turns, not loading
    return agent


# -- the real starter models -------------------------------------------------------------------------------
@pytest.mark.slow
def test_four_questions_run_concurrently_on_one_event_loop_each_with_its_own_answer(agent):
    handlers = [Prompts() for _ in QUESTIONS]

    async def main():
        start = time.perf_counter()
        results = await asyncio.gather(*(agent.aask(text=q, image=False, config={"callbacks": [h]})
                                         for (q, *_), h in zip(QUESTIONS, handlers)))
        return results, time.perf_counter() - start

    results, took = asyncio.run(main())
    for (question, route, word, own), result, handler in zip(QUESTIONS, results, handlers):
        assert result.error is None, result.error
        assert result.question == question and result.route == route, (question, result.route, result.route_reason)
        assert result.answer and (word is None or word in (result.answer + " " + (result.image_prompt or ""))), result
        run_dir = Path(result.trace_path).parent
        assert run_dir == Path(agent.settings.out_dir) / result.run_id
        assert load_result(run_dir) == result
        assert {e.run_id for e in read_trace(run_dir)} == {result.run_id}, "each trace holds its own run only"
        # config reaches this run's LLM calls, and only this run's
        assert handler.prompts and any(own in p for p in handler.prompts), (question, handler.prompts)
        others = [k for (q, _, _, k), _ in zip(QUESTIONS, handlers) if q != question and k != "student"]
        assert not [p for p in handler.prompts if any(k in p for k in others)], (question, handler.prompts)
    assert len({r.run_id for r in results}) == 4
    spans = [span(r) for r in results]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the runs did not overlap: {spans}"
    print(f"\n4 questions concurrently (aask + gather): {took:.2f}s")


@pytest.mark.slow
def test_astream_yields_the_same_kinds_of_events_as_stream(agent):
    question = "Who wrote Hamlet?"
    synced = list(agent.stream(text=question, image=False, progress=True))

    async def collect():
        return [event async for event in agent.astream(text=question, image=False, progress=True)]

    streamed = asyncio.run(collect())

    def shape(events):
        steps = [e.step.step for e in events if e.kind == "step"]
        kinds = {e.progress["type"] for e in events if e.kind == "progress"}
        return steps, kinds, events[-1].kind

    assert shape(streamed) == shape(synced)
    tokens = "".join(e.progress["text"] for e in streamed if e.kind == "progress" and e.progress["type"] == "token")
    assert tokens.strip(), "the answer streams token by token"
    result = streamed[-1].result
    assert result.answer == synced[-1].result.answer and "Shakespeare" in result.answer
    replace = [e for e in streamed if e.kind == "progress" and e.progress["type"] == "replace"]
    assert tokens.strip() == result.answer.strip() or (len(replace) == 1 and replace[0].progress["text"] == result.answer)


@pytest.mark.slow
def test_concurrent_vs_one_after_another(agent):
    """Not a speed claim (2 cores, one LLM at a time): measures both, and the answers are the same."""
    async def together():
        return await asyncio.gather(*(agent.aask(text=q, image=False) for q, *_ in QUESTIONS))

    start = time.perf_counter()
    apart = [agent.ask(text=q, image=False) for q, *_ in QUESTIONS]
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    at_once = asyncio.run(together())
    concurrent = time.perf_counter() - start
    assert [r.answer for r in at_once] == [r.answer for r in apart]
    print(f"\n4 questions one after another (ask): {sequential:.2f}s; concurrently (aask + gather): {concurrent:.2f}s")


# -- scripted models (fast) --------------------------------------------------------------------------------
def test_a_cancelled_aask_task_stops_the_turn_and_writes_its_result(tmp_path):
    agent = slow_agent(tmp_path, delay=0.05)  # 61 words: about 3 s

    async def main():
        task = asyncio.create_task(agent.aask(text="Tell me a story.", run_id="r-cancelled"))
        while not any(kind == "chat" for kind, _ in agent.tools.llm.calls):  # the answer is being written
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    took = asyncio.run(main())
    assert took < 61 * 0.05
    result = load_result(tmp_path / "runs" / "r-cancelled")
    assert result.error == "cancelled" and result.answer is None
    steps = read_trace(tmp_path / "runs" / "r-cancelled")
    assert [e.step for e in steps][0] == "decide"


def test_a_thread_goes_on_across_ask_and_aask(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    thread = agent.new_thread_id()
    first = agent.ask(text="Tell me about the Mona Lisa.", thread_id=thread)

    async def follow_up():
        return await agent.aask(text="When was it painted?", config={"configurable": {"thread_id": thread}})

    second = asyncio.run(follow_up())
    third = agent.ask(text="Who painted it?", thread_id=thread)  # and back to the sync API
    assert first.error is None and second.error is None and third.error is None
    assert second.thread_id == thread and second.standalone_question == "When was the Mona Lisa painted?"
    assert second.answer == "It was painted between 1503 and 1519."
    assert third.standalone_question == "Who painted the Mona Lisa?"
    assert [t["question"] for t in agent.memory.history(thread)][:1] == ["Tell me about the Mona Lisa."]
    assert len(agent.memory.history(thread)) == 3
    assert next(c for c in agent.conversations() if c["thread_id"] == thread)["turns"] == 3


def test_waiting_for_a_busy_thread_does_not_block_the_event_loop(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    thread = agent.new_thread_id()
    held, release = threading.Event(), threading.Event()

    def hold():  # another turn on the thread, in another thread of this process
        with agent.memory.turn(thread):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)

    async def main():
        ticks = 0
        events = []

        async def ask():
            async for event in agent.astream(text="What is the capital of France?", thread_id=thread, progress=True):
                events.append(event)

        task = asyncio.create_task(ask())
        while not any(e.kind == "progress" and "waiting" in e.progress.get("text", "") for e in events):
            await asyncio.sleep(0.01)
            ticks += 1
            assert ticks < 500, "no 'waiting' status came"
        for _ in range(20):  # the loop runs on while the turn waits
            await asyncio.sleep(0.01)
        assert not task.done()
        release.set()
        await task
        return events

    events = asyncio.run(main())
    holder.join()
    assert events[-1].result.answer == "Paris is the capital of France."


def test_the_compiled_graph_runs_two_turns_with_the_async_checkpointer(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    thread = {"configurable": {"thread_id": "graph-thread"}}
    runs = tmp_path / "runs"

    async def main():
        async with agent.memory.agraph() as graph:
            ctx = Context(tools=agent.tools)
            first = await graph.ainvoke({"question": "Tell me about the Mona Lisa.", "run_id": "g1",
                                         "run_dir": str(runs / "g1"), "force_route": "answer"}, thread, context=ctx)
            chunks = [chunk async for chunk in graph.astream(
                {"question": "When was it painted?", "run_id": "g2", "run_dir": str(runs / "g2"),
                 "force_route": "answer"}, thread, context=ctx, stream_mode="values")]
            state = await graph.aget_state(thread)
        return first, chunks, state

    first, chunks, state = asyncio.run(main())
    assert first["answer"] == "The Mona Lisa is a portrait by Leonardo da Vinci."
    assert chunks[-1]["answer"] == "It was painted between 1503 and 1519."
    assert chunks[-1]["standalone_question"] == "When was the Mona Lisa painted?"
    assert state.values["answer"] == chunks[-1]["answer"]
    # the same file, read by the sync checkpointer
    assert [t["question"] for t in agent.memory.history("graph-thread")][0] == "Tell me about the Mona Lisa."
    assert len(agent.memory.history("graph-thread")) == 2


# -- askdraw serve's async handlers ------------------------------------------------------------------------
def test_the_pages_async_turn_stops_mid_answer_and_a_left_turn_finishes_in_the_background(tmp_path):
    agent = slow_agent(tmp_path, delay=0.05)
    running = RunningTurns()

    async def main():
        thread = web_thread_id(agent)
        shown = []
        start = time.monotonic()
        async for out in arun_turn(agent, "Tell me a story.", None, [], thread, running):
            shown.append((out[0][-1]["content"], out[4]))  # as the page gets it
            if "word3" in shown[-1][0]:
                assert running.stop(thread), "the turn is registered as running"
        took = time.monotonic() - start
        # a turn the page stops listening to (a closed tab) is cancelled and run out by a task
        old = arun_turn(agent, "Tell me a story.", None, [], web_thread_id(agent), running)
        async for out in old:
            if "word2" in out[0][-1]["content"]:
                break
        await old.aclose()
        assert not running.wait_stopped(0), "the stopped turn is still finishing its step"
        after = [(out[0][-1]["content"], out[4]) async for out in arun_turn(
            agent, "What is the capital of France?", None, [], web_thread_id(agent), running)]
        assert running.wait_stopped(0)
        return shown, took, after, thread

    shown, took, after, thread = asyncio.run(main())
    assert any("word3" in text for text, _ in shown), "it was stopped mid-answer"
    assert shown[-1][0].endswith("*(cancelled)*") and "THE-END" not in shown[-1][0]
    assert shown[-1][1].startswith("**Stopped**")
    assert took < 61 * 0.05, f"stopped after {took:.2f}s"
    assert not agent.memory.history(thread), "a cancelled turn is not remembered"
    assert after[-1][0] == "Paris is the capital of France."
    assert any(status.startswith("**Waiting**") for _, status in after), "the next turn waited for the stopped one"


def test_the_async_ask_endpoint(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    answer, route, reason, image, sources = asyncio.run(aapi_ask(agent, "What is the capital of France?"))
    assert answer == "Paris is the capital of France." and route == "answer" and reason and sources == []
    assert asyncio.run(aapi_ask(agent, "  ", None))[0].startswith("error: empty question")
