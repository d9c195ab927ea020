"""A GGUF chat model run in-process on llama.cpp (the ``llama-cpp-python`` binding), as a LangChain
``BaseChatModel`` with the same calls as :class:`tools.llm.LocalLLM`.

llama.cpp reads the quantised weights as they are (a Q4 file is about a quarter of the bytes of
fp32 weights per token), so on a laptop CPU it makes tokens several times faster than transformers,
and it loads a GGUF file in well under a second where transformers de-quantises it for ~20 s.

Everything the transformers path does is here, on llama.cpp's own pieces:

- the chat template is the GGUF's own (``tokenizer.chat_template``), rendered like transformers does;
- greedy decoding, one token per step in the caller's thread, with the same repetition penalty
  (1.1 over the prompt and the reply), streamed piece by piece; early stops, LangChain ``stop``
  sequences, forced reply starts and cancellation work the same;
- the KV prefix cache: llama.cpp keeps the last prompt's KV cache, and the longest common prefix
  with the next prompt is reused; the fixed part of each prompt (the system prompt and examples:
  everything before the last message) is also saved once as a sequence state and restored when a
  different prompt came in between;
- label scores from the logits (``invoke(messages, labels=[...])``), normalised over the labels.
"""

from __future__ import annotations

import array
import atexit
import ctypes
import hashlib
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr

from tools.base import Message
from tools.chat import LocalChatModel
from tools.common import Cancelled, ToolError, cache_dir, current_cancel_event, load_once
from tools.gguf_convert import STARTER_LLM, display_name, gguf_path

#: transformers' ``repetition_penalty`` that :class:`tools.llm.LocalLLM` decodes with.
REPETITION_PENALTY = 1.1
#: Distinct fixed prompt parts kept as saved states (route, follow-up, image prompt, answer,
#: grounded answer, and one spare), as the transformers path keeps KV caches.
PREFIX_STATES = 6
#: Saved prompt states kept on disk per model (a few MB each for the starter).
STATE_FILES = 16
_STATE_MAGIC = b"askdraw-llama-state-1\n"


def default_threads() -> tuple[int, int]:
    """llama.cpp threads when none are set: every core this process may use, and the number it
    falls back to (half, at least one) when the CPU turns out to be busy. ggml's threads
    busy-wait for each other at every operation of a forward pass, so threads that outnumber the
    cores free for them are very slow: on this 2-core machine, with other work running (load ~8),
    a 64-token reply took 7 s on 1 thread, 6-27 s with 2 prompt threads, and three of them did not
    end within 2 minutes on 2 threads for both. On a quiet machine 2 threads decode at
    97 tokens/s and 1 thread at 53 (bench/bench_engine.py --threads N). So decoding starts on all
    cores and drops to the fallback when tokens come much slower than this model's usual pace."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores), max(1, cores // 2)


_LOADED: list[weakref.ref] = []  # (pydantic models are not hashable: no WeakSet)


@atexit.register
def _close_all() -> None:
    """Free every loaded model before the interpreter tears its modules down (llama-cpp-python's
    own finaliser then runs with half its module gone and prints a TypeError at exit)."""
    for ref in list(_LOADED):
        model = ref()
        if model is None:
            continue
        try:
            model.close()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass


class _NoRedirect:
    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> _NoRedirect:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _keep_stdout_stderr() -> None:
    """Stop llama-cpp-python from pointing the process's stdout and stderr (file descriptors 1
    and 2) at /dev/null while it loads a model with ``verbose=False``: that swallows whatever
    every other thread prints meanwhile (the chat loads its models in the background while its
    prompt and command replies are printed, and they were lost). llama.cpp's own log lines still
    go through the binding's log callback, which with ``verbose=False`` prints errors only."""
    import llama_cpp._internals
    import llama_cpp.llama

    llama_cpp.llama.suppress_stdout_stderr = _NoRedirect
    llama_cpp._internals.suppress_stdout_stderr = _NoRedirect


def binding_problem() -> str | None:
    """Why llama.cpp cannot run here (None when the binding imports)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return (f"the llama.cpp binding is not installed ({exc.msg}): `make llama` compiles and installs "
                "llama-cpp-python once per machine")
    except OSError as exc:  # the shared library fails to load (e.g. a CPU without the wheel's instructions)
        return f"the llama.cpp binding does not load here: {exc}"
    return None


def gpu_layers(device_spec: str) -> tuple[int, str, str]:
    """(layers to offload, device, note) for the device setting: every layer to the GPU when one
    is wanted (``auto`` or a GPU name) and this llama.cpp build can offload; the CPU otherwise, with
    a note where a GPU was asked for by name. Needs no torch."""
    from llama_cpp import llama_supports_gpu_offload

    if device_spec == "cpu":
        return 0, "cpu", ""
    if llama_supports_gpu_offload():
        return -1, "gpu", ""
    note = ("" if device_spec == "auto" else
            f"--device {device_spec}: this llama.cpp build has no GPU offload (`make llama` builds the CPU one; "
            "rebuild llama-cpp-python with CMAKE_ARGS=-DGGML_CUDA=on for CUDA)")
    return 0, "cpu", note


class LlamaCppLLM(LocalChatModel):
    """A GGUF chat model on llama.cpp, loaded once and reused (see the module docstring)."""

    model_spec: str = STARTER_LLM
    max_new_tokens: int = 160
    prefix_cache: bool = True
    n_ctx: int = 4096
    n_threads: int | None = None
    runtime: str = "llama.cpp"
    state_cache: Path | None = None  # where prompt states are kept between processes (None: the cache folder)
    threads: int = 0  # the threads llama.cpp decodes with (known once loaded)
    threads_note: str = ""  # why fewer threads than at the start, if so
    chat_template: str = ""  # which chat template the prompts use (known once loaded)
    device_spec: str = "auto"  # the device setting (tools/device.py)
    device: str = ""  # "gpu" (every layer offloaded) or "cpu", once loaded
    device_note: str = ""  # why the CPU where a GPU was asked for

    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _llm: Any = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)
    _formatters: tuple[Any, Any] | None = PrivateAttr(default=None)
    _states: dict = PrivateAttr(default_factory=dict)
    _eog: Callable[[int], bool] | None = PrivateAttr(default=None)
    _n_vocab: int = PrivateAttr(default=0)
    _bos: int | None = PrivateAttr(default=None)
    _state_folder: Path | None = PrivateAttr(default=None)
    _fallback_threads: int = PrivateAttr(default=1)
    _best_token_s: float = PrivateAttr(default=float("inf"))
    _slow_tokens: int = PrivateAttr(default=0)

    def __init__(self, model: str | Path = STARTER_LLM, *, max_new_tokens: int = 160, prefix_cache: bool = True,
                 n_ctx: int = 4096, n_threads: int | None = None, **kwargs: Any) -> None:
        """``model``: a starter (``starter:smollm2-135m``, ``starter:gemma3-270m``) or a ``.gguf`` path."""
        spec = str(model)
        super().__init__(model_spec=spec, max_new_tokens=max_new_tokens, prefix_cache=prefix_cache, n_ctx=n_ctx,
                         n_threads=n_threads, name=kwargs.pop("name", f"{display_name(spec)} on llama.cpp"), **kwargs)

    @property
    def model_path(self) -> Path:
        """The GGUF file (a chunked starter is assembled on first use)."""
        if self._path is None:
            self._path = gguf_path(self.model_spec)
        return self._path

    @property
    def _llm_type(self) -> str:
        return "askdraw-llama.cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_spec, "max_new_tokens": self.max_new_tokens, "greedy": True}

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @load_once
    def load(self) -> None:
        problem = binding_problem()
        if problem:
            raise ToolError(f"cannot run {self.model_spec} on llama.cpp: {problem}")
        path = self.model_path
        from llama_cpp import Llama, llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        _keep_stdout_stderr()

        if self.n_threads:
            threads = fallback = self.n_threads  # set by the user: kept as it is
        else:
            threads, fallback = default_threads()
        self.threads, self._fallback_threads = threads, fallback
        layers, self.device, self.device_note = gpu_layers(self.device_spec)
        try:
            llm = Llama(str(path), n_ctx=self.n_ctx, n_threads=threads, n_threads_batch=threads,
                        n_batch=512, logits_all=False, verbose=False, n_gpu_layers=layers)
        except (ValueError, RuntimeError) as exc:
            raise ToolError(f"llama.cpp could not load {path}: {exc}") from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            bos = _token_text(llm, llm.token_bos())
            eos = _token_text(llm, llm.token_eos())
            self._formatters = (Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=True),
                                Jinja2ChatFormatter(template, eos, bos, add_generation_prompt=False))
            self.chat_template = "the GGUF's tokenizer.chat_template"
        else:  # a base model's GGUF often has none: llama.cpp's built-in template of its family
            builtin = _builtin_template(llm.metadata.get("general.architecture", ""))
            if builtin is None:
                raise ToolError(f"{path.name} has no chat template (tokenizer.chat_template) in its metadata, and "
                                f"llama.cpp has no built-in one for its architecture "
                                f"'{llm.metadata.get('general.architecture', '?')}'")
            self._formatters = (_BuiltinTemplate(builtin, True), _BuiltinTemplate(builtin, False))
            self.chat_template = f"llama.cpp's built-in '{builtin}' template (the GGUF has none)"
        vocab = llm._model.vocab
        # A model that wants a BOS gets one where the template does not write it (llama.cpp's
        # built-in templates never do; a GGUF's own template writes {{ bos_token }} itself).
        wants_bos = str(llm.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
        self._bos = llm.token_bos() if wants_bos and llm.token_bos() >= 0 else None
        self._eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._n_vocab = llm.n_vocab()
        if self.prefix_cache:
            import llama_cpp as binding

            stat = path.stat()
            identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{binding.__version__}|{self.n_ctx}"
            folder = self.state_cache or cache_dir() / "llama-states"
            self._state_folder = folder / hashlib.sha1(identity.encode()).hexdigest()[:16]
        self._llm = llm
        _LOADED.append(weakref.ref(self))

    def reset(self) -> None:
        """Forget the KV cache and the saved prompt states (the next call starts from nothing)."""
        with self._lock:
            if self._llm is not None:
                self._llm.n_tokens = 0
            self._states = {}

    def close(self) -> None:
        """Free the model and its context now (also done when the object is collected)."""
        with self._lock:
            if self._llm is not None:
                self._llm.close()
            self._llm, self._states = None, {}

    # -- prompting -------------------------------------------------------------------------
    def _render(self, messages: Sequence[Message], generation: bool = True) -> str:
        formatter = self._formatters[0 if generation else 1]
        try:
            return formatter(messages=list(messages)).prompt
        except Exception as exc:  # jinja2's TemplateError, or the template's own raise_exception
            raise ToolError(f"{self.model_path.name}'s chat template rejected the messages: {exc}") from exc

    def _tokens(self, text: str) -> list[int]:
        # As transformers' apply_chat_template + tokenize(add_special_tokens=False): the template
        # writes the special tokens (a BOS where the model wants one) and they are read as such.
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._bos is not None and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return tokens

    def _prompt(self, messages: Sequence[Message], prefix: str) -> tuple[list[int], list[int] | None]:
        """The prompt's tokens, and the tokens of its fixed part (everything before the last
        message) when that is a reusable prefix of them."""
        tokens = self._tokens(self._render(messages) + prefix)
        if len(tokens) >= self.n_ctx:
            raise ToolError(f"the prompt is {len(tokens)} tokens, more than the context of {self.n_ctx} "
                            f"({self.model_path.name})")
        head = None
        if self.prefix_cache and len(messages) >= 2:
            key = self._tokens(self._render(messages[:-1], generation=False))
            if 16 <= len(key) < len(tokens) and tokens[: len(key)] == key:
                head = key
        return tokens, head

    # -- the KV cache ----------------------------------------------------------------------
    def _evaluated(self) -> list[int]:
        llm = self._llm
        return llm.input_ids[: llm.n_tokens].tolist()

    def _feed(self, tokens: list[int], head: list[int] | None) -> None:
        """Bring the KV cache to ``tokens`` minus its last token (which the caller evaluates, for
        its logits), reusing what is there: the longest common prefix with what was evaluated
        last, else the saved state of the fixed part ``head`` (in memory, else on disk)."""
        llm = self._llm
        done = _common(self._evaluated(), tokens)
        if head is not None and done < len(head):
            key = tuple(head)
            state = self._states.pop(key, None)
            if state is None:
                state = self._read_state(head)
            if state is not None and not self._restore(head, state):
                state = None  # (unusable: evaluated again below, and the file rewritten)
            if state is None:
                llm.n_tokens = min(done, len(head))
                llm.eval(head[llm.n_tokens:])
                state = self._save()
                self._write_state(head, state)
            self._states[key] = state  # most recently used last
            while len(self._states) > PREFIX_STATES:
                self._states.pop(next(iter(self._states)))
            done = len(head)
        llm.n_tokens = min(done, len(tokens) - 1)
        if llm.n_tokens < len(tokens) - 1:
            llm.eval(tokens[llm.n_tokens:-1])

    # -- saved prompt states on disk ---------------------------------------------------------
    def _state_file(self, head: list[int]) -> Path | None:
        if self._state_folder is None:
            return None
        digest = hashlib.sha1(array.array("i", head).tobytes()).hexdigest()[:24]
        return self._state_folder / f"{digest}.state"

    def _read_state(self, head: list[int]) -> bytes | None:
        """A fixed prompt part's state saved by an earlier process (llama.cpp evaluates a prompt
        at about the speed it generates on this CPU, so the route prompt's 340 tokens take seconds:
        a process starts faster by reading them). The file holds the tokens it was made from,
        checked here; a file that does not match or cannot be read is ignored."""
        path = self._state_file(head)
        try:
            data = path.read_bytes() if path is not None else None
        except OSError:
            return None
        if not data or not data.startswith(_STATE_MAGIC):
            return None
        count = int.from_bytes(data[len(_STATE_MAGIC):len(_STATE_MAGIC) + 4], "little")
        start = len(_STATE_MAGIC) + 4
        if count != len(head) or len(data) <= start + 4 * count:
            return None
        tokens = array.array("i")
        tokens.frombytes(data[start:start + 4 * count])
        if tokens.tolist() != head:
            return None
        return data[start + 4 * count:]

    def _write_state(self, head: list[int], state: bytes) -> None:
        path = self._state_file(head)
        if path is None:
            return
        from tools.common import atomic_write

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, _STATE_MAGIC + len(head).to_bytes(4, "little") + array.array("i", head).tobytes()
                         + state)
            kept = sorted(path.parent.glob("*.state"), key=lambda f: f.stat().st_mtime, reverse=True)
            for old in kept[STATE_FILES:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # a cache: a full or read-only disk only costs the next process the evaluation

    def _save(self) -> bytes:
        from llama_cpp import llama_cpp

        ctx = self._llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)
        return ctypes.string_at(buf, written)  # (bytes(buf[:n]) builds a list of ints first: 10x slower)

    def _restore(self, head: list[int], state: bytes) -> bool:
        """Put a saved state of ``head`` in the KV cache; False when llama.cpp refuses it."""
        from llama_cpp import llama_cpp

        llm = self._llm
        llm._ctx.kv_cache_seq_rm(0, 0, -1)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not state or llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(state), 0) == 0:
            llm._ctx.kv_cache_seq_rm(0, 0, -1)
            llm.n_tokens = 0
            return False
        llm.input_ids[: len(head)] = head
        llm.n_tokens = len(head)
        return True

    def _pace(self, seconds: float) -> None:
        """Watch how long one token takes. Eight tokens in a row at more than 4x this model's best
        time mean the cores are busy with other work, where llama.cpp's waiting threads make it
        several times slower than fewer threads would: drop to the fallback thread count."""
        self._best_token_s = min(self._best_token_s, seconds)
        if self.threads <= self._fallback_threads or seconds <= 4 * self._best_token_s:
            self._slow_tokens = 0
            return
        self._slow_tokens += 1
        if self._slow_tokens >= 8:
            before, self.threads = self.threads, self._fallback_threads
            self._llm._ctx.set_n_threads(self.threads, self.threads)
            self._llm.n_threads = self._llm.n_threads_batch = self.threads
            self._slow_tokens = 0
            self.threads_note = (f"llama.cpp went from {before} to {self.threads} threads: tokens took more than 4x "
                                 f"their usual {self._best_token_s * 1000:.0f} ms (other work on the CPU)")

    def _logits(self, token: int) -> Any:
        """Evaluate ``token`` after what is in the cache; the next token's logits (a fresh array)."""
        import numpy as np

        llm = self._llm
        llm.eval([token])
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(self._n_vocab,)).copy()

    # -- generation ------------------------------------------------------------------------
    def _pieces(self, messages: Sequence[Message], max_new_tokens: int | None, prefix: str,
                stop: Callable[[str], bool] | None) -> Iterator[str]:
        """Greedy decoding with transformers' repetition penalty, one token per step, yielding
        each piece of text once it is whole UTF-8 (see :meth:`tools.llm.LocalLLM._pieces`)."""
        self.load()
        import numpy as np

        limit = max_new_tokens or self.max_new_tokens
        with self._lock:
            tokens, head = self._prompt(messages, prefix)
            cancel = current_cancel_event()
            seen = np.zeros(self._n_vocab, dtype=bool)
            seen[np.asarray(tokens, dtype=np.int64)] = True
            llm = self._llm
            new: list[int] = []
            pending = b""
            text = ""
            try:
                self._feed(tokens, head)
                token = tokens[-1]
                for _ in range(limit):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("cancelled")
                    if llm.n_tokens + 1 >= self.n_ctx:
                        break  # the context is full: the reply ends here
                    started = time.perf_counter()
                    logits = self._logits(token)
                    self._pace(time.perf_counter() - started)
                    picked = logits[seen]
                    logits[seen] = np.where(picked < 0, picked * REPETITION_PENALTY, picked / REPETITION_PENALTY)
                    token = int(logits.argmax())
                    if self._eog(token):
                        break
                    new.append(token)
                    seen[token] = True
                    pending += llm.detokenize([token], special=False)
                    piece = _whole_utf8(pending)
                    if piece is None:
                        continue
                    pending = b""
                    if piece:
                        text += piece
                        yield piece
                    if stop is not None and stop(text):
                        break
                if pending:
                    yield pending.decode("utf-8", errors="replace")
            except BaseException:
                llm.n_tokens = 0  # a failed or interrupted call leaves nothing to reuse
                raise
            # (The last sampled token was never evaluated: the cache holds the prompt and the reply
            # before it, which the next call's longest-common-prefix reuse sees.)

    def _score(self, messages: Sequence[Message], labels: Sequence[str], *, prefix: str = "") -> dict[str, float]:
        """Probability of each label as the reply (after ``prefix``), normalised over the labels:
        the total log-probability of each label's tokens, from the logits."""
        self.load()
        with self._lock:
            tokens, head = self._prompt(messages, prefix)
            label_ids = [self._llm.tokenize(label.encode("utf-8"), add_bos=False, special=False) for label in labels]
            if any(not ids for ids in label_ids):
                raise ToolError("an empty label cannot be scored")
            llm = self._llm
            try:
                self._feed(tokens, head)
                first = _log_softmax(self._logits(tokens[-1]))
                totals = []
                for ids in label_ids:
                    total = float(first[ids[0]])
                    llm.n_tokens = len(tokens)
                    for previous, token in zip(ids, ids[1:]):
                        total += float(_log_softmax(self._logits(previous))[token])
                    totals.append(total)
                llm.n_tokens = len(tokens)
            except BaseException:
                llm.n_tokens = 0
                raise
            top = max(totals)
            exps = [math.exp(t - top) for t in totals]
            norm = sum(exps)
            return {label: e / norm for label, e in zip(labels, exps)}


def _builtin_template(architecture: str) -> str | None:
    """llama.cpp's built-in chat template for a model family (``gemma3`` -> ``gemma``), if any."""
    from llama_cpp import llama_cpp

    names = (ctypes.c_char_p * 128)()
    count = llama_cpp.llama_chat_builtin_templates(names, 128)
    known = {names[i].decode() for i in range(min(count, 128))}
    family = architecture.rstrip("0123456789.")
    return next((name for name in (architecture, family) if name and name in known), None)


class _BuiltinTemplate:
    """A llama.cpp built-in chat template, called like ``Jinja2ChatFormatter`` (``.prompt``)."""

    def __init__(self, name: str, add_generation_prompt: bool) -> None:
        self.name, self.add_generation_prompt = name, add_generation_prompt

    def __call__(self, *, messages: list[Message]) -> Any:
        from types import SimpleNamespace

        from llama_cpp import llama_cpp

        encoded = [(m["role"].encode(), m["content"].encode()) for m in messages]
        chat = (llama_cpp.llama_chat_message * len(encoded))(*[llama_cpp.llama_chat_message(r, c) for r, c in encoded])
        size = 2 * sum(len(r) + len(c) for r, c in encoded) + 256
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_chat_apply_template(self.name.encode(), chat, len(encoded), self.add_generation_prompt,
                                                    buf, size)
            if n < 0:
                raise ValueError(f"llama.cpp's '{self.name}' template failed ({n})")
            if n <= size:
                return SimpleNamespace(prompt=buf.raw[:n].decode("utf-8"))
            size = n + 1
        raise ValueError(f"llama.cpp's '{self.name}' template output did not fit")


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _log_softmax(logits: Any) -> Any:
    import numpy as np

    logits = logits.astype(np.float64)
    top = logits.max()
    return logits - top - np.log(np.exp(logits - top).sum())


def _whole_utf8(data: bytes) -> str | None:
    """``data`` decoded, or None while it ends inside a multi-byte character (a token can be half
    of one: the next token completes it)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return None
        return data.decode("utf-8", errors="replace")


def _token_text(llm: Any, token: int) -> str:
    if token is None or token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


__all__ = ["LlamaCppLLM", "binding_problem", "default_threads"]
