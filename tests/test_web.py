"""``askdraw serve``: the web app's turn logic with scripted models (fast), and the real server
with the starter models through gradio_client and a real headless Chromium (slow).

The slow tests share one ``askdraw serve`` subprocess (module fixture), killed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.ui.server import is_loopback
from agent.ui.web import api_ask, run_turn

try:
    from tests.fakes import ScriptedLLM
    from tests.test_graph import MONA_LISA, FakeASR, FakeWiki, make_agent, write_tone
except ImportError:  # tests/ is on sys.path itself
    from fakes import ScriptedLLM
    from test_graph import MONA_LISA, FakeASR, FakeWiki, make_agent, write_tone

from agent.router import _calibration_inputs

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
WAV = REPO / "examples" / "who_painted_the_mona_lisa.wav"


def search_llm(*replies: str) -> ScriptedLLM:
    calibration = ["search"] * len(_calibration_inputs())
    return ScriptedLLM(replies=list(replies), labels=["search", *calibration, "search", "search"])


def last_outputs(agent, question, audio=None, history=None, thread_id=None):
    outputs = list(run_turn(agent, question, audio, history, thread_id))
    assert outputs, "a turn yields at least once"
    return outputs


# -- fast: the handler logic -----------------------------------------------------------------------
def test_a_turn_streams_the_answer_and_ends_with_route_sources_image_and_trace(tmp_path):
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), wiki=FakeWiki([MONA_LISA]))
    outputs = last_outputs(agent, "Who painted the Mona Lisa?")
    assert len(outputs) > 3  # the start, steps and tokens as they come, the result
    streamed = [o[0][-1]["content"] for o in outputs[:-1]]
    assert any("Leonardo" in s and s != outputs[-1][0][-1]["content"] for s in streamed) or \
        any(s.startswith("Leonardo") for s in streamed)
    assert any(o[4].startswith("**Running:**") for o in outputs[:-1]), "the running step is shown while the turn runs"
    chat, route, sources, image, status, trace, notices, thread, picture, caption = outputs[-1]
    assert picture is None and caption == "", "a corpus without pictures shows no article picture"
    assert chat[0] == {"role": "user", "content": "Who painted the Mona Lisa?"}
    assert chat[1]["role"] == "assistant" and "Leonardo da Vinci" in chat[1]["content"]
    assert "`search`" in route
    assert "[Mona Lisa](https://en.wikipedia.org/wiki/Mona_Lisa)" in sources
    assert image and Path(image).is_file() and Path(image).parent.parent == tmp_path / "runs"
    assert "NO IMAGE GENERATED" in notices and "labelled card" in notices
    assert "decide" in trace and "search_wikipedia" in trace and "**Time:**" in trace
    assert status.startswith("**Done**") and thread


def test_the_same_thread_carries_the_conversation_and_new_ids_differ(tmp_path):
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it.", "It hangs in the Louvre."),
                       wiki=FakeWiki([MONA_LISA]))
    first = last_outputs(agent, "Who painted the Mona Lisa?")[-1]
    thread = first[7]
    second = last_outputs(agent, "Where is it?", history=first[0], thread_id=thread)[-1]
    assert second[7] == thread and len(second[0]) == 4
    assert [m["role"] for m in second[0]] == ["user", "assistant", "user", "assistant"]
    assert agent.new_thread_id() != thread


def test_an_error_becomes_a_message_in_the_page_not_an_exception(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    agent = make_agent(tmp_path, search_llm(), asr=FakeASR())
    chat, route, sources, image, status, trace, notices, _, picture, _ = last_outputs(agent, None, str(bad))[-1]
    assert picture is None
    assert "**Error:**" in notices and status.startswith("**Failed**")
    assert chat[-1]["content"].startswith("**Error:**")

    class Exploding:
        settings = agent.settings

        def new_thread_id(self):
            return "t1"

        def stream(self, **kwargs):
            raise RuntimeError("boom")
            yield  # pragma: no cover

    out = last_outputs(Exploding(), "hi")[-1]
    assert "RuntimeError: boom" in out[6] and out[4].startswith("**Failed**")


def test_an_empty_question_is_a_notice_and_asks_nothing(tmp_path):
    llm = search_llm()
    agent = make_agent(tmp_path, llm)
    (out,) = last_outputs(agent, "   ", None, [])
    assert out[0] == [] and "empty question" in out[6] and not llm.calls


def test_the_api_returns_answer_route_reason_image_and_sources(tmp_path):
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), wiki=FakeWiki([MONA_LISA]))
    answer, route, reason, image, sources = api_ask(agent, "Who painted the Mona Lisa?", None)
    assert "Leonardo" in answer and route == "search" and reason
    assert image and Path(image).is_file()
    assert sources[0] == {"title": "Mona Lisa", "url": "https://en.wikipedia.org/wiki/Mona_Lisa"}
    assert api_ask(agent, "", None)[0].startswith("error: empty question")


def test_an_audio_turn_shows_what_was_heard(tmp_path):
    agent = make_agent(tmp_path, search_llm("Leonardo da Vinci painted it."), wiki=FakeWiki([MONA_LISA]),
                       asr=FakeASR("Who painted the Mona Lisa?"))
    chat = last_outputs(agent, None, str(write_tone(tmp_path / "q.wav")))[-1][0]
    assert chat[0]["content"] == "*(voice)* Who painted the Mona Lisa?" and "Leonardo" in chat[1]["content"]


def test_loopback_hosts():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_serve_on_a_public_host_needs_allow_remote(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "serve", "--host", "0.0.0.0", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--allow-remote" in lines[0] and lines[0].startswith("askdraw: error:")


# -- slow: the real server ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("web_runs")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "ASKDRAW_MAX_ANSWER_TOKENS": "24",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("ASKDRAW_OUT_DIR", None)
    log = out.parent / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "serve", "--port", str(port), "--out", str(out)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"askdraw serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"askdraw serve did not answer within 90 s:\n{log.read_text()}")
            time.sleep(0.5)
        printed = time.monotonic() + 15  # the URL is printed when ready (just after HTTP answers)
        while url not in log.read_text() and time.monotonic() < printed:
            time.sleep(0.2)
        assert url in log.read_text(), log.read_text()
        yield url, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


@pytest.mark.slow
def test_gradio_client_asks_the_served_agent(server):
    from gradio_client import Client

    url, out = server
    client = Client(url, verbose=False)
    answer, route, reason, image, sources = client.predict("Who painted the Mona Lisa?", None, api_name="/ask")
    assert "Leonardo" in answer and route == "search" and reason
    assert image and Path(image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(s["title"] == "Mona Lisa" for s in sources)


@pytest.mark.slow
def test_a_second_request_while_one_runs_is_queued_not_lost(server):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    questions = ["Who painted the Mona Lisa?", "Who wrote Hamlet?"]
    jobs = [client.submit(q, None, api_name="/ask") for q in questions]  # the second waits in the queue
    (first, *_), (second, *_) = [job.result(timeout=180) for job in jobs]
    assert "Leonardo" in first and "Shakespeare" in second


@pytest.mark.slow
def test_the_page_in_a_real_browser(server, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, out = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            box = page.locator("#question textarea")
            box.wait_for(timeout=30_000)
            box.fill("Who painted the Mona Lisa?")
            page.locator("#ask").click()
            chat = page.locator("#chat")
            bot = chat.locator("[data-testid='bot']").last
            expect(bot).to_contain_text("Leonardo", timeout=60_000)
            expect(page.locator("#status")).to_contain_text("Done", timeout=30_000)
            expect(page.locator("#route")).to_contain_text("search")
            expect(page.locator("#sources a").first).to_have_attribute("href", "https://en.wikipedia.org/wiki/Mona_Lisa")
            expect(page.locator("#notices")).to_contain_text("NO IMAGE GENERATED")
            img = page.locator("#image img")
            expect(img).to_be_visible(timeout=10_000)
            served = page.request.get(page.evaluate("(el) => el.src", img.element_handle())).body()
            assert served[:8] == b"\x89PNG\r\n\x1a\n"
            on_disk = [p.read_bytes() for p in out.glob("*/image.png")]
            assert served in on_disk, "the page shows the image the run wrote"

            # Ask again by uploading an audio file.
            turns = chat.locator("[data-testid='bot']").count()
            audio = page.locator("#audio")
            upload_source = audio.locator("button[aria-label='Upload file'], button[aria-label*='pload']")
            if upload_source.count():
                upload_source.first.click()
            audio.locator("input[type=file]").first.set_input_files(str(WAV))
            expect(audio.locator("audio, [data-testid='waveform-controls'], .waveform-container").first
                   ).to_be_attached(timeout=15_000)
            page.locator("#ask").click()
            expect(chat.locator("[data-testid='bot']").nth(turns)).to_be_attached(timeout=30_000)
            expect(chat.locator("[data-testid='bot']").last).to_contain_text("Leonardo", timeout=90_000)
            expect(chat.locator("[data-testid='user']").last).to_contain_text("Mona Lisa")
            expect(page.locator("#status")).to_contain_text("Done", timeout=30_000)
            page.get_by_text("Trace: steps and timings").click()
            expect(page.locator("#trace")).to_contain_text("transcribe", timeout=10_000)
            shot = tmp_path / "web_app.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("ASKDRAW_UPDATE_SCREENSHOT"):  # the README's picture (kept out of ordinary runs)
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "web_app.png")
