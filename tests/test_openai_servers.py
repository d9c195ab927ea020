"""Self-tests of the loopback OpenAI-compatible servers in tests/openai_servers.py, driven by
the official ``openai`` client (as the endpoint backends will be)."""

from __future__ import annotations

import base64
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from tests import openai_servers as srv
except ImportError:  # tests/ itself on sys.path
    import openai_servers as srv  # type: ignore[no-redef]

openai = pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
WAV = ROOT / "examples" / "who_painted_the_mona_lisa.wav"


# --------------------------------------------------------------------------------------
# llama.cpp server (real SmolLM2-135M)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url():
    srv.skip_unless_llama_server()
    with srv.llama_server(n_ctx=2048) as url:
        yield url


FEW_SHOT = [
    {"role": "system", "content": "Route the user's request. Reply with exactly one word: search (needs facts "
                                  "looked up), answer (chit-chat or reasoning), draw (wants a picture)."},
    {"role": "user", "content": "Who won the 2018 World Cup?"}, {"role": "assistant", "content": "search"},
    {"role": "user", "content": "Paint a red boat at sunset."}, {"role": "assistant", "content": "draw"},
    {"role": "user", "content": "How are you today?"}, {"role": "assistant", "content": "answer"},
    {"role": "user", "content": "Draw a cat on a sofa."},
]


@pytest.mark.slow
def test_llama_chat_completion(llama_url):
    client = srv.openai_client(llama_url)
    assert [m.id for m in client.models.list().data] == [srv.LLAMA_MODEL_ALIAS]
    r = client.chat.completions.create(
        model=llama_url.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6, temperature=0
    )
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 6


@pytest.mark.slow
def test_llama_streaming_and_early_close(llama_url):
    client = srv.openai_client(llama_url)
    pieces, finish = [], None
    for chunk in client.chat.completions.create(
        model=llama_url.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5, temperature=0,
        stream=True,
    ):
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces).strip() and finish in ("stop", "length")

    stream = client.chat.completions.create(
        model=llama_url.model, messages=[{"role": "user", "content": "Write a long essay about Rome."}],
        max_tokens=300, temperature=0, stream=True,
    )
    for n, _ in enumerate(stream):
        if n >= 2:
            break
    stream.close()  # the server notices the disconnect and stays healthy
    r = client.chat.completions.create(
        model=llama_url.model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=3
    )
    assert r.choices[0].message.content and llama_url.process.poll() is None


@pytest.mark.slow
def test_llama_first_token_logprobs_for_labels(llama_url):
    client = srv.openai_client(llama_url)
    r = client.chat.completions.create(
        model=llama_url.model, messages=FEW_SHOT, max_tokens=1, temperature=0, logprobs=True, top_logprobs=20
    )
    top = r.choices[0].logprobs.content[0].top_logprobs
    assert len(top) == 20
    scores = {t.token: t.logprob for t in top}
    assert r.choices[0].message.content == "draw" and scores["draw"] > -1.0  # "draw" is one token


@pytest.mark.slow
def test_llama_json_object_schema_constrains_output(llama_url):
    client = srv.openai_client(llama_url)
    schema = {"type": "string", "enum": ["search", "answer", "draw"]}
    r = client.chat.completions.create(
        model=llama_url.model, messages=[{"role": "user", "content": "Draw a cat. Which route?"}], max_tokens=8,
        temperature=0, response_format={"type": "json_object", "schema": schema},  # llama.cpp's own form
    )
    assert r.choices[0].message.content in ('"search"', '"answer"', '"draw"')
    with pytest.raises(openai.InternalServerError):  # OpenAI's json_schema form is rejected (500)
        client.chat.completions.create(
            model=llama_url.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
            response_format={"type": "json_schema", "json_schema": {"name": "route", "schema": schema}},
        )


# --------------------------------------------------------------------------------------
# Media server (real Whisper tiny.en + tiny random Stable Diffusion)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tiny_model):
    with srv.media_server(api_key="media-key", image_model=tiny_model) as server:
        yield server


def _media_client(media, key="media-key"):
    return srv.openai_client(media.url, api_key=key)


@pytest.mark.slow
def test_media_transcribes_real_speech(media):
    client = _media_client(media)
    with WAV.open("rb") as f:
        r = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert "mona lisa" in r.text.lower()
    text = client.audio.transcriptions.create(model="whisper-1", file=WAV, response_format="text")
    assert isinstance(text, str) and "mona lisa" in text.lower()
    rec = media.requests_to("/audio/transcriptions")[-2:]
    assert [q.model for q in rec] == ["whisper-1", "whisper-1"]
    assert rec[0].files["file"]["filename"] == WAV.name and rec[0].files["file"]["size"] == WAV.stat().st_size
    assert rec[1].fields["response_format"] == "text" and all(q.status == 200 for q in rec)


def test_media_generates_png_of_requested_size(media):
    client = _media_client(media)
    r = client.images.generate(model="tiny-sd", prompt="a red boat", size="64x48", n=1,
                               response_format="b64_json")
    png = base64.b64decode(r.data[0].b64_json)
    assert srv.png_size(png) == (64, 48)
    r = client.images.generate(model="tiny-sd", prompt="a red boat", size="32x32", response_format="url")
    with urllib.request.urlopen(r.data[0].url) as resp:
        assert srv.png_size(resp.read()) == (32, 32)
    rec = media.requests_to("/images/generations")[-2:]
    assert rec[0].json["size"] == "64x48" and rec[0].json["prompt"] == "a red boat" and rec[0].model == "tiny-sd"


def test_media_errors_have_openai_shape(media):
    client = _media_client(media)
    with pytest.raises(openai.BadRequestError) as exc:
        client.images.generate(model="tiny-sd", prompt="x", size="100x7")
    assert exc.value.status_code == 400 and exc.value.body["param"] == "size" and "size" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="could not be processed"):
        client.audio.transcriptions.create(model="whisper-1", file=("noise.wav", b"not audio at all"))
    with pytest.raises(openai.AuthenticationError) as exc:
        _media_client(media, key="wrong").models.list()
    assert exc.value.body["code"] == "invalid_api_key"
    assert media.requests[-1].status == 401
    assert {m.id for m in client.models.list().data} == {"whisper-tiny.en", "tiny-sd"}


# --------------------------------------------------------------------------------------
# Scripted server (protocol errors, retries)
# --------------------------------------------------------------------------------------


@pytest.fixture
def scripted():
    with srv.ScriptedServer() as server:
        yield server


CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


def test_scripted_429_then_success_records_two_attempts(scripted):
    scripted.queue(CHAT, srv.Reply.error(429, "slow down", headers={"retry-after-ms": "200"}),
                   srv.Reply.json(srv.chat_completion_body("hello")))
    client = srv.openai_client(scripted.url, max_retries=1)
    r = client.chat.completions.create(model="m", messages=HI)
    assert r.choices[0].message.content == "hello"
    reqs = scripted.requests_to(CHAT)
    assert len(reqs) == 2 and [q.status for q in reqs] == [429, 200]
    assert reqs[0].json["messages"] == HI and reqs[0].headers["authorization"] == "Bearer x"
    assert scripted.gaps(CHAT)[0] >= 0.2


def test_scripted_429_without_retries_is_rate_limit_error(scripted):
    scripted.queue(CHAT, srv.Reply.error(429, "slow down"))
    with pytest.raises(openai.RateLimitError) as exc:
        srv.openai_client(scripted.url).chat.completions.create(model="m", messages=HI)
    assert exc.value.body["code"] == "rate_limit_exceeded" and scripted.pending() == 0


def test_scripted_defaults_stream_and_logprobs(scripted):
    client = srv.openai_client(scripted.url)
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="m", messages=HI, stream=True) if c.choices)
    assert text == "search"
    r = client.chat.completions.create(model="m", messages=HI, logprobs=True, top_logprobs=3, max_tokens=1)
    top = r.choices[0].logprobs.content[0].top_logprobs
    assert [t.token for t in top] == ["search", "answer", "draw"] and top[0].logprob == -0.2


def test_scripted_stream_pause_and_abort(scripted):
    lines = srv.sse_stream(["Hel", "lo"])
    scripted.queue(CHAT, srv.Reply.stream(lines[:2] + [0.05, srv.ABORT]))
    client = srv.openai_client(scripted.url)
    got = []
    with pytest.raises(openai.APIConnectionError):  # the client wraps httpx's "incomplete chunked read"
        for chunk in client.chat.completions.create(model="m", messages=HI, stream=True):
            got.append(chunk.choices[0].delta.content)
    assert got == ["", "Hel"]
    r = client.chat.completions.create(model="m", messages=HI)  # the server is fine afterwards
    assert r.choices[0].message.content == "search"


def test_scripted_timeout_drop_and_dead_server(scripted):
    scripted.queue(CHAT, srv.Reply(delay=5.0), srv.Reply.dropped())
    client = srv.openai_client(scripted.url, timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=HI)
    assert time.monotonic() - t0 < 3
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=HI)
    with pytest.raises(openai.APIConnectionError):
        srv.openai_client(srv.dead_url(), timeout=2).chat.completions.create(model="m", messages=HI)
    assert len(scripted.requests_to(CHAT)) == 2
