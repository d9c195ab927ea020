"""OpenAI-compatible endpoint backends (issue 8): settings and wiring, and the route decision's
structured scoring, without a server. Real servers: tests/test_endpoints_server.py (llama.cpp's
server with the starter GGUF, a loopback Whisper/diffusers server, and misbehaving servers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from agent.context import Toolbox
from agent.router import Router
from agent.settings import Settings
from tools.endpoint import Endpoint, EndpointError, EndpointUnavailable, normalise_base_url
from tools.llm import EndpointLLM
from tools.llm_endpoint import _top_logprobs


@pytest.mark.parametrize("given, expected", [
    ("http://gpu-box:8000", "http://gpu-box:8000/v1"),
    ("http://gpu-box:8000/", "http://gpu-box:8000/v1"),
    ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1"),
    ("https://api.example.com/v1/chat/completions", "https://api.example.com/v1"),
    ("http://host/openai/v1", "http://host/openai/v1"),
    ("  http://host:1/v1  ", "http://host:1/v1"),
])
def test_endpoint_urls_are_normalised(given, expected):
    assert normalise_base_url(given) == expected


@pytest.mark.parametrize("bad", ["localhost:8000", "ftp://host/v1", "http://", ""])
def test_bad_endpoint_urls_are_refused(bad):
    with pytest.raises(ValueError, match="http:// or https://"):
        normalise_base_url(bad)


def test_settings_take_endpoints_from_env(monkeypatch):
    monkeypatch.setenv("ASKDRAW_LLM_ENDPOINT", "http://gpu-box:8000")
    monkeypatch.setenv("ASKDRAW_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setenv("ASKDRAW_ASR_ENDPOINT", "http://gpu-box:8001/v1")
    monkeypatch.setenv("ASKDRAW_IMAGE_ENDPOINT", "http://gpu-box:8002/")
    monkeypatch.setenv("ASKDRAW_IMAGE_MODEL", "sd-turbo")
    monkeypatch.setenv("ASKDRAW_ENDPOINT_TIMEOUT", "5")
    monkeypatch.setenv("ASKDRAW_ENDPOINT_RETRIES", "0")
    monkeypatch.setenv("ASKDRAW_ENDPOINT_API_KEY_ENV", "GPU_BOX_KEY")
    monkeypatch.setenv("GPU_BOX_KEY", "sk-secret")
    s = Settings()
    assert s.llm_endpoint == "http://gpu-box:8000/v1" and s.image_endpoint == "http://gpu-box:8002/v1"
    tools = Toolbox(s)
    llm, asr, image = tools.llm, tools.asr, tools.image  # built, nothing contacted yet
    assert isinstance(llm, EndpointLLM) and llm.model == "Qwen/Qwen2.5-7B-Instruct"
    assert type(asr).__name__ == "EndpointASR" and asr.model is None
    assert type(image).__name__ == "EndpointImageGenerator" and image.server_model == "sd-turbo"
    for tool in (llm, asr, image):
        assert tool.endpoint.timeout == 5 and tool.endpoint.retries == 0
        assert tool.endpoint.api_key == "sk-secret"
    # the key is read from the environment, never stored in the settings (which reach traces)
    assert "sk-secret" not in s.model_dump_json()


def test_python_api_takes_the_same_settings():
    from agent.agent import Agent

    agent = Agent(Settings(llm_endpoint="http://127.0.0.1:9/v1", llm_model="m"))
    assert isinstance(agent.tools.llm, EndpointLLM) and agent.tools.llm.name == "m @ http://127.0.0.1:9/v1"


def test_cli_refuses_a_bad_endpoint_url_in_one_line():
    from agent.cli import app

    result = CliRunner().invoke(app, ["ask", "hi", "--llm-endpoint", "localhost:8000"])
    assert result.exit_code == 2
    assert "invalid setting llm_endpoint" in result.output and "http:// or https://" in result.output
    assert "Traceback" not in result.output


def test_a_local_model_and_an_endpoint_for_the_same_role_is_refused():
    from agent.cli import app

    result = CliRunner().invoke(app, ["ask", "hi", "--llm", "qwen2.5:7b", "--llm-endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "name the model on the server with llm_model (--llm-model)" in result.output
    with pytest.raises(ValueError, match="asr_model"):
        Settings(asr="starter:base", asr_endpoint="http://127.0.0.1:9")


def test_no_key_set_sends_a_placeholder(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert Endpoint("http://127.0.0.1:9").api_key == "not-needed"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-1")
    assert Endpoint("http://127.0.0.1:9").api_key == "sk-1"


def _reply_with_top(pairs):
    top = [SimpleNamespace(token=t, logprob=lp) for t, lp in pairs]
    content = [SimpleNamespace(token=pairs[0][0], logprob=pairs[0][1], top_logprobs=top)]
    return SimpleNamespace(choices=[SimpleNamespace(logprobs=SimpleNamespace(content=content))])


def test_logprobs_become_label_probabilities(monkeypatch):
    llm = EndpointLLM("http://127.0.0.1:9", "m")
    reply = _reply_with_top([("search", -0.1), (" draw", -2.5), ("Search", -3.0), ("the", -4.0)])
    monkeypatch.setattr(llm, "_create", lambda probe=False, **kw: reply)
    scores = llm.score_labels([{"role": "user", "content": "x"}], ["search", "answer", "draw"])
    assert llm.label_method == "logprobs"
    assert abs(sum(scores.values()) - 1) < 1e-9
    assert scores["search"] > scores["draw"] > scores["answer"]  # 'answer' unseen: below every listed token
    assert _top_logprobs(SimpleNamespace(choices=[SimpleNamespace(logprobs=None)])) == []


def test_without_logprobs_the_choice_is_json_schema_constrained(monkeypatch):
    llm = EndpointLLM("http://127.0.0.1:9", "m")
    calls = []

    def create(probe=False, **kw):
        calls.append(kw)
        if kw.get("logprobs"):
            return SimpleNamespace(choices=[SimpleNamespace(logprobs=None)])  # server ignores logprobs
        assert kw["response_format"]["type"] == "json_schema"
        assert kw["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == ["search", "answer", "draw"]
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content='{"label": "draw"}'))])

    monkeypatch.setattr(llm, "_create", create)
    assert llm.score_labels([{"role": "user", "content": "x"}], ["search", "answer", "draw"]) == \
        {"search": 0.0, "answer": 0.0, "draw": 1.0}
    assert llm.label_method == "json_schema" and "no logprobs" in llm.label_fallbacks[0]
    # the working method is remembered: the next decision asks once
    calls.clear()
    llm.score_labels([{"role": "user", "content": "y"}], ["search", "answer", "draw"])
    assert len(calls) == 1


def test_the_last_resort_is_a_validated_one_word_reply(monkeypatch):
    llm = EndpointLLM("http://127.0.0.1:9", "m", label_method="parse")
    replies = iter(["Answer.", "I think you should search"])
    monkeypatch.setattr(llm, "_create", lambda probe=False, **kw: SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content=next(replies)))]))
    assert llm.score_labels([{"role": "user", "content": "x"}], ["search", "answer", "draw"])["answer"] == 1.0
    with pytest.raises(Exception, match="not one of search, answer, draw"):
        llm.score_labels([{"role": "user", "content": "x"}], ["search", "answer", "draw"])


def test_router_explains_each_method_and_stops_on_a_dead_server(monkeypatch):
    llm = EndpointLLM("http://127.0.0.1:9", "m", label_method="json_schema")
    monkeypatch.setattr(llm, "_create", lambda probe=False, **kw: SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content='{"label": "answer"}'))]))
    decision = Router(llm).decide("What is 2 + 2?")
    assert decision.route == "answer" and "JSON-schema-constrained" in decision.reason and not decision.fallback

    def down(probe=False, **kw):
        raise EndpointUnavailable("LLM endpoint http://127.0.0.1:9/v1 is unreachable (Connection refused)")

    monkeypatch.setattr(llm, "_create", down)
    with pytest.raises(EndpointUnavailable):
        Router(llm).decide("What is 2 + 2?")  # no pointless fallback route: the run stops with the reason

    def malformed(probe=False, **kw):
        raise EndpointError("LLM endpoint http://127.0.0.1:9/v1 sent a malformed reply: x")

    monkeypatch.setattr(llm, "_create", malformed)
    decision = Router(llm).decide("What is 2 + 2?")
    assert decision.fallback and decision.route == "search" and "malformed" in decision.reason


def test_a_forced_prefix_is_refused_not_ignored():
    llm = EndpointLLM("http://127.0.0.1:9", "m")
    with pytest.raises(Exception, match="prefix"):
        llm.chat([{"role": "user", "content": "x"}], prefix="Sure")
