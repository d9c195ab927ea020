"""The web app's turns (issue 17): Stop, New conversation during a turn, a reload that keeps the
conversation, the *Understood* line of a rewritten follow-up, and no discarded draft left in the
chat. Unit tests here use scripted models and scripted event streams; the browser tests run the
real page (Gradio, in this process) in a headless Chromium on an agent whose scripted LLM writes
slowly (a word every ``DELAY`` s), so Stop can be clicked mid-turn.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from agent.agent import Result, StepEvent
from agent.ui.web import REPLACED, WEB_THREAD, RunningTurns, Turn, restored, run_turn, web_thread_id

try:
    from tests.fakes import ScriptedLLM
    from tests.test_graph import make_agent
except ImportError:  # tests/ is on sys.path itself
    from fakes import ScriptedLLM
    from test_graph import make_agent

CHROMIUM = "/usr/bin/chromium"
SCREENS = os.environ.get("ASKDRAW_WEB_SCREENS")  # where the browser tests save screenshots (else a temp folder)
DELAY = 0.12  # seconds per word of the slow LLM
STORY = " ".join(f"word{i}" for i in range(60)) + " THE-END."  # 61 words: about 7 s
ANSWERS = [  # (words in the question, the reply): the first that the question contains
    ("story", STORY),
    ("Who painted", "Leonardo da Vinci painted it."),
    ("painted", "It was painted between 1503 and 1519."),
    ("Mona Lisa", "The Mona Lisa is a portrait by Leonardo da Vinci."),
    ("capital of France", "Paris is the capital of France."),
]


class SlowLLM(ScriptedLLM):
    """A scripted LLM that answers by the question asked, streaming a word every ``delay`` s."""

    def __init__(self, delay: float = DELAY) -> None:
        super().__init__()
        self.delay = delay

    def chat(self, messages, *, max_new_tokens=None, on_token=None, prefix="", stop=None) -> str:
        self.calls.append(("chat", list(messages)))
        asked = messages[-1]["content"]
        reply = next((text for key, text in ANSWERS if key.lower() in asked.lower()), "I do not know.")
        for word in reply.split(" "):
            time.sleep(self.delay)
            if on_token:
                on_token(word + " ")
        return reply


def slow_agent(tmp_path, delay: float = DELAY):
    return make_agent(tmp_path, SlowLLM(delay), route="answer", memory_path=tmp_path / "conversations.sqlite")


def token(text: str) -> StepEvent:
    return StepEvent(kind="progress", progress={"type": "token", "text": text})


def result(answer: str, **fields) -> StepEvent:
    return StepEvent(kind="result", result=Result(run_id="r1", question="Who wrote Hamlet?", answer=answer,
                                                  route="search", **fields))


def bot(turn: Turn) -> str:
    return turn.history[-1]["content"]


# -- the draft and its replacement --------------------------------------------------------------------------
def test_a_replace_event_puts_the_final_answer_in_place_of_the_draft():
    turn = Turn([], "Who wrote Hamlet?", None)
    for event in (token("Actor: "), token("James Earl Jones "), token("(1987)")):
        turn.apply(event)
    assert bot(turn) == "Actor: James Earl Jones (1987)"
    final = 'William Shakespeare wrote it.\n\nSource: Wikipedia, "Hamlet"'
    turn.apply(StepEvent(kind="progress", progress={"type": "replace", "text": final}))
    assert bot(turn) == f"{final}\n\n{REPLACED}", "replaced in place, visibly, before the result"
    turn.apply(result(final))
    chat = turn.history
    assert len(chat) == 2 and chat[-1] == {"role": "assistant", "content": f"{final}\n\n{REPLACED}"}
    assert "James Earl Jones" not in str(chat)


def test_at_the_result_the_chat_shows_the_results_answer_even_without_a_replace_event():
    turn = Turn([], "Who wrote Hamlet?", None)
    for event in (token("Author: "), token("Christopher Marlowe")):
        turn.apply(event)
    turn.apply(result("William Shakespeare wrote it."))
    assert bot(turn) == f"William Shakespeare wrote it.\n\n{REPLACED}"
    assert "Marlowe" not in str(turn.history)


def test_a_draft_that_the_answer_continues_is_no_replacement():
    turn = Turn([], "Who wrote Hamlet?", None)
    for word in ("William ", "Shakespeare ", "wrote ", "it. "):
        turn.apply(token(word))
    final = 'William Shakespeare wrote it.\n\nSource: Wikipedia, "Hamlet": "a tragedy by William Shakespeare"'
    turn.apply(result(final))
    assert bot(turn) == final  # the citation line is added below the streamed text: no marker


def test_a_replace_event_that_only_adds_the_citation_is_no_visible_replacement():
    turn = Turn([], "Who wrote Hamlet?", None)
    for word in ("William ", "Shakespeare ", "wrote ", "it."):
        turn.apply(token(word))
    final = 'William Shakespeare wrote it.\n\nSource: Wikipedia, "Hamlet"'
    turn.apply(StepEvent(kind="progress", progress={"type": "replace", "text": final}))
    turn.apply(result(final))
    assert bot(turn) == final


def test_a_cancelled_turn_whose_draft_is_replaced_by_nothing_says_cancelled():
    turn = Turn([], "Who wrote Hamlet?", None)
    turn.apply(token("Christopher "))
    turn.apply(StepEvent(kind="progress", progress={"type": "replace", "text": ""}))
    turn.apply(StepEvent(kind="result", result=Result(run_id="r1", question="Who wrote Hamlet?",
                                                      error="cancelled")))
    assert bot(turn) == "*(cancelled)*" and turn.status == "**Stopped**"


def test_run_turn_applies_a_scripted_stream_with_a_replace_event(tmp_path):
    class Scripted:
        settings = None

        def new_thread_id(self):
            return "20261127-000000-abcdef"

        def stream(self, **kwargs):
            yield token("radium ")
            yield token("and polonium")
            yield StepEvent(kind="progress", progress={"type": "replace", "text": "She discovered radium."})
            yield result("She discovered radium.")

    outputs, shown = [], []
    for out in run_turn(Scripted(), "What did she discover?", None, [], None):  # as the page gets them
        outputs.append(out)
        shown.append(out[0][-1]["content"])
    assert "radium and polonium" in shown, "the draft streamed"
    assert shown[-1] == f"She discovered radium.\n\n{REPLACED}" and "polonium" not in str(outputs[-1][0])
    assert WEB_THREAD.match(outputs[-1][7])


# -- Understood -----------------------------------------------------------------------------------------
def test_a_rewritten_follow_up_shows_what_it_was_understood_as(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    first = list(run_turn(agent, "Tell me about the Mona Lisa.", None, [], None))[-1]
    assert "Understood" not in first[0][-1]["content"]
    shown = [out[0][-1]["content"] for out in run_turn(agent, "When was it painted?", None, first[0], first[7])]
    assert shown[-1] == "*Understood: When was the Mona Lisa painted?*\n\nIt was painted between 1503 and 1519."
    # shown as soon as the decision is made, before the answer streams
    early = [c for c in shown if "1503" not in c]
    assert any(c.startswith("*Understood: When was the Mona Lisa painted?*") for c in early)


# -- Stop ----------------------------------------------------------------------------------------------
def test_stop_cancels_the_running_turn_mid_answer(tmp_path):
    agent = slow_agent(tmp_path, delay=0.05)
    running = RunningTurns()
    thread = web_thread_id(agent)
    outputs, shown = [], []

    def stop_when_streaming():
        for out in run_turn(agent, "Tell me a story.", None, [], thread, running):
            outputs.append(out)
            shown.append(out[0][-1]["content"])  # as the page gets it
            if "word3" in shown[-1] and not running.stop(thread):
                raise AssertionError("the turn was not registered as running")

    start = time.monotonic()
    stop_when_streaming()
    took = time.monotonic() - start
    last = outputs[-1]
    assert any("word3" in text for text in shown), "it was stopped mid-answer"
    assert last[0][-1]["content"].endswith("*(cancelled)*") and "THE-END" not in last[0][-1]["content"]
    assert last[4].startswith("**Stopped**") and "Cancelled" in last[6]
    assert took < 61 * 0.05, f"stopped after {took:.2f}s: the whole answer takes {61 * 0.05:.2f}s"
    assert not running.stop(thread), "a finished turn is no longer running"
    assert not agent.memory.history(thread), "a cancelled turn is not remembered"


def test_a_turn_left_by_its_page_is_finished_in_the_background_and_the_next_turn_waits(tmp_path):
    agent = slow_agent(tmp_path, delay=0.05)
    running = RunningTurns()
    old = run_turn(agent, "Tell me a story.", None, [], web_thread_id(agent), running)
    for out in old:
        if "word2" in out[0][-1]["content"]:
            break
    old.close()  # what Gradio does when the page stops listening (New conversation, a closed tab)
    assert not running.wait_stopped(0), "the stopped turn is still finishing its step"
    outputs = list(run_turn(agent, "What is the capital of France?", None, [], web_thread_id(agent), running))
    assert running.wait_stopped(0)
    assert outputs[-1][0][-1]["content"] == "Paris is the capital of France."


# -- restoring a conversation -----------------------------------------------------------------------------
def test_restored_brings_back_the_turns_with_their_understood_lines(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    first = list(run_turn(agent, "Tell me about the Mona Lisa.", None, [], None))[-1]
    second = list(run_turn(agent, "When was it painted?", None, first[0], first[7]))[-1]
    chat, route, sources, image, status, trace, notices, thread, picture, caption = restored(agent, first[7])
    assert picture is None and caption == ""  # the answer route has no article picture
    assert thread == first[7]
    assert chat == second[0], "the same messages as the page showed"
    assert "Resumed" in status and "2 turns" in status
    assert "`answer`" in route and "decide" in trace


def test_restored_starts_afresh_for_an_unknown_or_foreign_thread(tmp_path):
    agent = slow_agent(tmp_path, delay=0)
    chat_thread = str(agent.new_thread_id())  # a terminal chat's id: never opened by URL
    agent.ask(text="Tell me about the Mona Lisa.", thread_id=chat_thread)
    for wanted in (None, "", chat_thread, "../etc/passwd", web_thread_id(agent)):
        chat, *_, thread, picture, _ = restored(agent, wanted)
        assert picture is None
        assert chat == [] and WEB_THREAD.match(thread)
        assert thread == wanted or wanted is None or not WEB_THREAD.match(wanted or "")


# -- the page in a real browser ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Drafting:
    """The slow agent, except that a question about Hamlet gets a scripted stream: a draft that is
    thrown away, a ``replace`` event with the final answer, then the result (what ``Agent.stream``
    sends when the checked answer is not the streamed text)."""

    FINAL = "William Shakespeare wrote Hamlet."

    def __init__(self, agent) -> None:
        self._agent = agent

    def __getattr__(self, name):
        return getattr(self._agent, name)

    def stream(self, **kwargs):
        if "Hamlet" not in (kwargs.get("text") or ""):
            yield from self._agent.stream(**kwargs)
            return
        for pause, event in self._draft(kwargs["text"]):
            time.sleep(pause)
            yield event

    async def astream(self, **kwargs):  # what the page runs
        if "Hamlet" not in (kwargs.get("text") or ""):
            async for event in self._agent.astream(**kwargs):
                yield event
            return
        for pause, event in self._draft(kwargs["text"]):
            await asyncio.sleep(pause)
            yield event

    def _draft(self, question):
        """(seconds to wait, event): the draft, long enough to see, its replacement, the result."""
        for word in ("Actor:", "James", "Earl", "Jones", "(1987)"):
            yield DELAY, token(word + " ")
        yield 1.0, StepEvent(kind="progress", progress={"type": "replace", "text": self.FINAL})
        yield 0.5, StepEvent(kind="result", result=Result(run_id="r-hamlet", question=question, answer=self.FINAL,
                                                          route="answer", timings_ms={"answer": 1600.0}))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A headless Chromium on ``askdraw serve``'s page (in this process) over a slow scripted LLM."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from agent.ui.server import serve

    agent = Drafting(slow_agent(tmp_path_factory.mktemp("web_turns")))
    urls: list[str] = []
    demo = serve(port=_free_port(), agent=agent, preload=False, block=False, on_ready=urls.append)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-background-networking",
                                              "--disable-dev-shm-usage"])
            try:
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                tab.goto(urls[0], wait_until="domcontentloaded")
                tab.locator("#question textarea").wait_for(timeout=30_000)
                yield tab
            finally:
                browser.close()
    finally:
        demo.close()


def _ask(tab, question: str) -> None:
    tab.locator("#question textarea").fill(question)
    tab.locator("#ask").click()


def _done(tab) -> None:
    """Wait for the turn to end (and the page to empty the question box after it)."""
    from playwright.sync_api import expect

    expect(tab.locator("#status")).to_contain_text("Done", timeout=30_000)
    expect(tab.locator("#question textarea")).to_have_value("", timeout=10_000)


def _new_conversation(tab) -> None:
    """Click New conversation and wait for the page to come back on another thread."""
    from playwright.sync_api import expect

    old = _thread_in_url(tab)
    tab.locator("#new").click()
    tab.wait_for_function("(old) => window.location.search.includes('thread=') && "
                          "!window.location.search.includes(old)", arg=old, timeout=10_000)
    expect(tab.locator("#chat [data-testid='bot']")).to_have_count(0, timeout=5_000)


def _thread_in_url(tab) -> str:
    from urllib.parse import parse_qs, urlparse

    return parse_qs(urlparse(tab.url).query).get("thread", [""])[0]


@pytest.fixture(scope="module")
def screens(tmp_path_factory) -> Path:
    folder = Path(SCREENS) if SCREENS else tmp_path_factory.mktemp("screens")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _screenshot(tab, path: Path) -> None:
    tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_browser_stop_cancels_the_turn_mid_answer(page, screens):
    from playwright.sync_api import expect

    bots = page.locator("#chat [data-testid='bot']")
    page.wait_for_function("() => window.location.search.includes('thread=')", timeout=10_000)
    assert WEB_THREAD.match(_thread_in_url(page)), "the tab's conversation is in its URL"
    _ask(page, "Tell me a story.")
    expect(bots.last).to_contain_text("word3", timeout=30_000)
    start = time.monotonic()
    page.locator("#stop").click()
    expect(bots.last).to_contain_text("(cancelled)", timeout=5_000)
    took = time.monotonic() - start
    expect(page.locator("#status")).to_contain_text("Stopped")
    expect(page.locator("#notices")).to_contain_text("Cancelled")
    _screenshot(page, screens / "web_stop_mid_turn.png")
    time.sleep(61 * DELAY)  # longer than the whole answer would have taken
    assert "THE-END" not in bots.last.inner_text() and took < 3, f"stopped after {took:.1f}s"


@pytest.mark.slow
def test_browser_new_conversation_during_a_turn_cancels_it(page):
    from playwright.sync_api import expect

    bots = page.locator("#chat [data-testid='bot']")
    old_thread = _thread_in_url(page)
    _ask(page, "Tell me another story.")
    expect(bots.last).to_contain_text("word3", timeout=30_000)
    page.locator("#new").click()
    page.wait_for_function("(old) => window.location.search.includes('thread=') && "
                           "!window.location.search.includes(old)", arg=old_thread, timeout=10_000)
    expect(bots).to_have_count(0, timeout=5_000)
    expect(page.locator("#status")).to_contain_text("Ready")
    assert WEB_THREAD.match(_thread_in_url(page))
    time.sleep(61 * DELAY)  # the old turn would have finished by now: it must not come back
    expect(bots).to_have_count(0)
    assert "word" not in page.locator("#chat").inner_text()
    _ask(page, "What is the capital of France?")  # the new conversation works (after the old turn stopped)
    expect(bots.last).to_contain_text("Paris is the capital of France.", timeout=30_000)
    _done(page)
    expect(bots).to_have_count(1)
    assert "word" not in page.locator("#chat").inner_text()


@pytest.mark.slow
def test_browser_understood_line_and_a_reload_keeps_the_conversation(page, screens):
    from playwright.sync_api import expect

    bots = page.locator("#chat [data-testid='bot']")
    _new_conversation(page)
    _ask(page, "Tell me about the Mona Lisa.")
    _done(page)
    _ask(page, "When was it painted?")
    expect(bots.nth(1)).to_contain_text("Understood: When was the Mona Lisa painted?", timeout=30_000)
    _done(page)
    expect(bots.nth(1)).to_contain_text("It was painted between 1503 and 1519.")
    expect(bots.first).not_to_contain_text("Understood")
    thread = _thread_in_url(page)

    page.reload(wait_until="domcontentloaded")
    expect(bots).to_have_count(2, timeout=30_000)
    assert _thread_in_url(page) == thread
    users = page.locator("#chat [data-testid='user']")
    expect(users.nth(0)).to_have_text("Tell me about the Mona Lisa.")
    expect(users.nth(1)).to_have_text("When was it painted?")
    expect(bots.nth(0)).to_contain_text("The Mona Lisa is a portrait by Leonardo da Vinci.")
    expect(bots.nth(1)).to_contain_text("Understood: When was the Mona Lisa painted?")
    expect(page.locator("#status")).to_contain_text("Resumed")
    expect(page.locator("#route")).to_contain_text("answer")
    _screenshot(page, screens / "web_reloaded_conversation.png")

    _ask(page, "Who painted it?")  # the reloaded tab goes on in the same conversation
    expect(bots.nth(2)).to_contain_text("Understood: Who painted the Mona Lisa?", timeout=30_000)
    expect(bots.nth(2)).to_contain_text("Leonardo da Vinci painted it.", timeout=30_000)
    assert _thread_in_url(page) == thread


def test_a_turn_left_for_a_new_conversation_sends_nothing_more(tmp_path):
    agent = slow_agent(tmp_path, delay=0.05)
    running = RunningTurns()
    thread = web_thread_id(agent)
    shown, left = [], []
    start = time.monotonic()
    for out in run_turn(agent, "Tell me a story.", None, [], thread, running):
        assert not left, "no update after leave() returned"
        shown.append(out[0][-1]["content"])
        if "word2" in shown[-1] and len(shown) < 100:  # New conversation clicked (Gradio runs it in another thread)
            leaver = threading.Thread(target=lambda: left.append(running.leave(thread)))
            leaver.start()
            time.sleep(0.2)  # leave() now waits for this update to be taken
            assert not left
    leaver.join(5)
    assert left == [True] and time.monotonic() - start < 61 * 0.05
    assert "THE-END" not in shown[-1] and not shown[-1].endswith("*(cancelled)*")
    assert running.wait_stopped(10), "the left turn finishes in the background"
    assert not agent.memory.history(thread)


@pytest.mark.slow
def test_browser_the_final_answer_replaces_the_draft_in_place(page):
    from playwright.sync_api import expect

    bots = page.locator("#chat [data-testid='bot']")
    _new_conversation(page)
    _ask(page, "Who wrote Hamlet?")
    expect(bots.last).to_contain_text("James Earl Jones", timeout=30_000)  # the draft streams
    expect(bots.last).to_contain_text(Drafting.FINAL, timeout=10_000)
    expect(bots.last).to_contain_text("draft replaced by the checked answer")
    _done(page)
    expect(bots).to_have_count(1)
    assert "James Earl Jones" not in page.locator("#chat").inner_text(), "no discarded draft is left"
