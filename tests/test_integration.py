"""The agent with its real starter models: SmolLM2 (route, answer, image prompt), the offline
Wikipedia starter corpus and Whisper tiny.en. One Agent serves the module so each model loads once.
No image model is configured, so every run ends with an honest "no image generated" card.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.agent import Agent, load_result
from agent.settings import Settings
from agent.trace import read_trace

pytestmark = pytest.mark.slow

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/raw/speech"
JFK = SPEECH / "whisper_jfk" / "jfk.flac"


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Agent:
    return Agent(Settings(out_dir=tmp_path_factory.mktemp("integration-runs")))


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def test_typed_factual_question_is_answered_from_wikipedia(agent):
    r = agent.ask(text="Who painted the Mona Lisa?")

    assert r.error is None, r.error
    assert r.route == "search", r.route_reason
    titles = [s["title"] for s in r.sources]
    assert "Mona Lisa" in titles, titles
    assert all(s["url"].startswith("https://en.wikipedia.org/wiki/") for s in r.sources)
    # cited: the article is named and the passage's sentence about the painter is quoted
    assert "Wikipedia" in r.answer and '"Mona Lisa"' in r.answer
    assert "Leonardo" in r.answer
    assert r.image_generated is False and Path(r.image_path).is_file()
    events = read_trace(Path(r.trace_path).parent)
    assert [e.step for e in events][:3] == ["decide", "search_wikipedia", "answer"]
    assert events[0].model and "SmolLM2" in events[0].model
    assert events[1].model and events[1].model.startswith("offline")
    assert load_result(Path(r.trace_path).parent) == r


def test_drawing_request_is_drawn_or_honestly_not(agent):
    r = agent.ask(text="Show me a cat eating fish")

    assert r.error is None, r.error
    assert r.route == "draw", r.route_reason
    prompt = r.image_prompt.lower()
    assert "cat" in prompt and "fish" in prompt and "show me" not in prompt
    assert r.sources == [] and r.search_query is None
    # no image model is configured: a card, and the answer says the picture was not drawn
    assert r.image_generated is False
    assert Path(r.image_path).is_file() and Path(r.image_path).suffix == ".png"
    assert "could not draw" in r.answer.lower()
    assert any("No image was generated" in n for n in r.notices)


def test_spoken_question_is_transcribed_then_routed(agent):
    if not JFK.is_file():
        pytest.skip(f"speech clip not available: {JFK}")
    r = agent.ask(audio=JFK)

    assert r.error is None, r.error
    assert "ask not what your country can do for you" in _words(r.transcript), r.transcript
    assert r.question == r.transcript
    assert r.route in ("search", "answer", "draw")
    assert [k for k in r.timings_ms if k != "load"][:2] == ["transcribe", "decide"]  # "load": Whisper, first use
    assert r.timings_ms["transcribe"] > 0
    assert r.answer and r.answer.strip()
    first = read_trace(Path(r.trace_path).parent)[0]
    assert first.step == "transcribe" and "whisper" in (first.model or "").lower()
