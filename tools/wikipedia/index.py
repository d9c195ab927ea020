"""The on-disk index of an offline corpus: passages (JSONL + offsets, read through mmap), a BM25
index (``bm25s``) and a cache of passage vectors, in one folder per corpus file and settings."""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tools.common import ToolError, staged_dir
from tools.text import TextTokenizer
from tools.wikipedia.corpora import Record
from tools.wikipedia.passages import MAX_PASSAGE_WORDS, MIN_PASSAGE_WORDS, split_passages, wikipedia_url

log = logging.getLogger(__name__)

# Bump when passage splitting, text extraction or tokenisation change (3: passages cut at pysbd
# sentence ends, as slices of the paragraph; words.json).
INDEX_VERSION = 3


def fingerprint(path: Path, tokenizer: TextTokenizer) -> str:
    """The index folder name of a corpus file: its name and a digest of its identity and settings."""
    st = path.stat()
    key = "|".join(map(str, (path.resolve(), st.st_size, st.st_mtime_ns, INDEX_VERSION,
                              MAX_PASSAGE_WORDS, MIN_PASSAGE_WORDS, tokenizer.signature)))
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40]
    return f"{stem}-{digest}"


class PassageStore:
    """passages.jsonl + offsets.npy, read lazily through mmap."""

    def __init__(self, folder: Path) -> None:
        self.offsets = np.load(folder / "offsets.npy")
        self._fh = (folder / "passages.jsonl").open("rb")
        size = os.fstat(self._fh.fileno()).st_size
        self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> dict[str, Any]:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return json.loads(self._mm[start:end])


class VectorCache:
    """Passage vectors of one embedder for one index: a float16 .npy memmap plus a 'have' mask,
    kept on disk so later runs don't re-embed (falls back to memory when the folder is read-only)."""

    def __init__(self, folder: Path, n: int, dim: int, embedder_name: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_name)[-60:]
        tag = hashlib.sha1(embedder_name.encode()).hexdigest()[:8]
        base = folder / "vectors" / f"{slug}-{tag}-{dim}"
        self.lock = threading.Lock()
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
            vec_path, have_path = base.with_suffix(".vec.npy"), base.with_suffix(".have.npy")
            if not (vec_path.exists() and have_path.exists()):
                self._create(vec_path, (n, dim), np.float16)
                self._create(have_path, (n,), np.uint8)
            self.vectors = np.load(vec_path, mmap_mode="r+")
            self.have = np.load(have_path, mmap_mode="r+")
            if self.vectors.shape != (n, dim) or self.have.shape != (n,):
                raise ValueError("shape mismatch")
        except (OSError, ValueError) as exc:
            log.debug("passage vector cache in memory only (%s)", exc)
            self.vectors = np.zeros((n, dim), dtype=np.float16)
            self.have = np.zeros(n, dtype=np.uint8)

    @staticmethod
    def _create(path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        arr.flush()
        del arr
        os.replace(tmp, path)


WORDS_FILE = "words.json"  # the corpus's index words before stemming, each with its index term


def _write_passages(folder: Path, records: Iterable[Record], tokenizer: TextTokenizer) -> tuple[int, list[list[str]]]:
    """Write passages.jsonl, offsets.npy and words.json (every index word of the corpus with its
    stem, for matching misspelt query words); returns (documents read, index terms of each passage)."""
    offsets = [0]
    corpus_tokens: list[list[str]] = []
    surface: set[str] = set()
    n_docs = 0
    seen: set[bytes] = set()  # exact duplicate passages (mirrored pages) are kept once
    with (folder / "passages.jsonl").open("wb") as out:
        for title, text, url, extra in records:
            n_docs += 1
            url = url or wikipedia_url(title)
            for part in split_passages(text):
                digest = hashlib.sha1(f"{title}\n{part}".encode()).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                line = json.dumps({"title": title, "url": url, "text": part},
                                  ensure_ascii=False).encode("utf-8") + b"\n"
                out.write(line)
                offsets.append(offsets[-1] + len(line))
                words = tokenizer.words(f"{title}\n{extra}\n{part}")
                surface.update(words)
                corpus_tokens.append(tokenizer.stem_words(words))
    np.save(folder / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    ordered = sorted(surface)
    (folder / WORDS_FILE).write_text(json.dumps(dict(zip(ordered, tokenizer.stem_words(ordered))),
                                                ensure_ascii=False), encoding="utf-8")
    return n_docs, corpus_tokens


def build_index(folder: Path, records: Iterable[Record], tokenizer: TextTokenizer, *, corpus: Path,
                kind: str) -> None:
    """Build the index of ``records`` (read from ``corpus``) in a temporary folder, then move it
    to ``folder`` (atomically; a concurrent builder's finished index is kept)."""
    import bm25s

    t0 = time.perf_counter()
    # Published atomically; a finished index another process built meanwhile is kept.
    with staged_dir(folder, keep=lambda done: (done / "meta.json").is_file()) as tmp:
        n_docs, corpus_tokens = _write_passages(tmp, records, tokenizer)
        if not corpus_tokens:
            raise ToolError(f"Wikipedia corpus {corpus} contains no passages")
        retriever = bm25s.BM25()
        retriever.index(corpus_tokens, show_progress=False)
        retriever.save(str(tmp / "bm25"), show_progress=False)
        meta = {"version": INDEX_VERSION, "corpus": str(corpus.resolve()), "kind": kind,
                "documents": n_docs, "passages": len(corpus_tokens),
                "tokenizer": tokenizer.signature, "build_seconds": round(time.perf_counter() - t0, 2)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info("built Wikipedia index %s (%d passages) in %.1fs", folder, len(corpus_tokens), meta["build_seconds"])


def read_words(folder: Path) -> dict[str, str] | None:
    """words.json of an index folder (index word -> index term); None when missing or damaged."""
    try:
        words = json.loads((folder / WORDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return words if isinstance(words, dict) else None


def open_index(folder: Path) -> tuple[Any, PassageStore]:
    """(BM25 retriever, passage store) of a built index folder."""
    import bm25s

    retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
    return retriever, PassageStore(folder)
