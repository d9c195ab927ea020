"""A chat model served by an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
Ollama, llama.cpp's server, OpenAI), with the same interface as :class:`tools.llm.LocalLLM`."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tools.base import Message
from tools.common import Cancelled, ToolError, current_cancel_event, load_once
from tools.endpoint import Endpoint, is_unsupported

__all__ = ["LABEL_METHODS", "EndpointLLM"]

LABEL_METHODS = ("logprobs", "json_schema", "parse")


class EndpointLLM:
    """The same chat model interface as :class:`LocalLLM`, served by an OpenAI-compatible
    ``/v1/chat/completions`` endpoint (vLLM, TGI, Ollama, llama.cpp's server, OpenAI).

    Replies are always streamed (so ``stop`` and cancelling end the request early). The route
    decision stays structured: :meth:`score_labels` reads the labels' probabilities from the
    server's ``logprobs``; a server without them gets a JSON-schema-constrained choice, and one
    that supports neither a plain reply that must be exactly one label (else an error, which the
    router retries and then falls back on). Which method worked is kept in ``label_method``.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        max_new_tokens: int = 160,
        api_key_env: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        label_method: str | None = None,
    ) -> None:
        self.endpoint = Endpoint.for_tool("LLM", base_url, api_key_env=api_key_env, timeout=timeout, retries=retries)
        self.model = (model or "").strip() or None
        self.max_new_tokens = max_new_tokens
        if label_method is not None and label_method not in LABEL_METHODS:
            raise ValueError(f"label_method must be one of {LABEL_METHODS}, got {label_method!r}")
        self.label_method = label_method  # None until the first decision finds what the server supports
        self.label_fallbacks: list[str] = []  # why a better method was given up (for the trace)
        self._json_format: str | None = None  # which response_format the server took
        self.load_seconds: float | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.model or '?'} @ {self.endpoint.base_url}"

    @property
    def loaded(self) -> bool:
        return self.model is not None and self.load_seconds is not None

    @load_once
    def load(self) -> None:
        """Contact the server once: check it answers and, without a model name, take the one
        model it serves (``GET /v1/models``)."""
        self.model = self.endpoint.served_model(self.model, "--llm-model (ASKDRAW_LLM_MODEL)")

    def _create(self, *, probe: bool = False, **kwargs: Any) -> Any:
        """One chat completion request. ``probe``: finding out what the server supports, so a
        refusal is an answer and is not retried."""
        self.load()
        client = self.endpoint.client()
        if probe:
            client = client.with_options(max_retries=0)
        try:
            return client.chat.completions.create(model=self.model, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one-line message naming the endpoint
            raise self.endpoint.error(exc) from exc

    def chat(self, messages: Sequence[Message], *, max_new_tokens: int | None = None,
             on_token: Callable[[str], None] | None = None, prefix: str = "",
             stop: Callable[[str], bool] | None = None) -> str:
        """Greedy (temperature 0) reply, streamed; see :meth:`tools.llm.LocalLLM.chat`."""
        if prefix:
            raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
        cancel = current_cancel_event()
        stream = self._create(messages=list(messages), max_tokens=max_new_tokens or self.max_new_tokens,
                              temperature=0.0, stream=True)
        pieces: list[str] = []
        chunks = 0
        try:
            for text in self._texts(stream):
                chunks += 1
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                if not text:
                    continue
                pieces.append(text)
                if on_token is not None:
                    on_token(text)  # the caller's exceptions (e.g. cancelling) pass through as they are
                if stop is not None and stop("".join(pieces)):
                    break
        finally:
            _close(stream)
        if not chunks:
            raise self.endpoint.malformed("the streamed reply held no completion chunks (not an OpenAI-style "
                                          "event stream)")
        return "".join(pieces).strip()

    def _texts(self, stream: Any) -> Iterator[str]:
        """The text of each chunk of a streamed reply ("" for a chunk without any, e.g. usage only)."""
        iterator = iter(stream)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - the stream broke off or was malformed
                raise self.endpoint.error(exc, doing="while streaming") from exc
            choices = getattr(chunk, "choices", None)
            delta = getattr(choices[0], "delta", None) if choices else None
            text = getattr(delta, "content", None) if delta is not None else None
            yield text if isinstance(text, str) else ""

    # -- structured decisions ------------------------------------------------------------------
    def score_labels(
        self, messages: Sequence[Message], labels: Sequence[str], *, prefix: str = ""
    ) -> dict[str, float]:
        """Probability of each label as the reply; see the class docstring for how."""
        if prefix:
            raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
        probing = self.label_method is None
        methods = list(LABEL_METHODS) if probing else [self.label_method]
        for i, method in enumerate(methods):
            last = i == len(methods) - 1
            try:
                scores = getattr(self, f"_by_{method}")(list(messages), list(labels), probe=probing and not last)
            except _Unsupported as exc:
                if last:
                    raise ToolError(f"{self.endpoint.label}: {exc}") from None
                self.label_fallbacks.append(f"{method}: {exc}")
                continue
            except ToolError as exc:
                if probing and not last and is_unsupported(exc.__cause__):
                    self.label_fallbacks.append(f"{method}: {exc}")
                    continue
                raise
            self.label_method = method
            return scores
        raise ToolError(f"{self.endpoint.label}: no way to score labels")  # not reached

    def _by_logprobs(self, messages: list[Message], labels: list[str], probe: bool = False) -> dict[str, float]:
        reply = self._create(messages=messages, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20,
                             probe=probe)
        if not getattr(reply, "choices", None):
            raise self.endpoint.malformed(f"no choices in {str(reply)[:80]!r}")
        top = _top_logprobs(reply)
        if not top:
            raise _Unsupported("the server returned no logprobs")
        best: dict[str, float] = {}
        for token, logprob in top:
            piece = token.strip().lower()
            if not piece:
                continue
            owners = [label for label in labels if label.lower().startswith(piece)]
            if len(owners) == 1:  # a token that starts exactly one label counts for it
                best[owners[0]] = max(best.get(owners[0], -math.inf), logprob)
        if not best:
            shown = ", ".join(repr(t) for t, _ in top[:5])
            raise ToolError(f"none of the labels is among the model's likely first tokens ({shown})")
        floor = min(lp for _, lp in top) - 1.0  # unseen labels: less likely than anything listed
        totals = [best.get(label, floor) for label in labels]
        peak = max(totals)
        exps = [math.exp(t - peak) for t in totals]
        return {label: e / sum(exps) for label, e in zip(labels, exps)}

    def _by_json_schema(self, messages: list[Message], labels: list[str], probe: bool = False) -> dict[str, float]:
        schema = {"type": "object", "properties": {"label": {"type": "string", "enum": labels}},
                  "required": ["label"], "additionalProperties": False}
        formats = {  # OpenAI / vLLM / Ollama / llama.cpp's C++ server, then llama-cpp-python's own form
            "json_schema": {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": schema}},
            "json_object": {"type": "json_object", "schema": schema},
        }
        ask = messages[:-1] + [{**messages[-1], "content": messages[-1]["content"]
                                + f"\n\nReply as JSON: {{\"label\": one of {', '.join(labels)}}}"}]
        names = [self._json_format] if self._json_format else list(formats)
        for j, name in enumerate(names):
            try:
                reply = self._create(messages=ask, max_tokens=24, temperature=0.0, response_format=formats[name],
                                     probe=probe or j < len(names) - 1)
            except ToolError as exc:
                if j < len(names) - 1 and is_unsupported(exc.__cause__):
                    self.label_fallbacks.append(f"response_format {name}: {exc}")
                    continue
                raise
            self._json_format = name
            break
        text = _message_text(reply, self.endpoint)
        try:
            label = json.loads(text)["label"]
        except (ValueError, KeyError, TypeError):
            raise _Unsupported(f"the reply was not the requested JSON ({text[:60]!r})") from None
        if label not in labels:
            raise _Unsupported(f"the JSON named {label!r}, not one of {', '.join(labels)}")
        return {x: 1.0 if x == label else 0.0 for x in labels}

    def _by_parse(self, messages: list[Message], labels: list[str], probe: bool = False) -> dict[str, float]:
        reply = self._create(messages=messages, max_tokens=4, temperature=0.0, probe=probe)
        text = _message_text(reply, self.endpoint)
        word = (text.strip().split() or [""])[0].strip(".,:;!\"'`*").lower()
        if word not in labels:
            raise ToolError(f"the model replied {text[:40]!r}, not one of {', '.join(labels)}")
        return {x: 1.0 if x == word else 0.0 for x in labels}


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - closing a broken stream may fail again
            pass


class _Unsupported(Exception):
    """This way of scoring labels does not work with this server (try the next one)."""


def _message_text(reply: Any, endpoint: Any) -> str:
    try:
        content = reply.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise endpoint.malformed(f"no choices[0].message in {str(reply)[:80]!r}") from None
    if not isinstance(content, str):
        raise endpoint.malformed("choices[0].message.content is not text")
    return content


def _top_logprobs(reply: Any) -> list[tuple[str, float]]:
    """(token, logprob) pairs for the reply's first token, best first; [] if none were sent."""
    try:
        choice = reply.choices[0]
    except (AttributeError, IndexError, TypeError):
        return []
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return []
    pairs = [(item.token, float(item.logprob)) for item in getattr(content[0], "top_logprobs", None) or []]
    return sorted(pairs, key=lambda p: -p[1])
