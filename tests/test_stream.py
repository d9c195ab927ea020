"""What ``Agent.stream`` promises front ends: every token stream ends in the final answer or in
one replace event carrying it; model loading is timed apart from the steps and named while it
runs; ``askdraw ask`` streams the answer on a terminal only. Scripted models (fast); the real
first-turn Time line is checked in tests/test_integration.py-style slow test at the end."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from agent.agent import Agent, StepEvent
from agent.context import Toolbox
from agent.settings import Settings
from agent.trace import format_event, format_timeline, read_trace
from agent.ui.progress import DRAFT_REPLACED, TurnView
from agent.ui.render import facts, plain_lines
from tools.diffusion import ImageGenerator
from tools.wikipedia import Passage

try:
    from tests.fakes import ScriptedLLM
except ImportError:  # tests/ is on sys.path itself
    from fakes import ScriptedLLM

MONA_LISA = Passage(
    title="Mona Lisa",
    url="https://en.wikipedia.org/wiki/Mona_Lisa",
    text="The Mona Lisa is a half-length portrait painting by the Italian artist Leonardo da Vinci. "
    "It hangs in the Louvre in Paris.",
    score=0.9,
)


class FakeWiki:
    name = "fake-wiki"

    def __init__(self, passages=()):
        self.passages = list(passages)

    def search(self, query: str, k: int = 3) -> list[Passage]:
        return self.passages[:k]


class BrokenMidAnswer(ScriptedLLM):
    """Streams a few tokens of its reply, then fails (an endpoint that drops the connection)."""

    def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None) -> str:
        if on_token is None:
            return super().chat(messages, max_new_tokens=max_new_tokens, prefix=prefix, stop=stop)
        for word in ("The", " answer", " is"):
            on_token(word)
        raise RuntimeError("connection dropped")


class SlowLoadingLLM(ScriptedLLM):
    """A scripted LLM that is not loaded yet: loading it takes ``seconds``."""

    def __init__(self, *args, seconds: float = 0.4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loaded = False
        self.seconds = seconds

    def load(self) -> None:
        time.sleep(self.seconds)
        self.loaded = True


def make_agent(tmp_path: Path, llm, wiki=None) -> Agent:
    settings = Settings(out_dir=tmp_path / "runs", memory_path=tmp_path / "memory.sqlite")
    return Agent(settings, tools=Toolbox(settings, llm=llm, wiki=wiki or FakeWiki(), image=ImageGenerator(None)))


def token_contract(events: list[StepEvent]) -> tuple[str, dict | None]:
    """Check the contract on one turn's events; returns (streamed text, the replace event or None)."""
    assert events[-1].kind == "result"
    result = events[-1].result
    progress = [e.progress for e in events if e.kind == "progress"]
    streamed = "".join(p["text"] for p in progress if p["type"] == "token")
    replaces = [p for p in progress if p["type"] == "replace"]
    assert len(replaces) <= 1
    if replaces:
        assert events[-2].kind == "progress" and events[-2].progress is replaces[0], "replace comes just before the result"
        assert replaces[0]["text"] == (result.answer or "")
        assert streamed, "no replace without a streamed draft"
    else:
        assert streamed.strip() == (result.answer or "").strip(), "a stream with no replace must be the answer"
    return streamed, (replaces[0] if replaces else None)


CASES = {
    # route: the direct answer, as generated (no replace)
    "direct, kept": (["Leaves fall softly."], ["answer"], None, False),
    # the direct answer runs on: cut after three sentences (streamed: the fourth's start)
    "direct, cut": (["One. Two. Three. Four is more. Five."], ["answer"], None, True),
    # a looping reply is cut back
    "direct, loops": (["Cats: cats are cats.\nCats: cats are cats.\nCats: cats are cats.\nCats: cats are cats."],
                      ["answer"], None, True),
    # the search route: the short answer streams, the citation is appended
    "search, cited": ([], ["search"], [MONA_LISA], True),
    # the search route with nothing found: nothing streams
    "search, not found": ([], ["search"], [], False),
    # arithmetic: computed, streamed whole
    "arithmetic": ([], ["answer"], None, False),
    # an answer that fails mid-stream: the draft is replaced by no answer
    "failed mid-answer": ([], ["answer"], None, True),
}
QUESTIONS = {"search, cited": "Who painted the Mona Lisa?", "search, not found": "Who painted the Mona Lisa?",
             "arithmetic": "What is 12 times 7?"}


@pytest.mark.parametrize("case", list(CASES))
def test_every_token_stream_ends_in_the_answer_or_a_replace_event(tmp_path, case):
    replies, labels, passages, replaced = CASES[case]
    llm = BrokenMidAnswer(replies=replies, labels=labels) if case == "failed mid-answer" \
        else ScriptedLLM(replies=replies, labels=labels)
    agent = make_agent(tmp_path, llm, FakeWiki(passages or []))
    events = list(agent.stream(text=QUESTIONS.get(case, "Write a line about autumn."), progress=True, image=False))
    streamed, replace = token_contract(events)
    result = events[-1].result
    assert (replace is not None) == replaced, (case, streamed, result.answer, result.error)
    if case == "direct, cut":
        assert result.answer == "One. Two. Three." and streamed.startswith(result.answer)
    if case == "search, cited":
        assert streamed.strip() and result.answer.startswith(streamed.strip()) and result.answer != streamed.strip()
        assert replace["kept"] is True  # nothing streamed was thrown away: the citation was added
    elif replace is not None:
        assert replace["kept"] is False
    if case == "failed mid-answer":
        assert result.error and result.answer is None and replace["text"] == ""


def test_no_replace_event_without_progress(tmp_path):
    agent = make_agent(tmp_path, ScriptedLLM(replies=["One. Two. Three. Four. Five."], labels=["answer"]))
    events = list(agent.stream(text="Write about autumn.", image=False))
    assert {e.kind for e in events} == {"step", "result"}


def test_the_chat_view_marks_a_replaced_draft(tmp_path):
    buffer = io.StringIO()
    view = TurnView(Console(file=buffer, width=100), False, time.perf_counter())
    agent = make_agent(tmp_path, ScriptedLLM(replies=["One. Two. Three. Four is more. Five."], labels=["answer"]))
    for event in agent.stream(text="Write about autumn.", progress=True, image=False):
        if event.kind != "result":
            view.show(event)
    view.close()
    text = buffer.getvalue()
    # The draft was shown as it came (cut where the fourth sentence began) ...
    assert "One. Two. Three. F" in text
    assert text.index("Three. F") < text.index(DRAFT_REPLACED)  # ... then marked as replaced


def test_the_chat_view_does_not_call_a_kept_draft_replaced(tmp_path):
    """The search route streams its short answer and then adds the citation: the draft is kept."""
    buffer = io.StringIO()
    view = TurnView(Console(file=buffer, width=100), False, time.perf_counter())
    agent = make_agent(tmp_path, ScriptedLLM(labels=["search"]), FakeWiki([MONA_LISA]))
    for event in agent.stream(text="Who painted the Mona Lisa?", progress=True, image=False):
        if event.kind != "result":
            view.show(event)
    view.close()
    assert "Leonardo da Vinci" in buffer.getvalue() and DRAFT_REPLACED not in buffer.getvalue()
    assert "[1] Wikipedia" not in buffer.getvalue() and "note:" not in buffer.getvalue()  # shown after the turn


# -- honest timings ----------------------------------------------------------------------------
def test_model_loading_is_timed_apart_from_the_decision_and_named_while_it_runs(tmp_path):
    llm = SlowLoadingLLM(replies=["Leaves fall."], labels=["answer"], seconds=0.5)
    agent = make_agent(tmp_path, llm)
    events = list(agent.stream(text="Write a line about autumn.", progress=True, route="answer", image=False))
    result = events[-1].result
    statuses = [e.progress["text"] for e in events if e.kind == "progress" and e.progress["type"] == "status"]
    assert "loading the LLM" in statuses
    assert statuses.index("loading the LLM") < statuses.index("writing the answer")
    assert result.timings_ms["load"] >= 500
    assert result.timings_ms["decide"] < 500, "the load is not counted as the decision"
    assert list(result.timings_ms)[:2] == ["load", "decide"]
    time_line = next(line for line in plain_lines(facts(result)) if line.startswith("Time:"))
    assert "load 0.5" in time_line and "decide 0." in time_line
    total = sum(result.timings_ms.values()) / 1000
    assert time_line.startswith(f"Time:        {total:.2f}s") or f"{total:.2f}s" in time_line
    decide = next(e for e in read_trace(Path(result.trace_path).parent) if e.step == "decide")
    assert decide.load_ms >= 500 and decide.ms < 500 and decide.data["load_llm_ms"] == decide.load_ms
    assert "load: 0.5" in format_event(decide)
    assert "(load 0.5" in format_timeline(read_trace(Path(result.trace_path).parent)).splitlines()[0]

    # The second turn: nothing loads, so no load timing and no loading status.
    again = list(agent.stream(text="Write a line about rain.", progress=True, route="answer", image=False))
    assert "load" not in again[-1].result.timings_ms
    assert not any(e.kind == "progress" and e.progress.get("text") == "loading the LLM" for e in again)


def test_a_freshly_loaded_llm_is_calibrated_as_part_of_its_load(tmp_path):
    from agent.router import _calibration_inputs

    # Calibration scores the content-free inputs first (as loading), then the question is decided.
    calibration = ["search"] * len(_calibration_inputs())
    llm = SlowLoadingLLM(replies=["Leaves fall."], labels=[*calibration, "answer"], seconds=0.2)
    agent = make_agent(tmp_path, llm)
    events = list(agent.stream(text="Write a line about autumn.", progress=True, image=False))
    result = events[-1].result
    assert result.route == "answer", result.route_reason
    statuses = [e.progress["text"] for e in events if e.kind == "progress" and e.progress["type"] == "status"]
    assert statuses.index("loading the LLM") < statuses.index("calibrating the route decision (first use of the LLM)") \
        < statuses.index("deciding the route")
    decide = next(e for e in read_trace(Path(result.trace_path).parent) if e.step == "decide")
    assert decide.data["load_llm_ms"] >= 200 and "load_route_calibration_ms" in decide.data
    assert decide.load_ms == round(decide.data["load_llm_ms"] + decide.data["load_route_calibration_ms"]
                                   + decide.data.get("load_route_classifier_ms", 0), 1)
    assert result.timings_ms["load"] == decide.load_ms


def test_a_follow_up_says_it_is_being_rewritten(tmp_path):
    llm = ScriptedLLM(replies=["Sea turtles eat seagrass.", "Sea turtles live long."] + ["x"] * 5,
                      labels=["answer"] * 10)
    agent = make_agent(tmp_path, llm)
    thread = agent.new_thread_id()
    first = list(agent.stream(text="What do sea turtles eat?", progress=True, thread_id=thread, image=False))
    statuses = [e.progress["text"] for e in first if e.kind == "progress" and e.progress["type"] == "status"]
    assert "rewriting the follow-up" not in statuses and "deciding the route" in statuses
    second = list(agent.stream(text="How long do they live?", progress=True, thread_id=thread, image=False))
    statuses = [e.progress["text"] for e in second if e.kind == "progress" and e.progress["type"] == "status"]
    assert statuses.index("rewriting the follow-up") < statuses.index("deciding the route")


# -- askdraw ask streams on a terminal only ------------------------------------------------------
def _run_ask(monkeypatch, tmp_path, *, terminal: bool, replies) -> str:
    import agent.cli as cli

    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=100, force_terminal=terminal, highlight=False,
                                            soft_wrap=True))
    agent = make_agent(tmp_path, ScriptedLLM(replies=replies, labels=["answer"]))
    result = cli._run(agent, "Write about autumn.", None, trace=False, spinner=False,
                      stream_answer=cli.out.is_terminal)
    cli._print_result(result)
    return buffer.getvalue()


def test_ask_streams_the_answer_on_a_terminal_and_marks_a_replaced_draft(monkeypatch, tmp_path):
    shown = _run_ask(monkeypatch, tmp_path, terminal=True, replies=["One. Two. Three. Four is more. Five."])
    assert shown.index("Three. F") < shown.index(DRAFT_REPLACED) < shown.index("Answer:")


def test_ask_does_not_stream_when_piped(monkeypatch, tmp_path):
    shown = _run_ask(monkeypatch, tmp_path, terminal=False, replies=["One. Two. Three. Four is more. Five."])
    assert "Three. F" not in shown and DRAFT_REPLACED not in shown
    assert "Answer:" in shown and "One. Two. Three." in shown


# -- the real models -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_real_first_ask_shows_the_load_apart_from_decide(tmp_path):
    """``askdraw ask`` in a fresh process with the starter models: the Time line names the load."""
    import subprocess
    import sys

    env = {**os.environ, "ASKDRAW_OUT_DIR": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "agent.cli", "ask", "--no-image", "Who painted the Mona Lisa?"],
                          capture_output=True, text=True, env=env, timeout=900,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    time_line = next(line for line in done.stdout.splitlines() if line.startswith("Time:"))
    print(time_line)
    steps = dict(part.rsplit(" ", 1) for part in time_line.split("(", 1)[1].rstrip(")").split(", "))
    assert float(steps["load"].rstrip("s")) > 1.0, time_line
    assert float(steps["decide"].rstrip("s")) < float(steps["load"].rstrip("s")), time_line
