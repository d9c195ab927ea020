"""OpenAI-compatible HTTP endpoints: one client per server, and its failures as one-line errors.

vLLM, TGI, Ollama, llama.cpp's server, LocalAI and OpenAI itself all speak this API, so the
heavy models can live on a GPU box while askdraw runs anywhere. The official ``openai`` client
does the HTTP: connection pooling, retries with exponential backoff (0.5 s, 1 s, 2 s ... up to
8 s, or the server's ``Retry-After``) on connection errors, timeouts, 408/409/429 and 5xx.
What it raises is turned here into a :class:`EndpointError` whose message says which endpoint,
what went wrong and how often it was tried.

The API key is never a setting (settings end up in traces and result files): it is read from
the environment variable the settings name (``OPENAI_API_KEY`` by default). Local servers need
none; a placeholder is sent then.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tools.common import ToolError

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 2
NO_KEY = "not-needed"  # what is sent when the key variable is unset (local servers ignore it)
_RETRIED_STATUSES = (408, 409, 429)
_API_PATHS = ("/chat/completions", "/audio/transcriptions", "/images/generations", "/models", "/completions")


class EndpointError(ToolError):
    """An OpenAI-compatible endpoint failed; the message is one line for the user."""


class EndpointUnavailable(EndpointError):
    """The server could not be used at all (unreachable, timed out, refused with an HTTP error,
    after the retries): retrying the step or falling back inside the run would not help."""


def normalise_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a full ``.../v1/chat/completions`` is cut
    back to ``.../v1``; other paths are kept (some servers mount the API elsewhere)."""
    raw = (url or "").strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint URL must start with http:// or https:// and name a host, got {url!r}")
    path = parts.path.rstrip("/")
    for suffix in _API_PATHS:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection failure ('Connection refused', 'Name or service not known')."""
    inner: BaseException = exc
    seen = set()
    # Only explicit causes ("raise ... from"): an exception's __context__ may be something
    # unrelated that happened to be handled nearby (e.g. "no running event loop").
    while inner.__cause__ is not None and id(inner) not in seen:
        seen.add(id(inner))
        inner = inner.__cause__
    text = str(inner).strip() or type(inner).__name__
    if "] " in text and text.startswith("["):  # "[Errno 111] Connection refused"
        text = text.split("] ", 1)[1]
    return " ".join(text.split())[:160]


def _is_transport_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11")


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:200]
    response = getattr(exc, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    return " ".join(str(text).split())[:200]


@dataclass
class Endpoint:
    """One OpenAI-compatible server. ``what`` names its role in messages ('LLM', 'ASR', 'image')."""

    base_url: str
    what: str = "LLM"
    api_key_env: str = DEFAULT_API_KEY_ENV
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    _client: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.base_url = normalise_base_url(self.base_url)
        except ValueError as exc:
            raise EndpointError(f"{self.what} endpoint: {exc}") from None

    @classmethod
    def for_tool(cls, what: str, base_url: str, *, api_key_env: str | None = None, timeout: float | None = None,
                 retries: int | None = None) -> Endpoint:
        """The endpoint of one tool (``what``: 'LLM', 'ASR', 'image'); a setting left None takes its default."""
        return cls(base_url, what=what, api_key_env=api_key_env or DEFAULT_API_KEY_ENV,
                   timeout=timeout or DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES if retries is None else retries)

    @property
    def label(self) -> str:
        return f"{self.what} endpoint {self.base_url}"

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env) or NO_KEY

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key,
                                             timeout=self.timeout, max_retries=self.retries)
            return self._client

    def error(self, exc: BaseException, *, doing: str = "") -> EndpointError:
        """A one-line error for whatever the client raised (``doing``: e.g. 'while streaming')."""
        import openai

        where = self.label
        tries = self.retries + 1
        tried = f"; tried {tries} times" if tries > 1 else ""
        if isinstance(exc, EndpointError):
            return exc
        if doing:  # the reply had started: no retry can resume it
            if isinstance(exc, openai.APITimeoutError) or "Timeout" in type(exc).__name__:
                return EndpointUnavailable(f"{where}: the reply stopped arriving {doing} (nothing within {self.timeout:g} s)")
            if isinstance(exc, openai.APIConnectionError) or _is_transport_error(exc):
                return EndpointUnavailable(f"{where}: the reply broke off {doing} ({_cause(exc)})")
            if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIStatusError):
                return EndpointUnavailable(f"{where} reported an error {doing}: {_server_message(exc) or _cause(exc)}")
        if isinstance(exc, openai.APITimeoutError):
            return EndpointUnavailable(f"{where}: no answer within {self.timeout:g} s{tried}")
        if isinstance(exc, openai.APIConnectionError):
            return EndpointUnavailable(f"{where} is unreachable ({_cause(exc)}){tried}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            try:
                from http import HTTPStatus

                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "error"
            message = _server_message(exc)
            detail = f"HTTP {status} ({phrase}{': ' + message if message else ''})"
            retried = status in _RETRIED_STATUSES or status >= 500
            hint = ""
            if status in (401, 403):
                hint = f"; set the API key in ${self.api_key_env}"
            elif status == 404:
                hint = "; check the URL and the model name (GET /v1/models lists the server's models)"
            kind = EndpointError if status in (400, 404, 422, 501) else EndpointUnavailable  # shape vs server
            return kind(f"{where} answered {detail}{tried if retried else ''}{hint}")
        during = f" {doing}" if doing else ""
        if isinstance(exc, (openai.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError)):
            return EndpointError(f"{where} sent a malformed reply{during}: {type(exc).__name__}: {_cause(exc)}")
        return EndpointError(f"{where} failed{during}: {type(exc).__name__}: {_cause(exc)}")

    def malformed(self, detail: str) -> EndpointError:
        return EndpointError(f"{self.label} sent a malformed reply: {detail}"[:300])

    def served_model(self, name: str | None, option: str) -> str:
        """Check the server answers (``GET /v1/models``) and return the model to ask for: ``name``,
        or without one the only model the server lists (``option`` names the setting to choose with)."""
        models = self.list_models()
        if name:
            return name
        if len(models) != 1:
            listed = ", ".join(models[:8]) or "none"
            raise EndpointError(f"{self.label} serves {len(models)} models ({listed}); choose one with {option}")
        return models[0]

    def list_models(self) -> list[str]:
        try:
            page = self.client().models.list()
            return [m.id for m in page.data]
        except Exception as exc:  # noqa: BLE001 - turned into a one-line message
            raise self.error(exc) from exc


def is_unsupported(exc: BaseException | None) -> bool:
    """The server refused a request's shape (an option it does not know). Used only while probing
    what a server supports: 400/404/422/501, and 500, which llama-cpp-python's server answers to an
    unknown ``response_format``."""
    import openai

    return isinstance(exc, openai.APIStatusError) and exc.status_code in (400, 404, 422, 500, 501)


__all__ = ["DEFAULT_API_KEY_ENV", "Endpoint", "EndpointError", "EndpointUnavailable", "is_unsupported", "normalise_base_url"]
