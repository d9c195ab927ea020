"""The agent's tools as LangChain StructuredTools, built from an Agent's Toolbox (its settings, its
models): the real starter LLM, Whisper tiny.en, the offline Wikipedia and a tiny real diffusers
pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.tools import StructuredTool
from PIL import Image

from agent.agent import Agent
from agent.langchain_tools import langchain_tools

SPEECH = Path(__file__).resolve().parents[2] / "shared/data/raw/speech"
MONA_TEXT = ("The Mona Lisa is a half-length portrait painting by Italian artist Leonardo da Vinci. "
             "Considered an archetypal masterpiece of the Italian Renaissance, it has been described "
             "as the best known, the most visited, the most written about, the most sung about, the "
             "most parodied work of art in the world.")


def by_name(agent: Agent) -> dict:
    return {t.name: t for t in agent.langchain_tools()}


def test_the_five_tools_and_their_schemas(tmp_path):
    tools = by_name(Agent(out_dir=tmp_path))
    assert list(tools) == ["transcribe_audio", "search_wikipedia", "write_answer", "rewrite_image_prompt",
                           "generate_image"]
    assert "path" in tools["transcribe_audio"].args and "audio" in tools["transcribe_audio"].description.lower()
    assert set(tools["write_answer"].args) >= {"question", "context", "title"}
    assert set(tools["generate_image"].args) == {"prompt", "seed"}
    schemas = {name: t.tool_call_schema.model_json_schema() for name, t in tools.items()}
    json.dumps(schemas)  # what a tool-calling LLM gets
    seed = schemas["generate_image"]["properties"]["seed"]
    assert seed["minimum"] == 0 and seed["default"] == 0 and "seed" in seed["description"].lower()
    assert schemas["write_answer"]["required"] == ["question"]
    assert all(t.description and all(p.get("description") for p in schemas[n]["properties"].values())
               for n, t in tools.items())


def test_the_toolbox_method_and_the_agent_alias_give_the_same_tools(tmp_path):
    agent = Agent(out_dir=tmp_path)
    tools = agent.tools.as_langchain_tools()
    assert all(isinstance(t, StructuredTool) for t in tools)
    assert [t.name for t in tools] == [t.name for t in agent.langchain_tools()] == [
        t.name for t in langchain_tools(agent.tools)]


def test_bad_arguments_and_tool_errors_are_results_not_exceptions(tmp_path):
    tools = by_name(Agent(out_dir=tmp_path))
    text = tools["generate_image"].invoke({"prompt": "a green owl", "seed": -3})
    assert text == ("Invalid arguments for generate_image: seed: Input should be greater than or equal to 0. "
                    "Call generate_image again with corrected arguments.")
    assert "query: String should have at least 1 character" in tools["search_wikipedia"].invoke({"query": "  "})
    # audio is read before Whisper loads, so this needs no model
    assert tools["transcribe_audio"].invoke({"path": "/no/such/file.wav"}) == (
        "transcribe_audio failed: audio file not found: /no/such/file.wav")


def test_tools_follow_the_agents_settings_not_the_environment(tmp_path, monkeypatch, tiny_model):
    """The image model comes from the Agent's settings; ASKDRAW_IMAGE_MODEL in the environment
    only matters through Settings (here it is overridden)."""
    monkeypatch.setenv("ASKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASKDRAW_IMAGE_MODEL", "/nowhere/model")
    agent = Agent(out_dir=tmp_path, image_model=str(tiny_model), image_steps=2, image_size=64)
    text = by_name(agent)["generate_image"].invoke({"prompt": "a green owl", "seed": 5})
    assert text.startswith("Generated an image with " + str(tiny_model)), text
    path = Path(text.rsplit(": ", 1)[-1].strip())
    with Image.open(path) as im:
        assert im.text["askdraw:generated"] == "true" and im.size == (64, 64)
    assert agent.tools.image.loaded  # the agent's own generator was used (and stays loaded)


def test_without_an_image_model_the_tool_says_so_and_saves_a_card(tmp_path, monkeypatch):
    monkeypatch.setenv("ASKDRAW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ASKDRAW_IMAGE_MODEL", raising=False)
    text = by_name(Agent(out_dir=tmp_path))["generate_image"].invoke({"prompt": "a green owl"})
    assert "NO IMAGE GENERATED" in text
    path = Path(text.split("saved at ")[-1].strip())
    assert path.suffix == ".png" and path.is_file() and "images" in path.parts


def test_search_tool_on_the_offline_leads(tmp_path):
    text = by_name(Agent(out_dir=tmp_path))["search_wikipedia"].invoke({"query": "Mona Lisa painting"})
    assert text.startswith("[1] ") and "Mona Lisa" in text.split("\n", 1)[0]


@pytest.mark.slow
def test_llm_tools_use_the_agents_llm(tmp_path):
    agent = Agent(out_dir=tmp_path)
    tools = by_name(agent)
    text = tools["write_answer"].invoke({"question": "Who painted the Mona Lisa?", "context": MONA_TEXT,
                                         "title": "Mona Lisa"})
    assert "Leonardo" in text or "Mona Lisa" in text
    prompt = tools["rewrite_image_prompt"].invoke({"request": "Show me two red apples on a table"})
    assert "apples" in prompt.lower() and "show me" not in prompt.lower()
    assert agent.tools.llm.loaded


@pytest.mark.slow
def test_transcribe_tool_uses_the_agents_asr(tmp_path):
    audio = SPEECH / "whisper_jfk" / "jfk.flac"
    if not audio.exists():
        pytest.skip(f"shared speech data not found: {audio}")
    tools = by_name(Agent(out_dir=tmp_path))
    assert "fellow americans" in tools["transcribe_audio"].invoke({"path": str(audio)}).lower()
