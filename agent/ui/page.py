"""``askdraw serve``'s Gradio page: a chat view, a text box, a microphone recorder and an audio-file
upload, with the route, the image, Wikipedia's picture of the top source (shown only when there is
one, captioned as Wikipedia's, with its credit), the sources, the status and the trace of each turn
(:mod:`agent.ui.web` computes them), and a hidden ``/ask`` endpoint for programs
(``gradio_client.Client(url).predict(question, audio, api_name="/ask")`` returns
``(answer, route, reason, image, sources)``).

Turns run one at a time (one set of models on the CPU): a second request waits in the queue.
*Stop* cancels the running turn (as Ctrl-C does in the chat); *New conversation* cancels it and
opens the page afresh on a new thread. The tab's thread id is kept in the URL (``?thread=...``), so a reload brings
the conversation back. Images are handed out as :func:`served_copy` copies in Gradio's cache
folder, never from a run folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.ui.web import IDLE, NO_ROUTE, RunningTurns, aapi_ask, arun_turn, restored, web_thread_id

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CSS = """
#status { min-height: 1.5em; }
#notices:empty { display: none; }
"""
NO_TRACE = "```text\n(no turn yet)\n```"
# Keep the tab's conversation in its URL, so a reload (or a bookmark) comes back to it.
URL_JS = """(thread) => {
  if (!thread) { return []; }
  const url = new URL(window.location.href);
  if (url.searchParams.get("thread") !== thread) {
    url.searchParams.set("thread", thread);
    window.history.replaceState(null, "", url.toString());
  }
  return [];
}"""
NEW_JS = """() => {
  const url = new URL(window.location.href);
  url.searchParams.delete("thread");
  window.location.assign(url.toString());
  return [];
}"""


def served_copy(path: str | None, cache_dir: str | Path) -> str | None:
    """A copy of a run's file for one client: in Gradio's cache folder ``cache_dir`` under a random
    name (192 bits). Gradio serves a file that is already in its cache folder where it is (it
    re-copies other files to ``<cache>/<sha256 of content>/<name>``), so the URL names neither the
    out folder nor the run, and two copies of the same image (the "NO IMAGE GENERATED" card of
    the same question) get different URLs. None when there is no file."""
    if not path or not Path(path).is_file():
        return None
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    copy = cache / f"{secrets.token_hex(24)}{Path(path).suffix.lower() or '.png'}"
    shutil.copyfile(path, copy)
    return str(copy)


def _layout(gr: Any) -> SimpleNamespace:
    """The page's components (inside the open Blocks)."""
    gr.Markdown("## askdraw\nAsk by typing, recording or uploading audio: the agent searches "
                "Wikipedia, answers, or draws.")
    # The thread id lives on the server (State); a hidden copy in the page puts it into the URL.
    ui = SimpleNamespace(thread=gr.State(None), thread_in_url=gr.Textbox(visible=False, elem_id="thread-in-url"))
    with gr.Row():
        with gr.Column(scale=3):
            ui.chat = gr.Chatbot(elem_id="chat", label="Conversation", height=420, feedback_options=None)
            ui.status = gr.Markdown(IDLE, elem_id="status")
            ui.question = gr.Textbox(elem_id="question", label="Question", placeholder="Who painted the Mona Lisa?",
                                     lines=1)
            ui.audio = gr.Audio(sources=["microphone", "upload"], type="filepath", elem_id="audio",
                                label="Or ask by voice: record, or upload an audio file")
            with gr.Row():
                ui.ask = gr.Button("Ask", variant="primary", elem_id="ask")
                ui.stop = gr.Button("Stop", variant="stop", elem_id="stop")
                ui.new = gr.Button("New conversation", elem_id="new")
            ui.notices = gr.Markdown("", elem_id="notices")
        with gr.Column(scale=2):
            ui.route = gr.Markdown(NO_ROUTE, elem_id="route")
            ui.image = gr.Image(elem_id="image", label="Image", type="filepath", interactive=False, height=360)
            # Wikipedia's own picture of the top source: hidden until a turn has one.
            ui.picture = gr.Image(elem_id="source-image", label="Wikipedia's picture (from the article, not generated)",
                                  type="filepath", interactive=False, height=300, visible=False)
            ui.picture_caption = gr.Markdown("", elem_id="source-image-credit")
            ui.sources = gr.Markdown("", elem_id="sources")
            with gr.Accordion("Trace: steps and timings", open=False):
                ui.trace = gr.Markdown(NO_TRACE, elem_id="trace")
    return ui


def _same(value: Any) -> Any:
    return value


def _wire_turns(agent: Any, ui: SimpleNamespace, gr: Any) -> tuple[Any, list]:
    """Ask (button or Enter) runs a turn; Stop cancels it; New conversation cancels it and starts
    another thread. Returns the page-load handler (``?thread=ID`` brings that conversation back)
    and the outputs it fills."""
    outputs = [ui.chat, ui.route, ui.sources, ui.image, ui.status, ui.trace, ui.notices, ui.thread, ui.picture,
               ui.picture_caption]
    running = RunningTurns()

    def served(outputs: tuple, copies: dict[str, str | None]) -> tuple:
        for src in (outputs[3], outputs[8]):
            if src and src not in copies:
                copies[src] = served_copy(src, ui.image.GRADIO_CACHE)
        src, picture = outputs[3], outputs[8]
        shown = copies.get(picture) if picture else None
        return (*outputs[:3], copies.get(src) if src else None, outputs[4], outputs[5] or NO_TRACE, *outputs[6:8],
                gr.Image(value=shown, visible=shown is not None), outputs[9])

    async def respond(q: str, a: str | None, history: list, thread_id: str | None):
        turn = arun_turn(agent, q, a, history, thread_id, running)
        copies: dict[str, str | None] = {}
        try:
            async for outputs in turn:
                yield served(outputs, copies)
        finally:
            await turn.aclose()  # the page went away (or New conversation): arun_turn cancels the turn

    def clear_inputs():
        return "", None

    for trigger in (ui.ask.click, ui.question.submit):
        trigger(respond, [ui.question, ui.audio, ui.chat, ui.thread], outputs, api_visibility="private",
                show_progress="hidden", concurrency_id="turn").then(clear_inputs, None, [ui.question, ui.audio],
                                                                     api_visibility="private")

    # Stop and New conversation must not wait in the queue behind the turn they stop.
    def stop(thread_id: str | None):
        running.stop(thread_id)  # the turn ends with "(cancelled)" as soon as its step allows

    ui.stop.click(stop, [ui.thread], None, api_visibility="private", concurrency_limit=None, show_progress="hidden")

    def leave(thread_id: str | None):
        running.leave(thread_id, timeout=1.0)  # the old turn is cancelled and sends the page nothing more

    # New conversation opens the page afresh (no ?thread=: a new id): the old page, and with it every
    # update of the old turn still on its way, is gone, so nothing of it reaches the new conversation.
    ui.new.click(leave, [ui.thread], None, api_visibility="private", concurrency_limit=None,
                 show_progress="hidden").then(None, None, None, js=NEW_JS)
    ui.thread_in_url.change(None, [ui.thread_in_url], None, js=URL_JS)

    def restore(request):
        wanted = (request.query_params.get("thread") if request is not None else None) or None
        return served(restored(agent, wanted), {})

    restore.__annotations__["request"] = gr.Request  # Gradio passes the request by this annotation

    return restore, outputs


def _api(gr: Any, agent: Any) -> None:
    """A clean endpoint for programs (hidden in the page)."""
    with gr.Group(visible=False):
        api_question = gr.Textbox(label="question")
        api_audio = gr.Audio(type="filepath", label="audio")
        api_answer = gr.Textbox(label="answer")
        api_route = gr.Textbox(label="route")
        api_reason = gr.Textbox(label="reason")
        api_image = gr.Image(type="filepath", label="image")
        api_sources = gr.JSON(label="sources")
        api_button = gr.Button("ask (api)")

    async def ask_endpoint(q: str, a: str | None):
        answer, route_, reason, image_path, sources_ = await aapi_ask(agent, q, a)
        return answer, route_, reason, served_copy(image_path, api_image.GRADIO_CACHE), sources_

    api_button.click(ask_endpoint, [api_question, api_audio],
                     [api_answer, api_route, api_reason, api_image, api_sources], api_name="ask",
                     api_description="Ask one question (text, or an audio file): returns "
                                     "(answer, route, reason, image, sources).")


def build_app(agent: Any, *, delete_cache: tuple[int, int] | None = (3600, 3600)) -> Any:
    """The Gradio Blocks app for ``agent`` (queued: one turn at a time). Images are handed out as
    ``served_copy`` copies in the Gradio cache folder; ``delete_cache=(every, age)`` seconds:
    Gradio deletes the uploads and copies older than ``age`` every ``every`` seconds."""
    import gradio as gr

    with gr.Blocks(title="askdraw", analytics_enabled=False, delete_cache=delete_cache) as demo:
        ui = _layout(gr)
        restore, outputs = _wire_turns(agent, ui, gr)
        _api(gr, agent)
        demo.load(restore, None, outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden").then(_same, [ui.thread], [ui.thread_in_url], api_visibility="private")
    demo.queue(default_concurrency_limit=1)
    return demo


def offline_theme() -> Any:
    """The default theme with system fonts (the default one loads Google fonts: not offline)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


__all__ = ["build_app", "served_copy", "offline_theme", "CSS"]
