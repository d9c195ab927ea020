"""A chat model served by an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
Ollama, llama.cpp's server, OpenAI), with the same interface as :class:`tools.llm.LocalLLM`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr

from tools.base import Message
from tools.chat import AskdrawChatModel, as_dicts, label_probs_from_top
from tools.common import Cancelled, ToolError, current_cancel_event, load_once
from tools.endpoint import Endpoint, is_unsupported

__all__ = ["LABEL_METHODS", "EndpointLLM"]

LABEL_METHODS = ("logprobs", "json_schema", "parse")


class EndpointLLM(AskdrawChatModel):
    """A chat model served by an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
    Ollama, llama.cpp's server, OpenAI): a LangChain ``BaseChatModel`` with the same call keywords
    as :class:`tools.llm.LocalLLM` (:data:`tools.chat.NATIVE_KWARGS`), and tool calling
    (``bind_tools``).

    Replies are always streamed (so ``stop_when`` and cancelling end the request early). The route
    decision stays structured: label scoring (``invoke(messages, labels=[...])`` or
    :meth:`score_labels`) reads the labels' probabilities from the server's ``logprobs``; a server
    without them gets a JSON-schema-constrained choice, and one that supports neither a plain
    reply that must be exactly one label (else an error, which the router retries and then falls
    back on). Which method worked is kept in ``label_method``.
    """

    base_url: str
    model: str | None = None
    max_new_tokens: int = 160
    label_method: str | None = None  # None until the first decision finds what the server supports
    label_fallbacks: list[str] = Field(default_factory=list)  # why a better method was given up (for the trace)
    runtime: str = "endpoint"
    runtime_note: str = "an OpenAI-compatible server"

    _endpoint: Any = PrivateAttr(default=None)
    _json_format: str | None = PrivateAttr(default=None)  # which response_format the server took
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

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
        **kwargs: Any,
    ) -> None:
        if label_method is not None and label_method not in LABEL_METHODS:
            raise ValueError(f"label_method must be one of {LABEL_METHODS}, got {label_method!r}")
        endpoint = Endpoint.for_tool("LLM", base_url, api_key_env=api_key_env, timeout=timeout, retries=retries)
        model = (model or "").strip() or None
        super().__init__(base_url=endpoint.base_url, model=model, max_new_tokens=max_new_tokens,
                         label_method=label_method, name=f"{model or '?'} @ {endpoint.base_url}", **kwargs)
        self._endpoint = endpoint

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def _llm_type(self) -> str:
        return "askdraw-openai-compatible"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "base_url": self.base_url}

    @property
    def loaded(self) -> bool:
        return self.model is not None and self.load_seconds is not None

    @load_once
    def load(self) -> None:
        """Contact the server once: check it answers and, without a model name, take the one
        model it serves (``GET /v1/models``)."""
        self.model = self.endpoint.served_model(self.model, "--llm-model (ASKDRAW_LLM_MODEL)")
        self.name = f"{self.model} @ {self.endpoint.base_url}"

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

    # -- LangChain -------------------------------------------------------------------------
    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, *, max_new_tokens: int | None = None,
                reply_prefix: str = "", stop_when: Callable[[str], bool] | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Greedy (temperature 0) reply, streamed; see :meth:`tools.llm.LocalLLM._pieces`."""
        if reply_prefix:
            raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
        if kwargs.get("labels") or kwargs.get("tools"):
            raise ValueError("labels= and tools= are for invoke, not stream")
        cancel = current_cancel_event()
        extra = {"stop": stop} if stop else {}
        stream = self._create(messages=as_dicts(messages), max_tokens=max_new_tokens or self.max_new_tokens,
                              temperature=0.0, stream=True, **extra)
        reply, chunks, sent = "", 0, False
        try:
            for text in self._texts(stream):
                chunks += 1
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                if not text:
                    continue
                reply += text
                sent = True
                yield ChatGenerationChunk(message=AIMessageChunk(content=text))
                if stop_when is not None and stop_when(reply):
                    break
        finally:
            _close(stream)
        if not chunks:
            raise self.endpoint.malformed("the streamed reply held no completion chunks (not an OpenAI-style "
                                          "event stream)")
        if not sent:  # an empty reply is still a reply (the caller says it is empty)
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, *, labels: Sequence[str] | None = None,
                  tools: list[dict] | None = None, tool_choice: Any = None, **kwargs: Any) -> ChatResult:
        if labels:
            if kwargs.get("reply_prefix"):
                raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
            probs = self._label_probs(as_dicts(messages), list(labels))
            message = AIMessage(content=max(probs, key=probs.get),
                                response_metadata={"label_probs": probs, "label_method": self.label_method})
            return ChatResult(generations=[ChatGeneration(message=message)])
        if tools:
            return ChatResult(generations=[ChatGeneration(message=self._tool_call(messages, tools, tool_choice))])
        text = "".join(chunk.text for chunk in self._stream(messages, stop, run_manager, **kwargs))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text.strip()))])

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """The model with OpenAI-style ``tools`` (``tool_choice``: "any"/"required", "auto", "none" or
        a tool's name), for servers that support tool calls (llama.cpp's with a function-calling chat
        format, vLLM, Ollama, OpenAI)."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice == "any":
            tool_choice = "required"
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            tool_choice = {"type": "function", "function": {"name": tool_choice}}
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _tool_call(self, messages: list[BaseMessage], tools: list[dict], tool_choice: Any) -> AIMessage:
        extra = {"tool_choice": tool_choice} if tool_choice else {}
        required = tool_choice == "required"
        try:  # a required call is a probe: servers that refuse it (llama.cpp's function calling: HTTP 500)
            reply = self._create(messages=as_dicts(messages), tools=tools, temperature=0.0,
                                 max_tokens=self.max_new_tokens, probe=required, **extra)
        except ToolError as exc:
            if required and getattr(exc.__cause__, "status_code", None):  # refused, not unreachable
                raise ToolError(f"{self.endpoint.label}: tool_choice 'required' refused ({exc})") from exc
            raise
        try:
            message = reply.choices[0].message
        except (AttributeError, IndexError, TypeError):
            raise self.endpoint.malformed(f"no choices[0].message in {str(reply)[:80]!r}") from None
        calls, invalid = [], []
        for i, call in enumerate(getattr(message, "tool_calls", None) or []):
            function = getattr(call, "function", None)
            name, raw = getattr(function, "name", None), getattr(function, "arguments", None) or "{}"
            try:
                args = json.loads(raw)
                if not isinstance(args, dict):
                    raise ValueError("not an object")
                calls.append({"name": name, "args": args, "id": getattr(call, "id", None) or f"call_{i}",
                              "type": "tool_call"})
            except ValueError as exc:
                invalid.append({"name": name, "args": raw, "id": getattr(call, "id", None), "error": str(exc),
                                "type": "invalid_tool_call"})
        return AIMessage(content=message.content or "", tool_calls=calls, invalid_tool_calls=invalid)

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
    def _label_probs(self, messages: list[Message], labels: list[str]) -> dict[str, float]:
        """Probability of each label as the reply; see the class docstring for how."""
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
        return label_probs_from_top(top, labels)

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
