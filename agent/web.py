"""``askdraw serve``: a local Gradio web app on the same agent as ``askdraw ask`` and ``chat``.

The page has a chat view, a text box, a microphone recorder and an audio-file upload, and per
turn: the answer (streamed), the route and why, the sources as links, the image (or the labelled
"NO IMAGE GENERATED" card, with a notice saying so), the running step while the turn runs, and a
collapsible trace of the turn's steps and timings. One conversation thread per browser session
("New conversation" starts another), so follow-ups are understood in context, as in the chat loop.

Programs can call the ``/ask`` endpoint (``gradio_client.Client(url).predict(question, audio,
api_name="/ask")``) which returns ``(answer, route, reason, image, sources)``.

Turns run one at a time (one set of models on the CPU): a second request waits in the queue.
A handler never raises: errors (bad audio, no image model, Wikipedia unreachable) are shown in
the page and the app stays up.

Files: the server serves no folder of ours (no ``allowed_paths``). Gradio serves only its cache
folder, which ``serve`` makes private to this server (a fresh ``mkdtemp`` folder, set as
``GRADIO_TEMP_DIR``): the audio uploads, and a copy of each turn's image under a random name
(``served_copy``), handed only to the session that asked. Run folders (question, answer, trace)
are never served. The folder is emptied of files older than an hour while the server runs and
removed when it stops (Ctrl-C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import html
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
IDLE = "Ready: type a question, record one, or upload an audio file."


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    host = (host or "").strip().lower()
    return host in LOOPBACK or host.startswith("127.")


# -- pure helpers (tested without a browser) ----------------------------------------------------
def _source_pairs(result: Any) -> list[tuple[str, str]]:
    return [(str(s.get("title") or s.get("url") or ""), str(s.get("url") or ""))
            for s in getattr(result, "sources", None) or []]


def _md_escape(text: Any) -> str:
    """Text shown inside markdown: no markup, no HTML."""
    out = html.escape(str(text or ""), quote=False)
    for ch in "\\`*_[]<>#|":
        out = out.replace(ch, "\\" + ch)
    return out


def sources_markdown(result: Any) -> str:
    pairs = _source_pairs(result)
    if not pairs:
        return "**Sources:** none found" if getattr(result, "route", None) == "search" else "**Sources:** -"
    lines = ["**Sources:**"]
    for i, (title, url) in enumerate(pairs, 1):
        label = _md_escape(title).replace("\\[", "(").replace("\\]", ")")
        lines.append(f"{i}. [{label}]({url.replace(')', '%29').replace(' ', '%20')})" if url else f"{i}. {label}")
    return "\n".join(lines)


def route_markdown(result: Any) -> str:
    if result is None or not getattr(result, "route", None):
        return "**Route:** -"
    text = f"**Route:** `{result.route}`"
    if result.route_reason:
        text += f" - {_md_escape(result.route_reason)}"
    if getattr(result, "search_query", None):
        text += f"  \n**Searched:** {_md_escape(result.search_query)}"
    return text


def image_note(result: Any) -> str:
    """What the image is: generated with a model, or the labelled card and why."""
    if not getattr(result, "image_path", None):
        return ""
    if result.image_generated:
        return f"Image generated with {result.image_model}."
    reason = result.no_image_reason or ""
    why = ("no image model is set; `askdraw serve --image-model ...` draws pictures" if result.no_image_kind == "no_model"
           else _md_escape(reason))
    return "**NO IMAGE GENERATED**: the picture is a labelled card" + (f" ({why})." if why else ".")


def notices_markdown(result: Any = None, error: str | None = None) -> str:
    """Errors first (bold), then the image's status, then every other notice."""
    lines: list[str] = []
    if error:
        lines.append(f"**Error:** {_md_escape(error)}")
    if result is not None:
        if result.error == "cancelled":
            lines.append("**Cancelled.**")
        elif result.error and not result.answer:
            lines.append(f"**Error:** {_md_escape(result.error)}")
        elif result.error:
            lines.append(f"**Warning:** {_md_escape(result.error)}")
        note = image_note(result)
        if note:
            lines.append(note)
        for notice in result.other_notices:
            lines.append(f"Note: {_md_escape(notice)}")
    return "\n\n".join(f"- {line}" for line in lines)


def trace_markdown(result: Any = None, live: list[str] | None = None) -> str:
    """The turn's steps (from its trace file when written, else the events seen so far) and timings."""
    from agent.trace import format_event, read_trace, step_times

    body: list[str] = []
    if result is not None and result.trace_path:
        try:
            body = [format_event(e) for e in read_trace(Path(result.trace_path).parent)]
        except (OSError, ValueError):
            body = []
    if not body:
        body = list(live or [])
    text = "```text\n" + ("\n".join(body) if body else "(no steps yet)") + "\n```"
    if result is not None:
        timings = result.timings_ms or {}
        if timings:
            total = sum(timings.values()) / 1000
            text += f"\n\n**Time:** {total:.2f}s ({step_times(timings)})"
        if result.trace_path:
            text += f"  \n**Run:** `{result.run_id}` - trace at `{result.trace_path}`"
    return text


def step_status(event: Any) -> str | None:
    """The status line for a StepEvent (None: keep the current one)."""
    if event.kind == "progress" and event.progress:
        p = event.progress
        kind = p.get("type")
        if kind == "token":
            return "Writing the answer…"
        if kind in ("status", "image_step") and p.get("text"):
            return f"{p['text']}…" if kind == "status" else str(p["text"])
        return None
    if event.kind == "step" and event.step is not None:
        s = event.step
        if s.error and s.error != "cancelled":
            return f"{s.step}: {s.error}"
        if s.step == "transcribe" and s.output:
            return f'Heard: "{s.output}" - thinking…'
        if s.step == "search_wikipedia" and s.output:
            return f"Found: {s.output} - thinking…" if s.output != "no results" else "Found nothing - thinking…"
        return f"Done: {s.step} ({s.ms / 1000:.2f}s) - thinking…"
    return None


def _user_text(question: str | None, audio: str | None) -> str:
    if question and audio:
        return f"{question}  \n*(with an audio file)*"
    if question:
        return question
    return f"*(voice: {_md_escape(Path(audio).name) if audio else 'audio'})*"


class Turn:
    """The outputs of one turn in the page, updated as its events arrive."""

    def __init__(self, history: list[dict[str, Any]], question: str | None, audio: str | None) -> None:
        self.history = [dict(m) for m in (history or [])]
        self.history.append({"role": "user", "content": _user_text(question, audio)})
        self.history.append({"role": "assistant", "content": "…"})
        self.answer = ""
        self.status = "Starting…"
        self.route = "**Route:** …"
        self.sources = ""
        self.image: str | None = None
        self.notices = ""
        self.live_trace: list[str] = []
        self.result: Any = None

    def set_answer(self, text: str) -> None:
        self.history[-1] = {"role": "assistant", "content": text or "…"}

    def apply(self, event: Any) -> None:
        from agent.trace import format_event

        line = step_status(event)
        if line:
            self.status = f"**Running:** {_md_escape(line)}"
        if event.kind == "progress" and event.progress and event.progress.get("type") == "token":
            self.answer += str(event.progress.get("text", ""))
            self.set_answer(self.answer)
        elif event.kind == "step" and event.step is not None:
            self.live_trace.append(format_event(event.step))
            if event.step.step == "transcribe" and event.step.output:
                self.history[-2] = {"role": "user", "content": f"*(voice)* {event.step.output}"}
        elif event.kind == "result" and event.result is not None:
            self.finish(event.result)

    def finish(self, result: Any) -> None:
        self.result = result
        if result.transcript:
            self.history[-2] = {"role": "user", "content": f"*(voice)* {result.transcript}"}
        if result.error == "cancelled":
            self.set_answer(self.answer + " *(cancelled)*" if self.answer else "*(cancelled)*")
        elif result.error and not result.answer:
            self.set_answer(f"**Error:** {result.error}")
        else:
            self.set_answer(result.answer or "(no answer)")
        self.route = route_markdown(result)
        self.sources = sources_markdown(result)
        self.image = result.image_path if result.image_path and Path(result.image_path).exists() else None
        self.notices = notices_markdown(result)
        total = sum((result.timings_ms or {}).values()) / 1000
        self.status = ("**Failed**" if result.error and not result.answer else "**Done**") + (
            f" in {total:.1f}s" if total else "")

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.set_answer(f"**Error:** {message}")
        self.notices = notices_markdown(error=message)
        self.status = "**Failed**"
        self.route = "**Route:** -"

    def outputs(self, thread_id: str) -> tuple:
        return (self.history, self.route, self.sources, self.image, self.status,
                trace_markdown(self.result, self.live_trace), self.notices, thread_id)


def run_turn(agent: Any, question: str | None, audio: str | None, history: list[dict[str, Any]] | None,
             thread_id: str | None) -> Iterator[tuple]:
    """One turn of the page: yields the outputs (chat, route, sources, image, status, trace,
    notices, thread id) after every event. Never raises."""
    question = (question or "").strip() or None
    audio = audio or None
    thread_id = thread_id or str(agent.new_thread_id())
    turn = Turn(list(history or []), question, audio)
    if question is None and audio is None:
        turn.history = turn.history[:-2]
        turn.notices = notices_markdown(error="empty question: type a question, record one or upload an audio file")
        turn.status = IDLE
        turn.route = "**Route:** -"
        yield turn.outputs(thread_id)
        return
    yield turn.outputs(thread_id)
    cancel = threading.Event()
    try:
        for event in agent.stream(text=question, audio=audio, progress=True, thread_id=thread_id, cancel=cancel):
            turn.apply(event)
            yield turn.outputs(thread_id)
    except GeneratorExit:  # the page went away: stop the turn
        cancel.set()
        raise
    except Exception as exc:  # a bug, not bad input (the agent reports that in the result)
        turn.fail(exc)
        yield turn.outputs(thread_id)


def api_ask(agent: Any, question: str | None, audio: str | None = None) -> tuple:
    """The ``/ask`` endpoint: ``(answer, route, reason, image path, sources)``; never raises
    (an error comes back as the answer ``"error: ..."``)."""
    question = (question or "").strip() or None
    if question is None and not audio:
        return ("error: empty question: give a question or an audio file", "", "", None, [])
    try:
        result = agent.ask(text=question, audio=audio or None)
    except Exception as exc:
        return (f"error: {type(exc).__name__}: {exc}", "", "", None, [])
    answer = result.answer or (f"error: {result.error}" if result.error else "")
    image = result.image_path if result.image_path and Path(result.image_path).exists() else None
    sources = [{"title": t, "url": u} for t, u in _source_pairs(result)]
    return (answer, result.route or "", result.route_reason or "", image, sources)


# -- files the page may serve ----------------------------------------------------------------------
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


class ServerTemp:
    """The server's private Gradio temp folder: a fresh ``mkdtemp`` folder (mode 0700) under
    ``$GRADIO_TEMP_DIR`` or the system temp folder, set as ``GRADIO_TEMP_DIR`` (uploads, served
    copies) and ``GRADIO_EXAMPLES_CACHE`` (by default ``./.gradio/cached_examples``, which Gradio
    serves) while the server runs. ``remove()`` deletes it and restores the environment."""

    def __init__(self) -> None:
        parent = os.environ.get("GRADIO_TEMP_DIR") or None
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="askdraw-web-", dir=parent)).resolve()
        self._set = {"GRADIO_TEMP_DIR": str(self.path), "GRADIO_EXAMPLES_CACHE": str(self.path / "cached_examples")}
        self._saved = {key: os.environ.get(key) for key in self._set}
        os.environ.update(self._set)
        self._removed = False

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        for key, value in self._saved.items():
            if os.environ.get(key) != self._set[key]:
                continue  # changed since: leave it
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path.exists():  # a file written while it was being removed
            shutil.rmtree(self.path, ignore_errors=True)


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
# Largest upload: a 10-minute recording (the audio limit) as 48 kHz stereo 16-bit WAV is 115 MB.
MAX_UPLOAD = "200mb"


def _stop_on_signals() -> dict[int, Any]:
    """In the main thread: SIGINT, SIGTERM and SIGHUP (unless ignored, e.g. under nohup) raise
    KeyboardInterrupt, so the server closes and removes its temp folder. Returns the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None or (name == "SIGHUP" and signal.getsignal(sig) == signal.SIG_IGN):
            continue
        old[sig] = signal.signal(sig, stop)
    return old


def _restore_signals(old: dict[int, Any], *, ignore: bool = False) -> None:
    """Put back the handlers ``old`` (``ignore``: ignore those signals instead, while closing)."""
    for sig, handler in old.items():
        signal.signal(sig, signal.SIG_IGN if ignore else (handler if handler is not None else signal.SIG_DFL))


# -- the page ----------------------------------------------------------------------------------
CSS = """
#status { min-height: 1.5em; }
#notices:empty { display: none; }
"""


def build_app(agent: Any, *, delete_cache: tuple[int, int] | None = (3600, 3600)) -> Any:
    """The Gradio Blocks app for ``agent`` (queued: one turn at a time). Images are handed out as
    ``served_copy`` copies in the Gradio cache folder; ``delete_cache=(every, age)`` seconds:
    Gradio deletes the uploads and copies older than ``age`` every ``every`` seconds."""
    import gradio as gr

    with gr.Blocks(title="askdraw", analytics_enabled=False, delete_cache=delete_cache) as demo:
        gr.Markdown("## askdraw\nAsk by typing, recording or uploading audio: the agent searches "
                    "Wikipedia, answers, or draws.")
        thread = gr.State(None)
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(elem_id="chat", label="Conversation", height=420, feedback_options=None)
                status = gr.Markdown(IDLE, elem_id="status")
                question = gr.Textbox(elem_id="question", label="Question", placeholder="Who painted the Mona Lisa?",
                                      lines=1)
                audio = gr.Audio(sources=["microphone", "upload"], type="filepath", elem_id="audio",
                                 label="Or ask by voice: record, or upload an audio file")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    new = gr.Button("New conversation", elem_id="new")
                notices = gr.Markdown("", elem_id="notices")
            with gr.Column(scale=2):
                route = gr.Markdown("**Route:** -", elem_id="route")
                image = gr.Image(elem_id="image", label="Image", type="filepath", interactive=False, height=360)
                sources = gr.Markdown("", elem_id="sources")
                with gr.Accordion("Trace: steps and timings", open=False):
                    trace = gr.Markdown("```text\n(no turn yet)\n```", elem_id="trace")

        outputs = [chat, route, sources, image, status, trace, notices, thread]

        def respond(q: str, a: str | None, history: list, thread_id: str | None):
            turn = run_turn(agent, q, a, history, thread_id)
            copies: dict[str, str | None] = {}
            try:
                for outputs in turn:
                    src = outputs[3]
                    if src and src not in copies:
                        copies[src] = served_copy(src, image.GRADIO_CACHE)
                    yield (*outputs[:3], copies.get(src) if src else None, *outputs[4:])
            finally:
                turn.close()  # the page went away: run_turn cancels the turn

        def clear_inputs():
            return "", None

        for trigger in (ask.click, question.submit):
            trigger(respond, [question, audio, chat, thread], outputs, api_visibility="private",
                    show_progress="hidden").then(clear_inputs, None, [question, audio], api_visibility="private")

        def new_conversation():
            return ([], "**Route:** -", "", None, IDLE, "```text\n(no turn yet)\n```", "",
                    str(agent.new_thread_id()))

        new.click(new_conversation, None, outputs, api_visibility="private")

        # A clean endpoint for programs (hidden in the page).
        with gr.Group(visible=False):
            api_question = gr.Textbox(label="question")
            api_audio = gr.Audio(type="filepath", label="audio")
            api_answer = gr.Textbox(label="answer")
            api_route = gr.Textbox(label="route")
            api_reason = gr.Textbox(label="reason")
            api_image = gr.Image(type="filepath", label="image")
            api_sources = gr.JSON(label="sources")
            api_button = gr.Button("ask (api)")

        def ask_endpoint(q: str, a: str | None):
            answer, route_, reason, image_path, sources_ = api_ask(agent, q, a)
            return answer, route_, reason, served_copy(image_path, api_image.GRADIO_CACHE), sources_

        api_button.click(ask_endpoint, [api_question, api_audio],
                         [api_answer, api_route, api_reason, api_image, api_sources], api_name="ask",
                         api_description="Ask one question (text, or an audio file): returns "
                                         "(answer, route, reason, image, sources).")
    demo.queue(default_concurrency_limit=1)
    return demo


def serve(host: str = "127.0.0.1", port: int = 7860, settings: Any = None, *, agent: Any = None,
          allow_remote: bool = False, preload: bool = True, block: bool = True,
          on_ready: Any = None) -> Any:
    """Run the web app on ``host:port``. A non-loopback ``host`` needs ``allow_remote=True``
    (ValueError otherwise). ``on_ready(url)`` is called once the server listens.

    The server gets a private temp folder (``ServerTemp``), removed when it stops: on Ctrl-C,
    SIGTERM or SIGHUP when ``block``, else by the returned app's ``close()``."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    if not is_loopback(host) and not allow_remote:
        raise ValueError(f"--host {host} would accept connections from other machines; add --allow-remote to allow it")
    if agent is None:
        from agent.agent import Agent

        agent = Agent(settings)
    if preload:
        try:
            agent.preload()
        except Exception:  # the first turn reports the real error in the page
            pass
    old_handlers = _stop_on_signals() if block else {}
    temp = ServerTemp()
    try:
        demo = build_app(agent)
        # No allowed_paths: Gradio then serves its (private) cache folder only. Deep links would
        # write sessions' state into it as state.json: never serve those.
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True,
                    quiet=True, show_error=True, blocked_paths=[str(temp.path / "deep_links")], ssr_mode=False,
                    max_file_size=MAX_UPLOAD,
                    pwa=False, mcp_server=False, footer_links=["api"], css=CSS, theme=_offline_theme())
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{demo.server_port}/"
        if on_ready is not None:
            on_ready(url)
    except BaseException:
        temp.remove()
        _restore_signals(old_handlers)
        raise
    if not block:
        close = demo.close

        def close_and_remove_temp(verbose: bool = True) -> None:
            try:
                close(verbose)
            finally:
                temp.remove()

        demo.close = close_and_remove_temp
        return demo
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP
        pass
    finally:
        _restore_signals(old_handlers, ignore=True)  # a second Ctrl-C does not cut the clean-up short
        try:
            demo.close()
        finally:
            temp.remove()
            _restore_signals(old_handlers)
    return demo


def _offline_theme() -> Any:
    """The default theme with system fonts (the default one loads Google fonts: not offline)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


__all__ = ["build_app", "serve", "run_turn", "api_ask", "is_loopback", "served_copy", "ServerTemp"]
