"""The LangGraph agent end to end with scripted models (fast; no real LLM, ASR or Wikipedia).

Every test builds its own Agent (hence a freshly compiled graph) around a Toolbox whose LLM,
speech recogniser and Wikipedia backend are test doubles; the image tool is the real
``tools.diffusion.ImageGenerator``, without a model (it writes a labelled card) or with a tiny
random diffusers pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.agent import Agent, Result, StepEvent, load_result
from agent.context import Context, Toolbox
from agent.graph import build_graph
from agent.router import _calibration_inputs
from agent.settings import Settings
from agent.trace import read_trace
from tools.audio import AudioError
from tools.common import ToolError
from tools.diffusion import ImageGenerator
from tools.wikipedia import Passage

try:
    from tests.fakes import FakeImage, ScriptedLLM
except ImportError:  # tests/ is on sys.path itself (pytest rootdir-less import mode)
    from fakes import FakeImage, ScriptedLLM

REPO = Path(__file__).resolve().parents[1]
MONA_LISA = Passage(
    title="Mona Lisa",
    url="https://en.wikipedia.org/wiki/Mona_Lisa",
    text="The Mona Lisa is a half-length portrait painting by the Italian artist Leonardo da Vinci. "
    "It has been described as the best known work of art in the world. It hangs in the Louvre in Paris.",
    score=0.9,
)
LOUVRE = Passage(
    title="Louvre",
    url="https://en.wikipedia.org/wiki/Louvre",
    text="The Louvre is a national art museum in Paris, France. It is home to the Mona Lisa.",
    score=0.4,
)
SEARCH_PATH = ["decide", "search_wikipedia", "answer", "rewrite_image_prompt", "generate_image", "finish"]


# -- test doubles ------------------------------------------------------------------------------
class FakeWiki:
    """A Wikipedia backend: each search returns the next scripted result (a list of passages, or
    an exception to raise); the last one repeats."""

    name = "fake-wiki"

    def __init__(self, *results):
        self.results = list(results) or [[]]
        self.queries: list[tuple[str, int]] = []

    def search(self, query: str, k: int = 3) -> list[Passage]:
        self.queries.append((query, k))
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, BaseException):
            raise result
        return list(result)[:k]


class FakeASR:
    """A speech recogniser: returns ``text`` (or raises it when it is an exception). Records what
    it was given (the audio, as a file path or as decoded samples)."""

    name = "fake-asr"

    def __init__(self, text="Who painted the Mona Lisa?"):
        self.text = text
        self.calls: list = []

    def transcribe(self, audio):
        self.calls.append(audio)
        if isinstance(self.text, BaseException):
            raise self.text
        return self.text


def write_tone(path: Path, seconds: float = 1.0, amplitude: float = 0.3) -> Path:
    """A real 16 kHz wav file (a tone: loud enough not to count as silence)."""
    import soundfile as sf

    t = np.arange(int(16000 * seconds), dtype=np.float32) / 16000
    sf.write(path, (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return path


def audio_seconds(audio) -> float:
    """Length of what the ASR was given: a path to a file, or 16 kHz samples."""
    if isinstance(audio, (str, Path)):
        import soundfile as sf

        return sf.info(str(audio)).duration
    return len(audio) / 16000


class NoASR:
    name = "no-asr"

    def transcribe(self, path):  # pragma: no cover - reaching it is the failure
        raise AssertionError("a typed question must not be transcribed")


def make_agent(tmp_path, llm, *, wiki=None, asr=None, image=None, **settings) -> Agent:
    s = Settings(out_dir=tmp_path / "runs", **settings)
    tools = Toolbox(s, llm=llm, asr=asr or NoASR(), wiki=wiki if wiki is not None else FakeWiki(),
                    image=image or ImageGenerator(None, width=64, height=64))
    return Agent(s, tools=tools)


def trace_of(result: Result):
    assert result.trace_path, "the run must record where its trace is"
    return read_trace(Path(result.trace_path).parent)


def steps_of(result: Result) -> list[str]:
    return [e.step for e in trace_of(result)]


def chat_messages(llm: ScriptedLLM) -> list[list[dict]]:
    return [msgs for kind, msgs in llm.calls if kind == "chat"]


# -- routes -----------------------------------------------------------------------------------
def test_without_an_image_model_no_route_asks_the_llm_for_an_image_prompt(tmp_path):
    """Nothing will be drawn, so the prompt (shown on the card) is built from the answer or the
    request and the LLM is not asked for a rewrite; the trace says so."""
    calibration = ["search"] * len(_calibration_inputs())
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=["search", *calibration, "draw"])
    agent = make_agent(tmp_path, llm, wiki=FakeWiki([MONA_LISA]))
    r = agent.ask(text="Who painted the Mona Lisa?")
    assert len(chat_messages(llm)) == 0  # the short answer is picked from the passage, not written by the LLM
    # the card's prompt is a scene: the subject and what the article says it is (issue 18)
    assert r.image_prompt == "the Mona Lisa, a half-length portrait painting by the Italian artist Leonardo da Vinci"
    event = next(e for e in trace_of(r) if e.step == "rewrite_image_prompt")
    assert "no image model" in event.reason and event.data["rewritten"] is False
    assert not r.image_generated and any("No image was generated" in n for n in r.notices)
    drawn = agent.ask(text="Show me a cat eating fish")
    assert len(chat_messages(llm)) == 0 and drawn.image_prompt == "a cat eating fish, detailed illustration"
    assert "no image model" in next(e for e in trace_of(drawn) if e.step == "draw").reason
    assert "could not draw it" in drawn.answer


def test_with_an_image_model_the_draw_route_rewrites_the_request(tmp_path):
    llm = ScriptedLLM(replies=["A cat eating a fish, cartoon illustration"], labels=["draw"])
    image = FakeImage()
    r = make_agent(tmp_path, llm, image=image).ask(text="Show me a cat eating fish")
    assert r.image_prompt == "A cat eating a fish, cartoon illustration" == image.prompts[0]
    assert r.image_generated and r.answer == "I drew: A cat eating a fish, cartoon illustration"


def test_search_route_answers_from_the_passage_with_citation_and_sources(tmp_path):
    # the answer step picks the short answer out of the passages: the LLM only writes the image prompt
    llm = ScriptedLLM(replies=["The Mona Lisa portrait by Leonardo da Vinci, oil painting"], labels=["search"])
    wiki = FakeWiki([MONA_LISA, LOUVRE])
    image = FakeImage()
    agent = make_agent(tmp_path, llm, wiki=wiki, image=image)

    r = agent.ask(text="Who painted the Mona Lisa?")

    assert r.error is None and r.ok
    assert r.route == "search"
    assert "Wikipedia" in r.route_reason
    assert wiki.queries == [("Who painted the Mona Lisa", agent.settings.search_k)]
    assert r.search_query == "Who painted the Mona Lisa"
    answer, _, citation = r.answer.partition("\n\n")
    assert answer == "Leonardo da Vinci. [1]"  # numbered as in r.sources
    assert citation.startswith('[1] Wikipedia, "Mona Lisa"')
    # the quoted sentence is the passage's sentence that supports the answer
    assert "portrait painting by the Italian artist Leonardo da Vinci" in citation
    assert [s["title"] for s in r.sources] == ["Mona Lisa", "Louvre"]
    assert [s["url"] for s in r.sources] == [MONA_LISA.url, LOUVRE.url]
    assert r.sources[0]["snippet"].startswith("The Mona Lisa is a half-length portrait")
    assert all(set(s) == {"title", "url", "snippet"} for s in r.sources)
    answer_step = next(e for e in trace_of(r) if e.step == "answer")
    assert answer_step.data["short"] == "Leonardo da Vinci" and answer_step.data["source"] == 1
    assert answer_step.data["passages_read"] == 2 and "Louvre" in answer_step.input
    # the picture illustrates the answer
    assert r.image_prompt == "The Mona Lisa portrait by Leonardo da Vinci, oil painting"
    assert image.prompts == [r.image_prompt] and r.image_generated
    assert Path(r.image_path).is_file()


def test_search_route_answer_in_the_second_passage_is_numbered_2(tmp_path):
    llm = ScriptedLLM(replies=["The Mona Lisa by Leonardo da Vinci"], labels=["search"])
    r = make_agent(tmp_path, llm, wiki=FakeWiki([LOUVRE, MONA_LISA])).ask(text="Who painted the Mona Lisa?")

    assert r.error is None and r.route == "search"
    assert [s["title"] for s in r.sources] == ["Louvre", "Mona Lisa"]
    line, _, support = r.answer.partition("\n\n")
    assert line == "Leonardo da Vinci. [2]" and support.startswith('[2] Wikipedia, "Mona Lisa": "')
    assert r.citation == support


def test_search_route_says_plainly_when_no_passage_answers(tmp_path):
    llm = ScriptedLLM(replies=["Pablo Picasso painted it in 1907."], labels=["search"])
    r = make_agent(tmp_path, llm, wiki=FakeWiki([LOUVRE])).ask(text="Who painted the Nightwatch Zebra?", image=False)

    assert r.error is None and r.route == "search"
    assert r.answer == 'I did not find the answer in Wikipedia; the closest article was "Louvre".'
    assert "Picasso" not in r.answer and r.citation is None
    assert [s["title"] for s in r.sources] == ["Louvre"]


def test_answer_route_answers_directly_without_searching(tmp_path):
    llm = ScriptedLLM(replies=["Leaves drift down, gold and red.", "Autumn leaves falling, gold and red"],
                      labels=["answer"])
    wiki = FakeWiki([MONA_LISA])
    r = make_agent(tmp_path, llm, wiki=wiki).ask(text="Write a short poem about autumn.", image=True)  # a poem gets no picture unless asked

    assert r.route == "answer" and r.error is None
    assert "answer directly" in r.route_reason
    assert r.answer == "Leaves drift down, gold and red."
    assert "Source:" not in r.answer
    assert wiki.queries == [] and r.sources == [] and r.search_query is None
    assert steps_of(r) == ["decide", "answer", "rewrite_image_prompt", "generate_image", "finish"]
    # the question itself reached the model
    assert "Write a short poem about autumn." in chat_messages(llm)[0][-1]["content"]


@pytest.mark.parametrize(
    "model_reply",
    ["A cat eating a fish, cute cartoon illustration", "A beautiful sunset over the ocean"],
    ids=["rewrite-kept", "rewrite-dropped-the-subject"],
)
def test_draw_route_draws_the_request_itself(tmp_path, model_reply):
    llm = ScriptedLLM(replies=[model_reply], labels=["draw"])
    wiki = FakeWiki([MONA_LISA])
    image = FakeImage()
    r = make_agent(tmp_path, llm, wiki=wiki, image=image).ask(text="Show me a cat eating fish")

    assert r.route == "draw" and r.error is None
    assert wiki.queries == []
    prompt = r.image_prompt.lower()
    assert "cat" in prompt and "fish" in prompt
    assert "show me" not in prompt and "sunset" not in prompt
    # the model was asked to picture the subject, not the request to show it
    asked = chat_messages(llm)[0][-1]["content"].lower()
    assert "cat eating fish" in asked and "show" not in asked
    assert image.prompts == [r.image_prompt] and r.image_generated and Path(r.image_path).is_file()
    assert r.answer == f"I drew: {r.image_prompt}"
    assert steps_of(r) == ["decide", "draw", "generate_image", "finish"]


def test_draw_route_with_a_real_diffusers_pipeline_generates_the_png(tmp_path, tiny_model):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and steadiest
    try:
        llm = ScriptedLLM(replies=["A cat eating a fish, watercolour"], labels=["draw"])
        image = ImageGenerator(str(tiny_model), steps=2, width=64, height=64)
        r = make_agent(tmp_path, llm, image=image).ask(text="Draw a cat eating fish", seed=7)
    finally:
        torch.set_num_threads(threads)

    assert r.error is None
    assert r.image_generated is True
    assert r.image_model == str(tiny_model)
    assert r.answer == "I drew: A cat eating a fish, watercolour"
    assert not any("No image was generated" in n for n in r.notices)
    path = Path(r.image_path)
    assert path.is_file() and path.parent == Path(r.trace_path).parent
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (64, 64)
        assert im.text.get("askdraw:generated") == "true"
        assert im.text.get("seed") == "7"
    gen = next(e for e in trace_of(r) if e.step == "generate_image")
    assert gen.data["generated"] is True and gen.data["steps"] == 2


# -- search retries and failures -----------------------------------------------------------------
def test_search_that_finds_nothing_retries_with_keywords_then_answers_directly(tmp_path):
    llm = ScriptedLLM(replies=["I believe Leonardo da Vinci painted it."], labels=["search"])
    wiki = FakeWiki([])
    r = make_agent(tmp_path, llm, wiki=wiki).ask(text="Who painted the Mona Lisa?")

    assert r.error is None
    queries = [q for q, _ in wiki.queries]
    assert len(queries) == 2  # max_search_attempts (default 2): bounded
    first, second = queries
    assert first == "Who painted the Mona Lisa"
    assert second != first
    assert "mona" in second.lower() and "lisa" in second.lower() and "who" not in second.lower().split()
    assert r.search_query == second
    # answered without a source, and says so
    assert r.answer == "I believe Leonardo da Vinci painted it."
    assert r.sources == [] and "Source:" not in r.answer
    assert any("No Wikipedia article matched" in n for n in r.notices)
    searches = [e for e in trace_of(r) if e.step == "search_wikipedia"]
    assert [e.data["attempt"] for e in searches] == [1, 2]
    assert searches[0].decision == "search again" and second in searches[0].reason
    assert steps_of(r)[:4] == ["decide", "search_wikipedia", "search_wikipedia", "answer"]


@pytest.mark.parametrize("attempts", [1, 2])
def test_search_attempts_are_bounded_by_the_setting(tmp_path, attempts):
    wiki = FakeWiki([])
    r = make_agent(tmp_path, ScriptedLLM(replies=["Leonardo."], labels=["search"]), wiki=wiki,
                   max_search_attempts=attempts).ask(text="Who painted the Mona Lisa?")
    assert len(wiki.queries) == attempts
    assert r.answer == "Leonardo." and r.error is None


def test_second_search_that_finds_the_article_grounds_the_answer(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci.", "Mona Lisa, portrait by Leonardo da Vinci"], labels=["search"])
    wiki = FakeWiki([], [MONA_LISA])
    r = make_agent(tmp_path, llm, wiki=wiki).ask(text="Who painted the Mona Lisa?")
    assert len(wiki.queries) == 2
    assert 'Wikipedia, "Mona Lisa"' in r.answer
    assert [s["title"] for s in r.sources] == ["Mona Lisa"]
    assert not any("No Wikipedia article matched" in n for n in r.notices)


def test_wikipedia_failure_still_answers_with_a_notice(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=["search"])
    wiki = FakeWiki(ToolError("Wikipedia is unreachable (timed out after 8s)"))
    r = make_agent(tmp_path, llm, wiki=wiki).ask(text="Who painted the Mona Lisa?")

    assert r.error is None
    assert r.answer == "Leonardo da Vinci painted it."
    assert any("Wikipedia search failed" in n and "unreachable" in n for n in r.notices)
    search = next(e for e in trace_of(r) if e.step == "search_wikipedia")
    assert "unreachable" in (search.error or "")
    assert steps_of(r) == SEARCH_PATH


# -- the route decision -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [RuntimeError("model crashed"), {"search": 0.9}, {"search": float("nan"), "answer": 1.0, "draw": 0.0}],
    ids=["exception", "missing-labels", "not-a-probability"],
)
def test_malformed_decision_is_retried_once(tmp_path, bad):
    llm = ScriptedLLM(replies=["Leaves fall."], labels=[bad, "answer"])
    r = make_agent(tmp_path, llm).ask(text="Write a short poem about autumn.")

    assert r.route == "answer" and r.error is None
    assert not any("fell back" in n for n in r.notices)
    decide = next(e for e in trace_of(r) if e.step == "decide")
    assert decide.decision == "answer"
    assert decide.data["attempts"] == 2
    assert decide.data["fallback"] is False
    assert len(decide.data["errors"]) == 1


def test_decision_failing_twice_falls_back_to_search(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it.", "Mona Lisa by Leonardo da Vinci"],
                      labels=[RuntimeError("garbled logits"), RuntimeError("garbled again")])
    wiki = FakeWiki([MONA_LISA])
    r = make_agent(tmp_path, llm, wiki=wiki).ask(text="Who painted the Mona Lisa?")

    assert r.route == "search" and r.error is None
    assert "fell back" in r.route_reason
    assert any("fell back to 'search'" in n and "garbled again" in n for n in r.notices)
    decide = next(e for e in trace_of(r) if e.step == "decide")
    assert decide.decision == "search"
    assert decide.data["fallback"] is True and decide.data["attempts"] == 2
    # the run carried on along the safe route
    assert len(wiki.queries) == 1 and 'Wikipedia, "Mona Lisa"' in r.answer


def test_decide_node_alone_routes_with_a_command(tmp_path):
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
    from langgraph.runtime import Runtime

    s = Settings(out_dir=tmp_path)
    ctx = Context(tools=Toolbox(s, llm=ScriptedLLM(labels=["draw"])))
    state = {"question": "Can you paint a castle?", "run_id": "r1", "run_dir": str(tmp_path / "r1")}
    out = build_graph().nodes["decide"].invoke(state, {"configurable": {CONFIG_KEY_RUNTIME: Runtime(context=ctx)}})
    assert out.goto == "draw"
    assert out.update["route"] == "draw" and "draw" in out.update["route_reason"]
    assert [e.step for e in read_trace(tmp_path / "r1")] == ["decide"]


def test_search_node_alone_stops_retrying_at_the_last_attempt(tmp_path):
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
    from langgraph.runtime import Runtime

    s = Settings(out_dir=tmp_path, max_search_attempts=3)
    wiki = FakeWiki([])
    config = {"configurable": {CONFIG_KEY_RUNTIME: Runtime(context=Context(tools=Toolbox(s, wiki=wiki)))}}
    node = build_graph().nodes["search_wikipedia"]
    # A state in the middle of turn r2 (turn_of == run_id: per-turn fields are that turn's own).
    base = {"question": "Who painted the Mona Lisa?", "run_id": "r2", "run_dir": str(tmp_path / "r2"),
            "route": "search", "turn_of": "r2"}

    first = node.invoke(base, config)
    assert first.goto == "search_wikipedia"
    assert first.update["search_attempts"] == 1

    last = node.invoke({**base, "search_attempts": 2, "search_query": "mona lisa painted"}, config)
    assert last.goto == "answer"
    assert last.update["search_attempts"] == 3 and last.update["passages"] == []
    assert any("No Wikipedia article matched" in n for n in last.update["notices"])
    assert [q for q, _ in wiki.queries] == ["Who painted the Mona Lisa", "mona lisa painted"]


# -- errors ------------------------------------------------------------------------------------
def test_empty_answer_from_the_model_is_an_error_and_the_run_is_still_saved(tmp_path):
    llm = ScriptedLLM(replies=["   "], labels=["answer"])
    r = make_agent(tmp_path, llm).ask(text="Write a short poem about autumn.")

    assert r.error and "empty answer" in r.error
    assert r.answer is None and not r.ok
    assert r.route == "answer"
    run_dir = Path(r.trace_path).parent
    assert (run_dir / "trace.jsonl").is_file() and (run_dir / "result.json").is_file()
    events = trace_of(r)
    assert [e.step for e in events] == ["decide", "answer"]
    assert "empty answer" in events[-1].error
    assert load_result(run_dir) == r


def test_model_failure_while_answering_is_an_error_result(tmp_path):
    llm = ScriptedLLM(replies=[ToolError("could not load LLM 'nowhere/model': not found offline")],
                      labels=["answer"])
    r = make_agent(tmp_path, llm).ask(text="Write a short poem about autumn.")

    assert r.error == "could not load LLM 'nowhere/model': not found offline"
    assert r.answer is None and r.route == "answer"
    events = trace_of(r)
    assert [e.step for e in events] == ["decide", "answer"]
    assert events[-1].error == r.error
    assert load_result(Path(r.trace_path).parent) == r


class SlowEmptyWiki(FakeWiki):
    def search(self, query, k=3):
        import time

        time.sleep(0.05)
        return super().search(query, k)


def test_timings_count_every_search_attempt(tmp_path):
    r = make_agent(tmp_path, ScriptedLLM(replies=["Leonardo."], labels=["search"]),
                   wiki=SlowEmptyWiki([])).ask(text="Who painted the Mona Lisa?")
    searches = [e.ms for e in trace_of(r) if e.step == "search_wikipedia"]
    assert len(searches) == 2
    assert r.timings_ms["search_wikipedia"] == pytest.approx(sum(searches), abs=1.0)


@pytest.mark.parametrize("text", ["", "   \n\t", "\x00"])
def test_empty_question_is_an_error_result_with_trace_and_result(tmp_path, text):
    llm = ScriptedLLM()
    r = make_agent(tmp_path, llm).ask(text=text)

    assert r.error.startswith("empty question")
    assert r.answer is None and r.route is None
    assert llm.calls == []
    run_dir = tmp_path / "runs" / r.run_id
    assert Path(r.trace_path) == run_dir / "trace.jsonl"
    assert (run_dir / "trace.jsonl").is_file()
    assert load_result(run_dir) == r
    (event,) = read_trace(run_dir)
    assert event.error.startswith("empty question")


def test_no_input_at_all_is_an_error(tmp_path):
    r = make_agent(tmp_path, ScriptedLLM()).ask()
    assert r.error.startswith("empty question")


def test_overlong_question_is_truncated_with_a_notice(tmp_path):
    llm = ScriptedLLM(replies=["Fine."], labels=["answer"])
    text = "word " * 60  # 299 characters
    r = make_agent(tmp_path, llm, max_question_chars=100).ask(text=text)
    assert r.question == text.strip()[:100].strip()
    assert any("only the first 100" in n for n in r.notices)


# -- audio ------------------------------------------------------------------------------------
def test_audio_question_is_transcribed_first(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci.", "Mona Lisa by Leonardo da Vinci"], labels=["search"])
    asr = FakeASR("  Who painted the Mona Lisa?  ")
    wiki = FakeWiki([MONA_LISA])
    audio = write_tone(tmp_path / "question.wav", seconds=1.5)
    r = make_agent(tmp_path, llm, asr=asr, wiki=wiki).ask(audio=audio)

    assert r.error is None
    (given,) = asr.calls
    assert audio_seconds(given) == pytest.approx(1.5, abs=0.01)
    assert r.transcript == "Who painted the Mona Lisa?"
    assert r.question == r.transcript
    assert steps_of(r) == ["transcribe", *SEARCH_PATH]
    assert list(r.timings_ms)[0] == "transcribe"
    transcribe = trace_of(r)[0]
    assert transcribe.tool == "asr" and transcribe.model == "fake-asr"
    assert str(audio) in transcribe.input
    # the transcript, not the file name, is what the router and the search saw
    assert llm.calls[0][1][-1]["content"] == "Who painted the Mona Lisa?"
    assert wiki.queries[0][0] == "Who painted the Mona Lisa"


def test_audio_array_is_saved_beside_the_run_and_transcribed(tmp_path):
    asr = FakeASR("Write a poem about rain.")
    t = np.arange(8000, dtype=np.float32) / 8000
    r = make_agent(tmp_path, ScriptedLLM(replies=["Rain taps."], labels=["answer"]), asr=asr).ask(
        audio=(0.3 * np.sin(2 * np.pi * 220 * t), 8000))  # 1 s at 8 kHz
    assert r.error is None and r.transcript == "Write a poem about rain."
    saved = Path(r.trace_path).parent / "input.wav"
    assert saved.is_file()
    assert audio_seconds(saved) == pytest.approx(1.0, abs=0.01)
    (given,) = asr.calls
    assert audio_seconds(given) == pytest.approx(1.0, abs=0.01)
    assert trace_of(r)[0].input == str(saved)


@pytest.mark.parametrize(
    "failure, message",
    [(AudioError("the recogniser gave up"), "the recogniser gave up"),
     ("  ", "no speech recognised in the audio")],
    ids=["audio-error", "empty-transcript"],
)
def test_audio_that_cannot_be_transcribed_is_an_error_result(tmp_path, failure, message):
    llm = ScriptedLLM()
    asr = FakeASR(failure)
    r = make_agent(tmp_path, llm, asr=asr).ask(audio=write_tone(tmp_path / "q.wav"))

    assert len(asr.calls) == 1
    assert r.error == message
    assert r.answer is None and r.route is None
    assert llm.calls == []
    events = trace_of(r)
    assert [e.step for e in events] == ["transcribe"]
    assert events[0].error == message
    assert load_result(Path(r.trace_path).parent) == r


@pytest.mark.parametrize("kind", ["missing", "directory", "corrupt", "silent"])
def test_unusable_audio_file_is_an_error_result_before_the_model_runs(tmp_path, kind):
    import soundfile as sf

    path = tmp_path / f"{kind}.wav"
    expected = {"missing": "not found", "directory": "directory", "corrupt": "cannot decode",
                "silent": "silent"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 50)
    elif kind == "silent":
        sf.write(path, np.zeros(32000, dtype=np.float32), 16000)
    asr, llm = FakeASR(), ScriptedLLM()
    r = make_agent(tmp_path, llm, asr=asr).ask(audio=path)

    assert r.error and expected in r.error
    assert "Traceback" not in r.error and "\n" not in r.error
    assert asr.calls == [] and llm.calls == []
    assert [e.step for e in trace_of(r)] == ["transcribe"]
    assert load_result(Path(r.trace_path).parent) == r


# -- trace, result file and streaming --------------------------------------------------------------
def test_trace_has_one_event_per_step_in_order_and_result_json_matches(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it.", "Mona Lisa by Leonardo da Vinci"], labels=["search"])
    r = make_agent(tmp_path, llm, wiki=FakeWiki([MONA_LISA])).ask(text="Who painted the Mona Lisa?")

    run_dir = tmp_path / "runs" / r.run_id
    assert Path(r.trace_path) == run_dir / "trace.jsonl"
    lines = (run_dir / "trace.jsonl").read_text(encoding="utf-8").splitlines()
    raw = [json.loads(line) for line in lines]
    assert [e["step"] for e in raw] == SEARCH_PATH
    assert [e["tool"] for e in raw] == ["llm", "wikipedia", "llm", "image_prompt", "diffusion", None]
    for e in raw:
        assert {"step", "tool", "ms"} <= set(e)
        assert isinstance(e["ms"], (int, float)) and e["ms"] >= 0
        assert e["run_id"] == r.run_id
        assert e["error"] is None
    decide = raw[0]
    assert decide["decision"] == "search"
    assert decide["reason"] == r.route_reason and decide["reason"]
    assert decide["model"] == "scripted"
    assert set(r.timings_ms) == set(SEARCH_PATH)
    saved = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert saved == json.loads(r.model_dump_json())
    assert Result.model_validate(saved) == r


def test_stream_yields_steps_tokens_and_the_result_in_order(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it.", "Mona Lisa by Leonardo da Vinci"], labels=["search"])
    agent = make_agent(tmp_path, llm, wiki=FakeWiki([MONA_LISA]))
    events = list(agent.stream(text="Who painted the Mona Lisa?", progress=True))

    assert all(isinstance(e, StepEvent) for e in events)
    assert [e.kind for e in events].count("result") == 1 and events[-1].kind == "result"
    result = events[-1].result
    steps = [e.step.step for e in events if e.kind == "step"]
    assert steps == SEARCH_PATH == steps_of(result)
    kinds = [(e.kind, e.step.step if e.step else (e.progress or {}).get("type")) for e in events]
    tokens = [i for i, k in enumerate(kinds) if k == ("progress", "token")]
    assert tokens, "the answer step must stream tokens"
    answer_at = kinds.index(("step", "answer"))
    searched_at = kinds.index(("step", "search_wikipedia"))
    assert searched_at < min(tokens) and max(tokens) < answer_at
    streamed = "".join(events[i].progress["text"] for i in tokens)
    assert streamed.strip() == "Leonardo da Vinci."
    assert result.answer.startswith(streamed.strip())


def test_stream_without_progress_yields_only_steps_and_the_result(tmp_path):
    llm = ScriptedLLM(replies=["Leaves fall."], labels=["answer"])
    events = list(make_agent(tmp_path, llm).stream(text="Write a poem about autumn."))
    assert {e.kind for e in events} == {"step", "result"}
    assert events[-1].result.answer == "Leaves fall."


def test_models_are_loaded_once_and_reused_across_questions(tmp_path, monkeypatch):
    import tools.asr
    import tools.llm
    import tools.wikipedia

    built = {"llm": 0, "asr": 0, "wiki": 0}
    calibration = ["search"] * len(_calibration_inputs())
    llm = ScriptedLLM(replies=["Leaves fall.", "Rain taps."],
                      labels=["answer", *calibration, "answer"])
    asr = FakeASR("Write a poem about rain.")
    wiki = FakeWiki([])

    def factory(key, obj):
        def make(*args, **kwargs):
            built[key] += 1
            return obj
        return make

    monkeypatch.setattr(tools.llm, "local_llm", factory("llm", llm))
    monkeypatch.setattr(tools.asr, "WhisperASR", factory("asr", asr))
    monkeypatch.setattr(tools.wikipedia, "make_backend", factory("wiki", wiki))
    settings = Settings(out_dir=tmp_path / "runs")
    agent = Agent(settings)  # the default Toolbox: every model loads lazily
    assert built == {"llm": 0, "asr": 0, "wiki": 0}

    first = agent.ask(text="Write a poem about autumn.")
    image, router = agent.tools.image, agent.tools.router
    second = agent.ask(audio=write_tone(tmp_path / "q.wav"))

    assert first.answer == "Leaves fall." and second.answer == "Rain taps."
    assert built == {"llm": 1, "asr": 1, "wiki": 0}
    assert agent.tools.llm is llm and agent.tools.image is image and agent.tools.router is router
    # the router calibrates once per model: one score per question plus the calibration inputs once
    scores = sum(1 for kind, _ in llm.calls if kind == "score")
    assert scores == 2 + len(_calibration_inputs())


# -- the graph as LangGraph tooling sees it -----------------------------------------------------------
def test_exported_graph_compiles_with_all_nodes():
    from langgraph.graph.state import CompiledStateGraph

    from agent.graph import graph

    assert isinstance(graph, CompiledStateGraph)
    assert {"transcribe", "decide", "search_wikipedia", "answer", "draw", "rewrite_image_prompt",
            "generate_image", "finish"} <= set(graph.nodes)


def test_drawn_graph_shows_every_route():
    from agent.graph import graph

    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert {("decide", "search_wikipedia"), ("decide", "answer"), ("decide", "draw"),
            ("search_wikipedia", "search_wikipedia"), ("search_wikipedia", "answer"),
            ("answer", "rewrite_image_prompt"), ("draw", "generate_image"),
            ("generate_image", "finish")} <= edges
    assert ("decide", "__end__") not in edges


def test_langgraph_json_points_at_the_graph():
    path = REPO / "langgraph.json"
    if not path.is_file():
        pytest.skip("langgraph.json does not exist yet")
    config = json.loads(path.read_text(encoding="utf-8"))
    targets = list(config.get("graphs", {}).values())
    targets = [t if isinstance(t, str) else t.get("path", "") for t in targets]
    assert any(t.replace("./", "").endswith("agent/graph.py:graph") for t in targets), targets
    module, _, attr = targets[0].replace("./", "").partition(":")
    assert (REPO / module).is_file() and attr == "graph"


# -- forced route, text only -----------------------------------------------------------------
def test_forced_route_skips_the_decision_and_says_so(tmp_path):
    llm = ScriptedLLM(replies=["Leonardo da Vinci painted it."], labels=["draw"])  # the LLM would say draw
    agent = make_agent(tmp_path, llm, wiki=FakeWiki([MONA_LISA]))
    r = agent.ask(text="Who painted the Mona Lisa?", route="search", image=False)

    assert r.route == "search" and r.error is None
    assert "forced" in r.route_reason and "did not decide" in r.route_reason
    assert not any(kind == "score" for kind, _ in llm.calls)  # no label scoring happened
    assert steps_of(r) == ["decide", "search_wikipedia", "answer", "finish"]  # text only: no image steps
    assert r.image_path is None and r.image_prompt is None and "Leonardo" in r.answer

    # the next call on the same Agent is back to the settings' defaults (LLM decides, image on)
    r2 = agent.ask(text="Show me a cat eating fish")
    assert r2.route == "draw" and "forced" not in r2.route_reason
    assert steps_of(r2) == ["decide", "draw", "generate_image", "finish"]


def test_text_only_setting_on_the_draw_route_writes_the_prompt_but_draws_nothing(tmp_path):
    llm = ScriptedLLM(replies=["A cat eating a fish, cartoon"], labels=["draw"])
    settings = Settings(out_dir=tmp_path / "runs", image=False)
    tools = Toolbox(settings, llm=llm, asr=NoASR(), wiki=FakeWiki(), image=ImageGenerator(None, width=64, height=64))
    r = Agent(settings, tools=tools).ask(text="Show me a cat eating fish")

    assert r.route == "draw" and r.error is None
    assert steps_of(r) == ["decide", "draw", "finish"]
    assert r.image_path is None and "cat" in r.image_prompt.lower()
    assert r.answer.startswith("Images are off") and r.image_prompt in r.answer


def test_a_bad_forced_route_is_refused(tmp_path):
    agent = make_agent(tmp_path, ScriptedLLM(replies=["x"], labels=["answer"]))
    with pytest.raises(ValueError, match="route must be"):
        agent.ask(text="hello", route="paint")
