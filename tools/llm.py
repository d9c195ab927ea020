"""Local LLM over transformers: chat generation (optionally streamed) and label scoring.

The starter model is SmolLM2-135M-Instruct, converted once from its GGUF file
(:mod:`tools.gguf_convert`). Any transformers causal-LM hub id or local folder works too.
:class:`EndpointLLM` (:mod:`tools.llm_endpoint`) offers the same interface over HTTP.

Structured decisions never hope that free text parses: :meth:`LocalLLM.score_labels` scores each
allowed label as a continuation of the prompt and returns a probability per label.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tools.base import Message
from tools.common import Cancelled, ToolError, current_cancel_event, load_once, quiet_transformers
from tools.gguf_convert import STARTER_LLM, resolve_model
from tools.llm_endpoint import EndpointLLM

__all__ = ["STARTER_LLM", "EndpointLLM", "LocalLLM", "resolve_model"]


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
        self.load_seconds: float | None = None

    @property
    def name(self) -> str:
        if self.model_spec == STARTER_LLM:
            return "SmolLM2-135M-Instruct (starter)"
        return self.model_spec

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @load_once
    def load(self) -> None:
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

    def chat(self, messages: Sequence[Message], *, max_new_tokens: int | None = None,
             on_token: Callable[[str], None] | None = None, prefix: str = "",
             stop: Callable[[str], bool] | None = None) -> str:
        """Greedy generation of the assistant's reply. ``on_token`` receives text pieces as they
        are produced. ``prefix`` is text the reply is forced to start with (not returned).
        ``stop(reply_so_far)`` ends generation early when it returns True (for callers that
        only use the reply's start, e.g. its first sentence)."""
        self.load()
        import torch
        from transformers import StoppingCriteriaList

        with self._lock:  # one generation at a time per model: torch on 2 cores gains nothing from more
            inputs = self._encode(messages, prefix)
            start = inputs["input_ids"].shape[1]
            cancel = current_cancel_event()
            abort = threading.Event()  # set when on_token raises (e.g. the turn was cancelled)
            cache = self._prefix(messages, inputs["input_ids"])
            kwargs = dict(
                **inputs,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=self._tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_stop_when(self._tokenizer, start, stop, cancel, abort)]),
            )
            if cache is not None:
                kwargs["past_key_values"] = cache
            failed = True
            try:
                if on_token is None:
                    with torch.inference_mode():
                        out = self._model.generate(**kwargs)
                else:
                    reply = self._stream(kwargs, on_token, abort)
                failed = False
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                if on_token is None:
                    reply = self._tokenizer.decode(out[0, start:], skip_special_tokens=True).strip()
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


def _stop_when(tokenizer: Any, start: int, stop: Callable[[str], bool] | None, cancel: threading.Event | None,
               abort: threading.Event) -> Any:
    """A stopping criterion: end generation once ``abort`` or ``cancel`` is set, or ``stop`` says so
    of the reply so far (the tokens after ``start``)."""
    import torch
    from transformers import StoppingCriteria

    class StopWhen(StoppingCriteria):
        def __call__(self, input_ids, scores, **_):
            done = abort.is_set() or (cancel is not None and cancel.is_set())
            if not done and stop is not None:
                done = bool(stop(tokenizer.decode(input_ids[0, start:], skip_special_tokens=True)))
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool)

    return StopWhen()
