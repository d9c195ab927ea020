"""The endpoint backends against real servers on loopback (issue 8).

- llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) serving the starter GGUF:
  all three routes, streaming, logprobs label scoring, the JSON-constrained fallback;
- a loopback audio/image server with real Whisper tiny.en and a real (tiny, random) diffusers
  pipeline behind ``/v1/audio/transcriptions`` and ``/v1/images/generations``;
- scripted servers that misbehave: down, 429/500 (retries with backoff), slow, malformed, broken
  streams, wrong key. Each case checks the one-line message and that the trace was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from agent.agent import Agent
from agent.router import Router
from agent.settings import Settings
from agent.state import ROUTES
from agent.trace import read_trace
from tools.llm import EndpointLLM

try:
    from tests import openai_servers as srv
except ImportError:  # tests/ itself on sys.path
    import openai_servers as srv  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
WAV = ROOT / "examples" / "who_painted_the_mona_lisa.wav"
MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def _steps(result) -> dict:
    return {e.step: e for e in read_trace(Path(result.trace_path).parent)}


# ---------------------------------------------------------------------------------------------
# A real llama.cpp server with the starter model
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url():
    srv.skip_unless_llama_server()
    # --cache: llama-cpp-python keeps the KV state of earlier prompts (the route prompt's few-shot
    # prefix is then not recomputed for every decision: decide p50 1.54 -> 0.45 s in bench_latency)
    with srv.llama_server(n_ctx=4096, extra_args=("--cache", "True")) as url:
        yield url


@pytest.fixture(scope="module")
def llama_agent(llama_url, tmp_path_factory):
    return Agent(Settings(llm_endpoint=llama_url, out_dir=tmp_path_factory.mktemp("runs")))


@pytest.mark.slow
@pytest.mark.parametrize("question, route, expect", [
    ("Who painted the Mona Lisa?", "search", "Leonardo"),
    ("What is 2 + 2?", "answer", "4"),
    ("Show me a cat eating fish", "draw", "cat eating fish"),
])
def test_all_three_routes_through_a_real_llama_cpp_server(llama_agent, llama_url, question, route, expect):
    result = llama_agent.ask(text=question)
    assert result.error is None, result.error
    assert result.route == route, result.route_reason
    assert "from the endpoint's logprobs" in result.route_reason  # a structured decision, with its scores
    assert expect in (result.answer or "")
    steps = _steps(result)
    decide = steps["decide"]
    assert decide.model == f"{srv.LLAMA_MODEL_ALIAS} @ {llama_url}"
    assert decide.data["label_method"] == "logprobs"
    assert set(decide.data["scores"]) == set(ROUTES) and abs(sum(decide.data["scores"].values()) - 1) < 0.01
    if route != "draw":
        assert steps["answer"].model == decide.model  # every LLM call went to the server


@pytest.mark.slow
def test_the_answer_streams_token_by_token_over_the_endpoint(llama_agent):
    tokens, result = [], None
    for event in llama_agent.stream(text="Tell me a fun fact about cats.", route="answer", image=False,
                                    progress=True):
        if event.kind == "progress" and event.progress.get("type") == "token":
            tokens.append(event.progress["text"])
        elif event.kind == "result":
            result = event.result
    assert result is not None and result.error is None and result.answer
    assert len(tokens) >= 3  # pieces arrived one by one, not as one block at the end
    assert "".join(tokens).strip().startswith(result.answer[:20])


@pytest.mark.slow
def test_json_constrained_choice_works_on_the_real_server(llama_url):
    llm = EndpointLLM(llama_url, label_method="json_schema")
    router = Router(llm)
    scores = llm.score_labels(router.messages("Show me a cat eating fish"), list(ROUTES))
    assert sorted(scores.values()) == [0.0, 0.0, 1.0]
    # llama-cpp-python answers the OpenAI form with HTTP 500; its own json_object+schema form works
    assert llm._json_format == "json_object"
    assert any("json_schema" in note and "500" in note for note in llm.label_fallbacks)


def test_a_server_without_logprobs_gets_a_constrained_choice_and_the_trace_says_why(tmp_path):
    with srv.ScriptedServer() as server:
        def reply(rec):  # a chat server that ignores logprobs but takes JSON-schema output
            if rec.path.endswith("/chat/completions") and not rec.stream:
                body = '{"label": "draw"}' if rec.get("response_format") else "draw"
                return srv.Reply.json(srv.chat_completion_body(body))
            return server.default_reply(rec)

        server.default = reply
        result = Agent(Settings(llm_endpoint=server.url, out_dir=tmp_path, image=False)).ask(text="Show me a cat")
    assert result.error is None and result.route == "draw"
    assert "JSON-schema-constrained" in result.route_reason and "no probabilities" in result.route_reason
    decide = _steps(result)["decide"]
    assert decide.data["label_method"] == "json_schema"
    assert decide.data["label_fallbacks"] == ["logprobs: the server returned no logprobs"]


@pytest.mark.slow
def test_cli_with_every_model_behind_an_endpoint(llama_url, tmp_path):
    """The "GPU box" shape: LLM on llama.cpp's server, Whisper and diffusion on another server."""
    with srv.media_server(api_key="sk-test") as media:
        env = {**os.environ, "ASKDRAW_HOME": os.environ.get("ASKDRAW_HOME", str(Path.home() / ".cache" / "askdraw")),
               "MEDIA_KEY": "sk-test", "ASKDRAW_ENDPOINT_API_KEY_ENV": "MEDIA_KEY"}
        proc = subprocess.run(
            [sys.executable, "-m", "agent.cli", "ask", "--audio", str(WAV), "--json", "--out", str(tmp_path),
             "--llm-endpoint", llama_url, "--asr-endpoint", media.url, "--asr-model", "whisper-tiny.en",
             "--image-endpoint", media.url, "--image-model", "tiny-sd", "--image-size", "64"],
            capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert "mona lisa" in result["transcript"].lower()
        assert result["route"] == "search" and "Leonardo" in result["answer"]
        assert result["image_generated"] is True and result["image_model"] == f"tiny-sd @ {media.url}"
        from PIL import Image

        with Image.open(result["image_path"]) as img:
            assert img.size == (64, 64) and img.info.get("askdraw:generated") == "true"
        asr_calls = media.requests_to("/v1/audio/transcriptions")
        image_calls = media.requests_to("/v1/images/generations")
        assert len(asr_calls) == 1 and asr_calls[0].model == "whisper-tiny.en"
        assert asr_calls[0].headers["authorization"] == "Bearer sk-test"  # the key, from $MEDIA_KEY
        assert len(image_calls) == 1 and image_calls[0].json["size"] == "64x64"
        assert image_calls[0].json["prompt"] == result["image_prompt"]
        steps = {e.step: e for e in read_trace(Path(result["trace_path"]).parent)}
        assert steps["transcribe"].model == f"whisper-tiny.en @ {media.url}"
        assert steps["generate_image"].model == f"tiny-sd @ {media.url}"


# ---------------------------------------------------------------------------------------------
# Servers that misbehave (scripted; no model needed)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def scripted():
    with srv.ScriptedServer(default_text="The answer is four.",
                            default_top_logprobs={"answer": -0.1, "search": -2.5, "draw": -4.0}) as server:
        yield server


def _agent(url, tmp_path, **settings) -> Agent:
    return Agent(Settings(llm_endpoint=url, out_dir=tmp_path, wiki="offline", image=False, **settings))


def _assert_failed_with_trace(result, message: str, step: str) -> None:
    assert result.error and message in result.error, result.error
    assert "Traceback" not in result.error and "\n" not in result.error
    assert Path(result.trace_path).exists()  # the run is written, with the failing step and its error
    failing = _steps(result)[step]
    assert failing.error and message in failing.error


def test_a_healthy_scripted_server_answers(scripted, tmp_path):
    result = _agent(scripted.url, tmp_path).ask(text="What is two plus two?")
    assert result.error is None and result.answer
    # the scripted logprobs are the same for every input, so calibration evens them out
    assert _steps(result)["decide"].data["label_method"] == "logprobs"
    result = _agent(scripted.url, tmp_path).ask(text="What is two plus two?", route="answer")
    assert result.error is None and result.answer == "The answer is four."
    assert _steps(result)["answer"].model == "scripted-model @ " + scripted.url


def test_server_down_is_one_clear_error_and_the_trace_is_written(tmp_path):
    start = time.monotonic()
    result = _agent(srv.dead_url(), tmp_path, endpoint_retries=1).ask(text="What is two plus two?")
    _assert_failed_with_trace(result, "is unreachable (Connection refused); tried 2 times", "decide")
    assert result.route is None  # no pointless fallback route when the server is down
    assert time.monotonic() - start < 10


def test_429_is_retried_with_growing_backoff_then_succeeds(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=3)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", *[srv.Reply.error(429, "slow down", code="rate_limited")] * 3)
    result = agent.ask(text="What is two plus two?", route="answer")
    assert result.error is None and result.answer == "The answer is four."
    gaps = scripted.gaps("/v1/chat/completions")[:3]
    assert len(gaps) == 3
    # the client's exponential backoff: ~0.5 s, ~1 s, ~2 s (each minus up to 25 % jitter)
    assert 0.3 < gaps[0] < gaps[1] < gaps[2] < 3.5, gaps


def test_retry_after_is_honoured(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=1)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", srv.Reply.error(429, "busy", headers={"Retry-After": "2"}))
    result = agent.ask(text="What is two plus two?", route="answer")
    assert result.error is None
    assert 1.9 < scripted.gaps("/v1/chat/completions")[0] < 3.5


def test_500_every_time_gives_up_after_the_retries(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=2)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", *[srv.Reply.error(500, "GPU fell off the bus")] * 3)
    result = agent.ask(text="What is two plus two?", route="answer")
    _assert_failed_with_trace(result, "answered HTTP 500 (Internal Server Error: GPU fell off the bus); tried 3 times",
                              "answer")
    assert len(scripted.requests_to("/v1/chat/completions")) == 3


def test_a_server_that_does_not_answer_in_time(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=0, endpoint_timeout=0.5)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", srv.Reply.json({}, delay=3))
    start = time.monotonic()
    result = agent.ask(text="What is two plus two?", route="answer")
    _assert_failed_with_trace(result, "no answer within 0.5 s", "answer")
    assert time.monotonic() - start < 3


def test_a_stream_that_breaks_off_mid_answer(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=0)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", srv.Reply.stream([srv.chat_chunk("The answer"), 0.1, srv.ABORT]))
    result = agent.ask(text="What is two plus two?", route="answer")
    _assert_failed_with_trace(result, "the reply broke off while streaming", "answer")


@pytest.mark.parametrize("reply, message", [
    (srv.Reply(body=b"<html>proxy error page</html>", headers={"Content-Type": "text/html"}),
     "sent a malformed reply: the streamed reply held no completion chunks"),
    (srv.Reply.stream(["data: {not json", "data: [DONE]"]), "sent a malformed reply while streaming"),
])
def test_malformed_answers_are_named_as_such(scripted, tmp_path, reply, message):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=0)
    agent.tools.llm.load()
    scripted.queue("/v1/chat/completions", reply)
    result = agent.ask(text="What is two plus two?", route="answer")
    _assert_failed_with_trace(result, message, "answer")


def test_a_malformed_decision_is_retried_then_falls_back_to_search(scripted, tmp_path):
    agent = _agent(scripted.url, tmp_path, endpoint_retries=0)
    agent.tools.llm.load()
    agent.tools.llm.label_method = "logprobs"
    scripted.queue("/v1/chat/completions", srv.Reply(body=b"{not json", headers={"Content-Type": "application/json"}),
                   srv.Reply.json({"id": "x", "choices": []}))
    result = agent.ask(text="What is two plus two?")
    assert result.route == "search" and "fell back to the safe route" in result.route_reason
    assert any("route decision fell back" in n and "malformed" in n for n in result.notices)
    decide = _steps(result)["decide"]
    assert decide.data["fallback"] is True and len(decide.data["errors"]) == 2


def test_a_wrong_key_says_which_variable_holds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with srv.media_server(api_key="sk-right") as media:
        result = Agent(Settings(asr_endpoint=media.url, asr_model="whisper-tiny.en", out_dir=tmp_path)).ask(audio=str(WAV))
    _assert_failed_with_trace(result, "answered HTTP 401 (Unauthorized", "transcribe")
    assert "set the API key in $OPENAI_API_KEY" in result.error


def test_several_models_and_no_name_asks_for_one(tmp_path):
    with srv.media_server() as media:
        result = Agent(Settings(asr_endpoint=media.url, out_dir=tmp_path)).ask(audio=str(WAV))
    assert result.error and "serves 2 models" in result.error and "--asr-model" in result.error


def test_a_failing_image_endpoint_keeps_the_answer_and_says_why(scripted, tmp_path):
    agent = Agent(Settings(llm_endpoint=scripted.url, image_endpoint=scripted.url, endpoint_retries=1,
                           out_dir=tmp_path, route="answer"))
    scripted.queue("/v1/images/generations", *[srv.Reply.error(503, "no GPU free")] * 2)
    result = agent.ask(text="What is two plus two?", image=True)  # arithmetic gets no picture unless asked
    assert result.error is None and result.answer == "The answer is four."
    assert result.image_generated is False and Path(result.image_path).exists()  # the labelled card
    assert any("answered HTTP 503 (Service Unavailable: no GPU free); tried 2 times" in n for n in result.notices)


def test_the_image_endpoint_draws_through_a_real_diffusers_pipeline(tmp_path):
    with srv.media_server() as media:
        agent = Agent(Settings(image_endpoint=media.url, image_model="tiny-sd", image_size=64, out_dir=tmp_path))
        from tools.diffusion import EndpointImageGenerator

        image = agent.tools.image
        assert isinstance(image, EndpointImageGenerator)
        out = image.generate("a red boat at sunset", tmp_path / "boat.png")
    assert out.generated and out.width == 64 and out.model == f"tiny-sd @ {media.url}"
    assert media.requests_to("/v1/images/generations")[0].json["prompt"] == "a red boat at sunset"


# ---------------------------------------------------------------------------------------------
# LangChain's ChatOpenAI on the same real server, as the agent's LLM (issue 19)
# ---------------------------------------------------------------------------------------------


class _Calls(BaseCallbackHandler):
    """A LangChain callback handler that counts every LLM call's start, end and error."""

    def __init__(self) -> None:
        self.starts, self.ends, self.errors = [], 0, []

    def on_chat_model_start(self, serialized, messages, **kw):
        self.starts.append(list(kw.get("tags") or []))

    def on_llm_end(self, response, **kw):
        self.ends += 1

    def on_llm_error(self, error, **kw):
        self.errors.append(repr(error))


@pytest.mark.slow
def test_chatopenai_on_the_real_server_is_the_agents_llm(llama_url, tmp_path):
    from langchain_openai import ChatOpenAI

    calls = _Calls()
    model = ChatOpenAI(base_url=llama_url, api_key="none", model=srv.LLAMA_MODEL_ALIAS, temperature=0)
    agent = Agent(llm=model, out_dir=tmp_path, image=False, callbacks=[calls])
    tokens, result = [], None
    for event in agent.stream(text="Tell me a fun fact about cats.", route="answer", progress=True):
        if event.kind == "progress" and event.progress.get("type") == "token":
            tokens.append(event.progress["text"])
        elif event.kind == "result":
            result = event.result
    assert result.error is None and result.answer and len(tokens) >= 3
    assert _steps(result)["answer"].model == f"{srv.LLAMA_MODEL_ALIAS} @ {llama_url}"
    result = agent.ask(text="Who painted the Mona Lisa?")
    decide = _steps(result)["decide"]
    assert decide.data["label_method"] == "logprobs"  # label probabilities from ChatOpenAI's response metadata
    assert result.route == "search" and "from the endpoint's logprobs" in result.route_reason
    assert len(calls.starts) >= 3 and calls.ends + len(calls.errors) == len(calls.starts)


@pytest.mark.slow
def test_the_chatopenai_example_script_runs_against_the_real_server(llama_url, tmp_path):
    env = {**os.environ, "ASKDRAW_OUT_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "chatopenai_llm.py"), llama_url],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("route:") == 3 and "Leonardo" in proc.stdout
