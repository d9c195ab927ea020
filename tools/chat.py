"""The LLM seam: every LLM call askdraw makes goes through a LangChain ``BaseChatModel``.

askdraw's own models (:class:`tools.llm.LocalLLM` on transformers, :class:`tools.llm_endpoint.EndpointLLM`
over an OpenAI-compatible server) are ``BaseChatModel``\\ s: ``invoke``/``stream``/``bind``, callbacks
(LangSmith or any callback handler), and LangGraph's ``stream_mode="messages"`` all work with them.
Besides the standard arguments they understand a few call keywords (:data:`NATIVE_KWARGS`): a forced
reply start, an early stop (the KV prefix cache and the early stops are what keep the starter model
fast), and label scoring (the route decision's label probabilities, returned in the reply's
``response_metadata["label_probs"]``).

Any other ``BaseChatModel`` (``ChatOpenAI``, ``ChatOllama``, ``ChatHuggingFace``, ...) is wrapped by
:class:`LangChainLLM`, which offers the same two calls the agent uses: :func:`chat` (a streamed reply) and
``score_labels`` (label probabilities from ``logprobs`` in the response metadata where the model gives
them, else a structured choice, else a one-word reply that must be a label).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from tools.base import Message
from tools.common import Cancelled, ToolError, current_cancel_event

__all__ = ["AskdrawChatModel", "LABEL_TAG", "LangChainLLM", "LocalChatModel", "NATIVE_KWARGS", "NOSTREAM", "as_dicts", "as_llm", "chat",
           "label_probs_from_top", "tagged"]

#: Call keywords askdraw's own chat models understand (``model.invoke(messages, **kwargs)``):
#: ``max_new_tokens``, ``reply_prefix`` (text the reply is forced to start with, not returned),
#: ``stop_when`` (a predicate on the reply so far that ends generation), ``labels`` (score these
#: labels as the reply instead of generating: ``response_metadata["label_probs"]``).
NATIVE_KWARGS = ("max_new_tokens", "reply_prefix", "stop_when", "labels")

#: LangGraph leaves calls tagged "nostream" out of ``stream_mode="messages"`` (callbacks still see
#: them): only the answer's tokens stream there, not the route decision's or the follow-up rewrite's.
NOSTREAM = "nostream"
LABEL_TAG = "askdraw:route_labels"


_call_tags: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("askdraw_call_tags", default=())


@contextlib.contextmanager
def tagged(*tags: str) -> Iterator[None]:
    """LLM calls made within this block carry ``tags`` (e.g. :data:`NOSTREAM` for the follow-up
    rewrite and the image prompt, so LangGraph's ``stream_mode="messages"`` carries the answer)."""
    token = _call_tags.set((*_call_tags.get(), *tags))
    try:
        yield
    finally:
        _call_tags.reset(token)


def as_dicts(messages: Iterable[BaseMessage | Message]) -> list[Message]:
    """``{"role", "content"}`` dicts (what chat templates and OpenAI-style servers take)."""
    roles = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
    out = []
    for m in messages:
        if isinstance(m, dict):
            out.append({"role": str(m["role"]), "content": str(m.get("content") or "")})
        else:
            out.append({"role": roles.get(m.type, m.type), "content": m.text})
    return out


class AskdrawChatModel(BaseChatModel):
    """Base of askdraw's own chat models: the agent's two calls, :meth:`chat` and
    :meth:`score_labels`, run through ``stream``/``invoke``, so callbacks see every one."""

    load_seconds: float | None = None
    runtime: str = ""  # where the model runs: "transformers", "llama.cpp", "endpoint"
    runtime_note: str = ""  # why it runs there (the models: line)
    _tool_choices: list[str] = PrivateAttr(default_factory=lambda: ["any", "auto"])  # see choose_tool

    @property
    def loaded(self) -> bool:  # pragma: no cover - overridden
        return True

    def load(self) -> None:  # pragma: no cover - overridden
        return None

    def chat(self, messages: Sequence[Message], *, max_new_tokens: int | None = None,
             on_token: Callable[[str], None] | None = None, prefix: str = "",
             stop: Callable[[str], bool] | None = None, tags: Sequence[str] = ()) -> str:
        """The reply to ``messages`` (greedy), streamed to ``on_token`` piece by piece. ``prefix``
        is text the reply is forced to start with (not returned); ``stop(reply_so_far)`` ends
        generation early when it returns True."""
        return chat(self, messages, max_new_tokens=max_new_tokens, on_token=on_token, prefix=prefix, stop=stop,
                    tags=tags)

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        # Label scores and tool calls are one answer, not a text to stream: invoke them whole even
        # when a streaming handler is attached (LangGraph's stream_mode="messages" attaches one).
        if kwargs.get("labels") or kwargs.get("tools"):
            return False
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    @property
    def supports_tools(self) -> bool:
        return can_call_tools(self)

    def choose_tool(self, messages: Sequence[Message], tools: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        """The one tool the model calls among ``tools``: see :meth:`LangChainLLM.choose_tool`."""
        return choose_tool(self, messages, tools, self.name or type(self).__name__, self._tool_choices)

    def score_labels(self, messages: Sequence[Message], labels: Sequence[str], *,
                     prefix: str = "") -> dict[str, float]:
        """Probability of each label as the reply (normalised over the labels)."""
        kwargs: dict[str, Any] = {"labels": list(labels)}
        if prefix:
            kwargs["reply_prefix"] = prefix
        reply = self.invoke(list(messages), {"tags": [LABEL_TAG, NOSTREAM], "run_name": "score_labels"}, **kwargs)
        probs = reply.response_metadata.get("label_probs")
        if not isinstance(probs, dict):
            raise ToolError(f"{self.name}: no label probabilities in the reply")
        return probs



class LocalChatModel(AskdrawChatModel):
    """A chat model askdraw decodes itself (transformers or llama.cpp): LangChain's ``_stream`` and
    ``_generate`` on the subclass's ``_pieces`` (greedy decoding, piece by piece) and ``_score``
    (label probabilities from the logits)."""

    def _pieces(self, messages: Sequence[Message], max_new_tokens: int | None, prefix: str,
                stop: Callable[[str], bool] | None) -> Iterator[str]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _score(self, messages: Sequence[Message], labels: Sequence[str], *,
               prefix: str = "") -> dict[str, float]:  # pragma: no cover - overridden
        raise NotImplementedError

    # -- LangChain -------------------------------------------------------------------------
    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, *, max_new_tokens: int | None = None,
                reply_prefix: str = "", stop_when: Callable[[str], bool] | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("labels"):
            raise ValueError("labels= scores labels: use invoke, not stream")
        empty = True
        for piece in self._pieces(as_dicts(messages), max_new_tokens, reply_prefix, _stopping(stop_when, stop)):
            empty = False
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        if empty:  # an empty reply (the model ended its turn at once) is a reply, not an error
            yield ChatGenerationChunk(message=AIMessageChunk(content=""))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, *, max_new_tokens: int | None = None,
                  reply_prefix: str = "", stop_when: Callable[[str], bool] | None = None,
                  labels: Sequence[str] | None = None, **kwargs: Any) -> ChatResult:
        dicts = as_dicts(messages)
        if labels:
            probs = self._score(dicts, list(labels), prefix=reply_prefix)
            best = max(probs, key=probs.get)
            message = AIMessage(content=best, response_metadata={"label_probs": probs, "label_method": "logits"})
            return ChatResult(generations=[ChatGeneration(message=message)])
        pieces = []
        for piece in self._pieces(dicts, max_new_tokens, reply_prefix, _stopping(stop_when, stop)):
            pieces.append(piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="".join(pieces).strip()))])


def _stopping(stop_when: Callable[[str], bool] | None, stop: list[str] | None) -> Callable[[str], bool] | None:
    """One predicate for ``stop_when`` and LangChain's ``stop`` sequences (the reply stops once it
    contains one; the sequence itself is not cut off)."""
    if not stop:
        return stop_when
    return lambda text: any(s in text for s in stop) or bool(stop_when and stop_when(text))


def chat(model: BaseChatModel, messages: Sequence[Message | BaseMessage], *, max_new_tokens: int | None = None,
         on_token: Callable[[str], None] | None = None, prefix: str = "",
         stop: Callable[[str], bool] | None = None, tags: Sequence[str] = ()) -> str:
    """One streamed reply of any ``BaseChatModel`` (see :meth:`AskdrawChatModel.chat`). askdraw's
    own models stop themselves (``stop_when``); another model's stream is closed when ``stop``
    says so (its callbacks then see the run end with ``GeneratorExit``: it was cut short)."""
    native = isinstance(model, AskdrawChatModel)
    kwargs: dict[str, Any] = {}
    if native:
        kwargs.update({k: v for k, v in (("max_new_tokens", max_new_tokens), ("reply_prefix", prefix),
                                         ("stop_when", stop)) if v})
    else:
        if prefix:
            raise ToolError(f"a forced reply prefix is not available with {model_name(model)}")
        kwargs.update(token_limit(model, max_new_tokens))
    cancel = current_cancel_event()
    pieces: list[str] = []
    tags = [*_call_tags.get(), *tags]
    config = {"tags": list(dict.fromkeys(tags))} if tags else None
    with contextlib.closing(model.stream(list(messages), config, **kwargs)) as stream:
        for chunk in stream:
            text = chunk.text
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            if not text:
                continue
            pieces.append(text)
            if on_token is not None:
                on_token(text)  # the caller's exceptions (e.g. cancelling) pass through as they are
            if not native and ((stop is not None and stop("".join(pieces)))
                               or (max_new_tokens and len(pieces) >= max_new_tokens)):
                break  # (a streamed chunk is about a token: the cap holds for models without a known keyword)
    return "".join(pieces).strip()


def token_limit(model: BaseChatModel, max_new_tokens: int | None) -> dict[str, Any]:
    """The call keyword that caps a foreign model's reply length, where its class has a known one;
    none otherwise (:func:`chat` also stops reading after ``max_new_tokens`` chunks). For
    ``ChatOpenAI`` and its family it is ``max_tokens`` in ``extra_body``: langchain-openai sends its
    own ``max_tokens`` as ``max_completion_tokens``, which llama.cpp's server ignores (measured: a
    5-token cap gave a 19,531-character reply in 158 s), while every OpenAI-compatible server reads
    ``max_tokens``."""
    if not max_new_tokens:
        return {}
    fields = getattr(type(model), "model_fields", {})
    if "extra_body" in fields and "max_tokens" in fields:  # ChatOpenAI and the OpenAI-compatible family
        return {"extra_body": {**(getattr(model, "extra_body", None) or {}), "max_tokens": max_new_tokens}}
    return {}


def model_name(model: Any) -> str:
    """A model's name for traces and messages: ``ChatOpenAI`` -> "gpt-4o-mini @ http://host/v1"."""
    name = getattr(model, "model_name", None) or getattr(model, "model", None)
    base = getattr(model, "openai_api_base", None) or getattr(model, "base_url", None)
    if isinstance(name, str) and name:
        return f"{name} @ {base}" if isinstance(base, str) and base else name
    return model.get_name() if hasattr(model, "get_name") else type(model).__name__


def label_probs_from_top(top: Sequence[tuple[str, float]], labels: Sequence[str]) -> dict[str, float]:
    """Label probabilities from a reply's first-token ``(token, logprob)`` alternatives: a token
    that starts exactly one label counts for it; labels not seen count as less likely than anything
    listed. Raises ToolError when no listed token starts a label."""
    best: dict[str, float] = {}
    for token, logprob in top:
        piece = token.strip().lower()
        if not piece:
            continue
        owners = [label for label in labels if label.lower().startswith(piece)]
        if len(owners) == 1:
            best[owners[0]] = max(best.get(owners[0], -math.inf), logprob)
    if not best:
        shown = ", ".join(repr(t) for t, _ in list(top)[:5])
        raise ToolError(f"none of the labels is among the model's likely first tokens ({shown})")
    floor = min(lp for _, lp in top) - 1.0
    totals = [best.get(label, floor) for label in labels]
    peak = max(totals)
    exps = [math.exp(t - peak) for t in totals]
    return {label: e / sum(exps) for label, e in zip(labels, exps)}


def _top_from_metadata(reply: AIMessage) -> list[tuple[str, float]]:
    """``(token, logprob)`` alternatives for the reply's first token from ``response_metadata
    ["logprobs"]`` (the OpenAI shape LangChain's OpenAI-compatible models put there); [] if none."""
    logprobs = (reply.response_metadata or {}).get("logprobs") or {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return []
    first = content[0] if isinstance(content[0], dict) else {}
    pairs = [(str(item.get("token", "")), float(item.get("logprob", -math.inf)))
             for item in first.get("top_logprobs") or [] if isinstance(item, dict)]
    return sorted(pairs, key=lambda p: -p[1])


class _Unsupported(Exception):
    """This way of choosing a label does not work with this model (try the next one)."""


class LangChainLLM:
    """Any LangChain ``BaseChatModel`` as askdraw's LLM (``Agent(llm=ChatOpenAI(...))``).

    Replies stream through ``model.stream`` (so LangGraph's ``stream_mode="messages"`` and callbacks
    see them). The route decision takes label probabilities from ``logprobs`` in the response
    metadata where the model offers them (``label_method="logprobs"``), else a structured choice
    (``with_structured_output``: ``"structured"``), else a one-word reply that must be a label
    (``"parse"``). Which one worked, and why the better ones were given up, is kept for the trace
    (``label_method``, ``label_fallbacks``). :meth:`choose_tool` makes the decision one tool call
    (``bind_tools``) for models that support it.
    """

    def __init__(self, model: BaseChatModel, *, label_method: str | None = None) -> None:
        if not isinstance(model, BaseChatModel):
            raise TypeError(f"llm must be a LangChain BaseChatModel, got {type(model).__name__}")
        self.model = model
        self.label_method = label_method
        self.label_fallbacks: list[str] = []
        self.load_seconds: float | None = 0.0
        self._lock = threading.Lock()
        self._tool_choices = ["any", "auto"]

    @property
    def name(self) -> str:
        return model_name(self.model)

    @property
    def loaded(self) -> bool:
        return True  # a LangChain model is ready when it is built

    def load(self) -> None:
        return None

    @property
    def supports_tools(self) -> bool:
        return can_call_tools(self.model)

    @property
    def has_logprobs(self) -> bool:
        return "logprobs" in getattr(type(self.model), "model_fields", {})

    def chat(self, messages: Sequence[Message], *, max_new_tokens: int | None = None,
             on_token: Callable[[str], None] | None = None, prefix: str = "",
             stop: Callable[[str], bool] | None = None, tags: Sequence[str] = ()) -> str:
        return chat(self.model, messages, max_new_tokens=max_new_tokens, on_token=on_token, prefix=prefix,
                    stop=stop, tags=tags)

    # -- the route decision -------------------------------------------------------------------
    def score_labels(self, messages: Sequence[Message], labels: Sequence[str], *,
                     prefix: str = "") -> dict[str, float]:
        if prefix:
            raise ToolError(f"a forced reply prefix is not available with {self.name}")
        methods = [self.label_method] if self.label_method else self._methods()
        for i, method in enumerate(methods):
            try:
                scores = getattr(self, f"_by_{method}")(list(messages), list(labels))
            except _Unsupported as exc:
                if i == len(methods) - 1:
                    raise ToolError(f"{self.name}: {exc}") from None
                self.label_fallbacks.append(f"{method}: {exc}")
                continue
            self.label_method = method
            return scores
        raise ToolError(f"{self.name}: no way to choose a label")  # not reached

    def _methods(self) -> list[str]:
        methods = ["logprobs"] if self.has_logprobs else []
        if type(self.model).with_structured_output is not BaseChatModel.with_structured_output or self.supports_tools:
            methods.append("structured")
        return [*methods, "parse"]

    _CONFIG = {"tags": [LABEL_TAG, NOSTREAM], "run_name": "score_labels"}

    def _by_logprobs(self, messages: list[Message], labels: list[str]) -> dict[str, float]:
        try:
            reply = self.model.invoke(messages, self._CONFIG, logprobs=True, top_logprobs=20,
                                      **token_limit(self.model, 1))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that refuses logprobs: the next method
            raise _Unsupported(f"logprobs refused: {type(exc).__name__}: {exc}"[:200]) from None
        top = _top_from_metadata(reply)
        if not top:
            raise _Unsupported("the model returned no logprobs")
        return label_probs_from_top(top, labels)

    def _by_structured(self, messages: list[Message], labels: list[str]) -> dict[str, float]:
        schema = {"title": "route", "description": "The label that fits the request.", "type": "object",
                  "properties": {"label": {"type": "string", "enum": labels}}, "required": ["label"]}
        try:
            reply = self.model.with_structured_output(schema).invoke(messages, self._CONFIG)
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - unsupported or unparseable: the next method
            raise _Unsupported(f"structured output failed: {type(exc).__name__}: {exc}"[:200]) from None
        label = reply.get("label") if isinstance(reply, dict) else getattr(reply, "label", None)
        if label not in labels:
            raise _Unsupported(f"the structured reply named {label!r}, not one of {', '.join(labels)}")
        return {x: 1.0 if x == label else 0.0 for x in labels}

    def _by_parse(self, messages: list[Message], labels: list[str]) -> dict[str, float]:
        reply = self.model.invoke(messages, self._CONFIG, **token_limit(self.model, 4))
        text = reply.text
        word = (text.strip().split() or [""])[0].strip(".,:;!\"'`*").lower()
        if word not in labels:
            raise ToolError(f"the model replied {text[:40]!r}, not one of {', '.join(labels)}")
        return {x: 1.0 if x == word else 0.0 for x in labels}

    def choose_tool(self, messages: Sequence[Message], tools: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        """The one tool the model calls for ``messages`` among ``tools`` (``bind_tools``, a call
        required): ``(name, args)``. Raises ToolError when the model cannot call tools or called none."""
        return choose_tool(self.model, messages, tools, self.name, self._tool_choices)


def choose_tool(model: BaseChatModel, messages: Sequence[Message], tools: Sequence[Any], name: str,
                choices: list[str]) -> tuple[str, dict[str, Any]]:
    """See :meth:`LangChainLLM.choose_tool`. ``choices``: the ``tool_choice`` values still to try,
    best first ("any": a call is required; "auto": for servers that refuse a required call, such
    as llama-cpp-python's function-calling format); one the model refuses is dropped from it."""
    while True:
        choice = choices[0]
        try:
            bound = model.bind_tools(list(tools), tool_choice=choice)
        except NotImplementedError:
            raise ToolError(f"{name} does not support tool calling (bind_tools)") from None
        try:
            reply = bound.invoke(list(messages), {"tags": ["askdraw:route_tools", NOSTREAM],
                                                  "run_name": "route_tool_call"})
            break
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused tool_choice: the next one, else the error
            if len(choices) == 1 or unreachable(exc):
                raise
            choices.pop(0)
    calls = getattr(reply, "tool_calls", None) or []
    if not calls:
        bad = getattr(reply, "invalid_tool_calls", None) or []
        why = f"an invalid tool call ({bad[0].get('error') or bad[0].get('args')})" if bad else \
            f"no tool call ({reply.text[:60]!r})"
        raise ToolError(f"the model made {why}"[:300])
    call = calls[0]
    args = call.get("args") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            args = {}
    return str(call.get("name")), dict(args) if isinstance(args, dict) else {}


def unreachable(exc: BaseException) -> bool:
    """The model's server cannot be used at all (askdraw's endpoint after its retries, or an
    OpenAI-client model that cannot connect, timed out or was refused the key): asking again, or
    another way, would not help."""
    from tools.endpoint import EndpointUnavailable

    return isinstance(exc, EndpointUnavailable) or type(exc).__name__ in ("APIConnectionError", "APITimeoutError",
                                                                          "AuthenticationError")


def can_call_tools(model: BaseChatModel) -> bool:
    """Does the model's class implement ``bind_tools`` (BaseChatModel's own raises)?"""
    return type(model).bind_tools is not BaseChatModel.bind_tools


def as_llm(llm: Any) -> Any:
    """What the agent uses as its LLM: askdraw's own chat models as they are, any other LangChain
    ``BaseChatModel`` wrapped in :class:`LangChainLLM`, and anything else that already offers
    ``chat``/``score_labels`` (:class:`tools.base.ChatModel`) unchanged."""
    if isinstance(llm, AskdrawChatModel) or not isinstance(llm, BaseChatModel):
        return llm
    return LangChainLLM(llm)
