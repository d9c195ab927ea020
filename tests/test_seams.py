"""The seams (tools/base.py): every real tool the Toolbox builds conforms to its protocol, with an
explicit load()/loaded, and nothing is loaded until it is used."""

from __future__ import annotations

import pytest

from agent.context import Toolbox
from agent.settings import Settings
from tools.base import ChatModel, ImageGenerator, Loadable, SpeechRecognizer, WikipediaBackend

LOCAL = Settings()
ENDPOINTS = Settings(llm_endpoint="http://127.0.0.1:9/v1", asr_endpoint="http://127.0.0.1:9/v1",
                     image_endpoint="http://127.0.0.1:9/v1", wiki="live")


@pytest.mark.parametrize("settings", [LOCAL, ENDPOINTS], ids=["local", "endpoints"])
def test_every_tool_conforms_and_is_not_loaded_yet(settings):
    box = Toolbox(settings)
    for tool, protocol in ((box.llm, ChatModel), (box.asr, SpeechRecognizer), (box.image, ImageGenerator),
                           (box.wiki, WikipediaBackend)):
        assert isinstance(tool, protocol), (type(tool).__name__, protocol.__name__)
    for tool in (box.llm, box.asr):
        assert isinstance(tool, Loadable) and not tool.loaded, type(tool).__name__
    assert box.llm is box.llm and box.router.llm is box.llm  # built once, shared


def test_a_tool_passed_in_is_used_as_it_is():
    from tests.fakes import ScriptedLLM

    llm = ScriptedLLM()
    box = Toolbox(LOCAL, llm=llm)
    assert box.llm is llm and box.router.llm is llm
