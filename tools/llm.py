"""Local LLM over transformers, as a LangChain ``BaseChatModel``: chat generation (streamed) and
label scoring.

The starter model is SmolLM2-135M-Instruct, a GGUF file. :func:`local_llm` runs a GGUF model on
llama.cpp (:class:`tools.llm_llamacpp.LlamaCppLLM`) when the binding is installed, and otherwise
here, converted once to a transformers folder (:mod:`tools.gguf_convert`). Any transformers
causal-LM hub id or local folder runs here. :class:`EndpointLLM` (:mod:`tools.llm_endpoint`) is the
same over HTTP, and :class:`LangChainLLM` (:mod:`tools.chat`) puts any other LangChain chat model in
its place.

Structured decisions never hope that free text parses: :meth:`LocalLLM.score_labels` (or
``invoke(messages, labels=[...])``) scores each allowed label as a continuation of the prompt and
returns a probability per label.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from tools.base import Message
from tools.chat import AskdrawChatModel, LangChainLLM, LocalChatModel
from tools.common import Cancelled, ToolError, current_cancel_event, load_once, quiet_transformers
from tools.gguf_convert import STARTER_LLM, display_name, is_gguf, resolve_model
from tools.llm_endpoint import EndpointLLM

__all__ = ["RUNTIMES", "STARTER_LLM", "EndpointLLM", "LangChainLLM", "LocalLLM", "local_llm", "resolve_model"]

#: Where a local LLM runs: ``auto`` is llama.cpp for a GGUF model when the binding is installed,
#: transformers otherwise.
RUNTIMES = ("auto", "llama.cpp", "transformers")


def local_llm(spec: str = STARTER_LLM, *, runtime: str = "auto", max_new_tokens: int = 160,
              threads: int | None = None, device: str = "auto", dtype: str = "auto") -> AskdrawChatModel:
    """The local chat model for an LLM setting, on the runtime that fits it (see :data:`RUNTIMES`).
    The model's ``runtime_note`` says why it runs where it does (for the ``models:`` line and traces)."""
    from tools.llm_llamacpp import LlamaCppLLM, binding_problem

    if runtime not in RUNTIMES:
        raise ToolError(f"unknown LLM runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
    gguf = is_gguf(spec)
    if runtime == "llama.cpp" and not gguf:
        raise ToolError(f"llama.cpp runs GGUF files; '{spec}' is a transformers model (use --llm-runtime transformers "
                        "or a .gguf file)")
    problem = binding_problem() if gguf and runtime != "transformers" else None
    if runtime == "llama.cpp" and problem:
        raise ToolError(f"--llm-runtime llama.cpp: {problem}")
    if gguf and runtime != "transformers" and not problem:
        return LlamaCppLLM(spec, max_new_tokens=max_new_tokens, n_threads=threads, device_spec=device)
    model = LocalLLM(spec, max_new_tokens=max_new_tokens, device_spec=device, dtype_spec=dtype)
    if not gguf:
        pass  # a transformers model: where it belongs
    elif runtime == "transformers":
        model.runtime_note = "GGUF de-quantised for transformers (--llm-runtime transformers)"
    else:
        model.runtime_note = f"GGUF de-quantised for transformers: {problem}"
    return model


class LocalLLM(LocalChatModel):
    """A chat model running locally with transformers, loaded once and reused: a LangChain
    ``BaseChatModel`` (``invoke``, ``stream``, ``bind``, callbacks), greedy, with the fixed part of
    each prompt kept as a KV cache and the call keywords of :data:`tools.chat.NATIVE_KWARGS`."""

    model_spec: str = STARTER_LLM
    max_new_tokens: int = 160
    prefix_cache: bool = True
    weights_cache: Path | None = None
    runtime: str = "transformers"
    device_spec: str = "auto"  # the device setting (tools/device.py)
    dtype_spec: str = "auto"
    device: str = ""  # where the weights are, once loaded ("cpu", "cuda", "cuda:1", "mps")
    dtype: str = ""  # and in which dtype ("float32", "float16", ...)

    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _prefixes: dict = PrivateAttr(default_factory=dict)

    def __init__(self, model: str = STARTER_LLM, *, max_new_tokens: int = 160, cache: Path | None = None,
                 prefix_cache: bool = True, **kwargs: Any) -> None:
        name = f"{display_name(model)} on transformers"
        super().__init__(model_spec=model, max_new_tokens=max_new_tokens, weights_cache=cache,
                         prefix_cache=prefix_cache, name=kwargs.pop("name", name), **kwargs)

    @property
    def _llm_type(self) -> str:
        return "askdraw-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_spec, "max_new_tokens": self.max_new_tokens, "greedy": True}

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @load_once
    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from tools.device import dtype_name, is_out_of_memory, resolve, torch_dtype

        quiet_transformers()
        device = resolve(self.device_spec)
        dtype = torch_dtype(device, self.dtype_spec)
        where = resolve_model(self.model_spec, self.weights_cache)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype).to(device)
        except OSError as exc:
            raise ToolError(
                f"could not load LLM '{self.model_spec}': {str(exc).splitlines()[0]} "
                "(offline: use a local folder, or the default starter model)"
            ) from exc
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise ToolError(f"LLM '{self.model_spec}' does not fit in {device}'s memory as {dtype_name(dtype)}: "
                                "try a smaller model, --dtype float16, or --device cpu") from None
            raise
        self.device, self.dtype = str(model.device), dtype_name(dtype)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model = tokenizer, model

    # -- prompting -------------------------------------------------------------------------
    def _encode(self, messages: Sequence[Message], prefix: str = "") -> Any:
        tok = self._tokenizer
        text = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return tok(text + prefix, return_tensors="pt", add_special_tokens=False).to(self._model.device)

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
                self._model(input_ids=torch.tensor([list(key)], device=self._model.device), past_key_values=cache,
                            use_cache=True)
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

    def _pieces(self, messages: Sequence[Message], max_new_tokens: int | None, prefix: str,
                stop: Callable[[str], bool] | None) -> Iterator[str]:
        """Greedy decoding, one token per step in this thread, yielding each finished piece of
        text as it comes (transformers' TextStreamer decoding). The prompt's fixed part comes from
        the prefix KV cache. It ends at the end-of-turn token, ``max_new_tokens``, when ``stop``
        says so of the reply so far, when the turn is cancelled, or when the consumer stops
        reading (a closed generator). Equal to ``generate(do_sample=False, repetition_penalty=1.1)``
        token for token, without a second thread (a TextIteratorStreamer with generation in a
        second thread was measured ~0.5 s slower per answer on 2 cores)."""
        self.load()
        import torch
        from transformers import DynamicCache, RepetitionPenaltyLogitsProcessor

        tok, model = self._tokenizer, self._model
        limit = max_new_tokens or self.max_new_tokens
        with self._lock:  # one generation at a time per model: torch on 2 cores gains nothing from more
            inputs = self._encode(messages, prefix)
            ids = inputs["input_ids"]
            cancel = current_cancel_event()
            prefix_cache = self._prefix(messages, ids)
            cache = prefix_cache if prefix_cache is not None else DynamicCache(config=model.config)
            penalty = RepetitionPenaltyLogitsProcessor(1.1)
            eos = self._eos_ids()
            pieces: list[str] = []
            streamer = _collector(tok, pieces)
            failed = True
            try:
                sequence, feed, new = ids, ids[:, cache.get_seq_length():], []
                for _ in range(limit):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled")
                    with torch.inference_mode():
                        logits = model(input_ids=feed, past_key_values=cache, use_cache=True).logits[:, -1, :]
                        token = int(penalty(sequence, logits.float()).argmax(-1))
                    if token in eos:
                        break
                    new.append(token)
                    feed = torch.tensor([[token]], device=sequence.device)
                    sequence = torch.cat([sequence, feed], dim=1)
                    streamer.put(torch.tensor([token]))
                    while pieces:
                        yield pieces.pop(0)
                    if stop is not None and stop(tok.decode(new, skip_special_tokens=True)):
                        break
                streamer.end()
                while pieces:
                    yield pieces.pop(0)
                failed = False
            finally:
                self._rewind(prefix_cache, failed)

    def _eos_ids(self) -> set[int]:
        ids = self._model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return ids

    def _score(self, messages: Sequence[Message], labels: Sequence[str], *, prefix: str = "") -> dict[str, float]:
        """Probability of each label as the assistant's reply (after ``prefix``), normalised over
        the labels, from the logits (``invoke(messages, labels=[...])`` or :meth:`score_labels`).
        One forward pass; labels are scored by total log-probability."""
        self.load()
        import torch

        with self._lock:
            tok = self._tokenizer
            prompt_ids = self._encode(messages, prefix)["input_ids"][0].tolist()
            label_ids = [tok(label, add_special_tokens=False)["input_ids"] for label in labels]
            if all(len(ids) == 1 for ids in label_ids):
                # Single-token labels (the usual case): one forward pass over the prompt suffices,
                # and only over what follows the cached system prompt and examples.
                ids = torch.tensor([prompt_ids], device=self._model.device)
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
                input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self._model.device)
                attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self._model.device)
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


def _collector(tokenizer: Any, pieces: list[str]) -> Any:
    """transformers' TextStreamer decoding (whole words, no broken UTF-8), collecting the pieces."""
    from transformers import TextStreamer

    class Collect(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                pieces.append(text)

    return Collect(tokenizer, skip_prompt=False, skip_special_tokens=True)
