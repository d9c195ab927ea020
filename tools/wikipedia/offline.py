"""The offline backend: a local corpus searched with BM25, the shortlist reranked with sentence
embeddings (:mod:`tools.embeddings`), plus a bonus for articles the query names.

A query word whose index term the corpus lacks (a misspelt or misheard name: "chopn",
"regeneraiton") is matched to its nearest corpus words by edit distance (:class:`TermMatcher`),
so BM25 still shortlists the passages that name it; a title within an edit or two of the query's
words still earns the title bonus."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from tools.base import Passage
from tools.common import ToolError, cache_dir
from tools.embeddings import Embedder
from tools.text import TextTokenizer, folded_phrase, get_tokenizer, title_subject
from tools.wikipedia.corpora import iter_records, starter_corpus_path
from tools.wikipedia.index import PassageStore, VectorCache, build_index, fingerprint, open_index, read_words

log = logging.getLogger(__name__)

SHORTLIST = 30
RERANK_WEIGHT = 0.55  # final = w * cosine + (1 - w) * bm25 / max(bm25 in shortlist)
TITLE_BONUS = 0.1  # added when the article title appears verbatim in the query
FUZZY_WEIGHT = 1.0  # an unknown query word scores as its nearest corpus words, times this (dev split: 1.0 > 0.8 > 0.6)
FUZZY_MIN_CHARS = 4  # shorter unknown words are not matched (too many neighbours)


def max_edits(word: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) allowed between a query word and
    a corpus word: 1 up to 7 characters, 2 from 8."""
    return 1 if len(word) <= 7 else 2


def fuzzy_phrase_in(phrase: str, words: list[str]) -> bool:
    """Is some run of ``words`` (as many as ``phrase`` has) within :func:`max_edits` of ``phrase``?"""
    from rapidfuzz.distance import OSA

    n = len(phrase.split())
    edits = max_edits(phrase)
    return any(OSA.distance(phrase, " ".join(words[i:i + n]), score_cutoff=edits) <= edits
               for i in range(len(words) - n + 1))


class TermMatcher:
    """The corpus words nearest to a query word whose index term the corpus lacks, by
    optimal-string-alignment distance (rapidfuzz; insert, delete, substitute, swap neighbours).
    Words are compared before stemming ("regeneraiton" is one swap from "regeneration", four
    edits from its stem "regener"). Only words of similar length that share the first or the
    last letter are compared (one edit never changes both), which keeps a look-up to a few ms."""

    def __init__(self, words: dict[str, str], limit: int = 5) -> None:
        self._buckets: dict[tuple[int, int, str], list[str]] = {}
        for word in words:
            if not word:  # bm25s keeps an empty term in its vocabulary
                continue
            self._buckets.setdefault((len(word), 0, word[0]), []).append(word)
            if word[-1] != word[0]:  # words with the same first and last letter sit in one bucket
                self._buckets.setdefault((len(word), -1, word[-1]), []).append(word)
        self.words = words
        self.limit = limit

    def nearest(self, word: str) -> list[tuple[str, int]]:
        """``(corpus word, distance)`` of the nearest corpus words within :func:`max_edits`
        (ties: up to ``limit``, in the corpus's order)."""
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        if not word:
            return []
        edits = max_edits(word)
        found: dict[str, int] = {}
        for n in range(len(word) - edits, len(word) + edits + 1):
            pool = self._buckets.get((n, 0, word[0]), []) + [
                w for w in self._buckets.get((n, -1, word[-1]), []) if w[0] != word[0]]
            if pool:
                for w, d, _ in process.extract(word, pool, scorer=OSA.distance, score_cutoff=edits, limit=None):
                    found[w] = int(d)
        if not found:
            return []
        best = min(found.values())
        return [(w, d) for w, d in found.items() if d == best][: self.limit]


_DEFAULT_LOCK = threading.Lock()
_DEFAULT_EMBEDDER: Embedder | None = None


def default_embedder(device: str | None = None, runtime: str | None = None) -> Embedder:
    """The MiniLM embedder shared by the offline backends that were given none, the route and
    picture classifiers and follow-up matching (loads lazily). ``device`` and ``runtime``: the
    settings it runs with (an agent passes its own); once the model has loaded, it stays as it is."""
    global _DEFAULT_EMBEDDER
    with _DEFAULT_LOCK:
        if _DEFAULT_EMBEDDER is None:
            _DEFAULT_EMBEDDER = Embedder(device=device or "auto", runtime=runtime or "auto")
        elif not _DEFAULT_EMBEDDER.loaded:
            if device:
                _DEFAULT_EMBEDDER.device_spec = device
            if runtime:
                _DEFAULT_EMBEDDER.runtime_option = runtime
        return _DEFAULT_EMBEDDER


def _corpus_file(corpus: str | Path) -> tuple[Path, str, str]:
    """(path, kind, label) of a corpus argument; raises ToolError for a missing or unknown file."""
    if isinstance(corpus, str) and corpus in ("starter", "offline", "starter:en"):
        return starter_corpus_path(), "starter", "starter"
    path = Path(corpus).expanduser()
    if not path.is_file():
        raise ToolError(f"Wikipedia corpus not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".zim"):
        raise ToolError(f"unsupported corpus file {path}: expected .jsonl, .json or .zim")
    return path, suffix[1:], path.name


class OfflineWikipedia:
    """Search a local Wikipedia-like corpus (BM25 shortlist, MiniLM rerank).

    ``corpus``: ``"starter"`` (10k English Wikipedia lead sections), a ``.jsonl`` file of
    ``{"title", "text", "url"?}`` records (one per line), a ``.json`` list/object of such records,
    or a Kiwix ``.zim`` file. A missing file raises :class:`ToolError` here; a corrupt one when the
    index is first built (:meth:`load`, called by the first :meth:`search`).
    ``cache``: folder for indexes (default ``cache_dir()/indexes``).
    ``fuzzy``: match query words whose index term the corpus lacks to their nearest corpus
    words (misspelt names), each counting ``fuzzy_weight`` of a real match, and give the title
    bonus to titles within an edit or two of the query's words.
    """

    def __init__(self, corpus: str | Path = "starter", *, embedder: Embedder | None = None,
                 rerank: bool = True, cache: Path | None = None, shortlist: int = SHORTLIST,
                 rerank_weight: float = RERANK_WEIGHT, title_bonus: float = TITLE_BONUS,
                 fuzzy: bool = True, fuzzy_weight: float = FUZZY_WEIGHT) -> None:
        self.path, self.kind, label = _corpus_file(corpus)
        self.name = f"offline:{label}"
        self.rerank = rerank
        self.shortlist = max(1, int(shortlist))
        self.rerank_weight = float(rerank_weight)
        self.title_bonus = float(title_bonus)
        self.fuzzy = bool(fuzzy)
        self.fuzzy_weight = float(fuzzy_weight)
        self._matcher: TermMatcher | None = None
        self._embedder = embedder
        self._cache_root = Path(cache) if cache is not None else None
        self._lock = threading.Lock()
        self._bm25: Any = None
        self._vocab: dict[str, int] = {}
        self._store: PassageStore | None = None
        self._vectors: VectorCache | None = None
        self._rerank_failed = False
        self.index_dir: Path | None = None
        self.built_index = False  # True when this instance built the index (not loaded from cache)
        self.load_seconds = 0.0

    # ---- index --------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._bm25 is not None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def load(self) -> "OfflineWikipedia":
        """Load the cached index, building it first if needed. Safe to call repeatedly."""
        if self._bm25 is None:
            with self._lock:
                if self._bm25 is None:
                    self._load_index()
        return self

    def _load_index(self) -> None:
        t0 = time.perf_counter()
        tokenizer = get_tokenizer()
        try:
            folder_name = fingerprint(self.path, tokenizer)
        except OSError as exc:
            raise ToolError(f"cannot read Wikipedia corpus {self.path}: {exc}") from exc
        folder = (self._cache_root or cache_dir() / "indexes") / folder_name
        if not (folder / "meta.json").is_file():
            self._build(folder, tokenizer)
            self.built_index = True
        self._open(folder)
        self.load_seconds = time.perf_counter() - t0

    def _build(self, folder: Path, tokenizer: TextTokenizer) -> None:
        build_index(folder, iter_records(self.path, self.kind), tokenizer, corpus=self.path, kind=self.kind)

    def _open(self, folder: Path) -> None:
        try:
            retriever, store = open_index(folder)
        except Exception as exc:  # noqa: BLE001 - a damaged cache: rebuild once
            log.warning("Wikipedia index %s is damaged (%s); rebuilding", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            self._build(folder, get_tokenizer())
            self.built_index = True
            retriever, store = open_index(folder)
        self._vocab = retriever.vocab_dict
        self._store = store
        self.index_dir = folder
        if self.fuzzy:  # built with the index, not on the first misspelt query (0.1-0.4 s for 10k leads)
            self._matcher = self._term_matcher(folder)
        self._bm25 = retriever

    @property
    def num_passages(self) -> int:
        self.load()
        assert self._store is not None
        return len(self._store)

    # ---- search -------------------------------------------------------------------------------

    def bm25_candidates(self, query: str, n: int) -> list[tuple[int, float]]:
        """Top ``n`` (passage id, BM25 score) pairs with a positive score. With :attr:`fuzzy`,
        a query word (4+ characters) whose index term the corpus lacks scores as the best of its
        nearest corpus words (:class:`TermMatcher`), times :attr:`fuzzy_weight`."""
        self.load()
        tokenizer = get_tokenizer()
        words = tokenizer.words(query)
        terms = tokenizer.stem_words(words)
        ids = [self._vocab[t] for t in terms if t in self._vocab]
        unknown = [w for w, t in dict(zip(words, terms)).items() if t not in self._vocab and len(w) >= FUZZY_MIN_CHARS]
        variants = [v for v in (self._variant_ids(w) for w in unknown) if v] if self.fuzzy else []
        if not ids and not variants:
            return []
        scores = (np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32) if ids
                  else np.zeros(int(self._bm25.scores["num_docs"]), dtype=np.float32))
        for group in variants:
            best = np.max([np.asarray(self._bm25.get_scores_from_ids([i]), dtype=np.float32) for i in group], axis=0)
            scores = scores + self.fuzzy_weight * best
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def _term_matcher(self, folder: Path) -> TermMatcher:
        words = read_words(folder)
        if words is None:  # an index without words.json: match index terms themselves
            words = {t: t for t in self._vocab}
        return TermMatcher(words)

    def _variant_ids(self, word: str) -> list[int]:
        """Ids of the index terms of the corpus words nearest to ``word``."""
        if self._matcher is None:
            with self._lock:
                if self._matcher is None:
                    assert self.index_dir is not None
                    self._matcher = self._term_matcher(self.index_dir)
        matcher = self._matcher
        ids = {self._vocab[matcher.words[w]] for w, _ in matcher.nearest(word) if matcher.words[w] in self._vocab}
        return sorted(ids)

    def _passage_vectors(self, ids: list[int]) -> np.ndarray:
        embedder = self.embedder
        if self._vectors is None:
            assert self.index_dir is not None
            key = f"{embedder.name}@{getattr(embedder, 'max_length', '')}"  # truncation changes vectors
            self._vectors = VectorCache(self.index_dir, self.num_passages, embedder.dim, key)
        cache = self._vectors
        idx = np.asarray(ids, dtype=np.int64)
        missing = [i for i in ids if not cache.have[i]]
        if missing:
            assert self._store is not None
            texts = []
            for i in missing:
                p = self._store.get(i)
                texts.append(f"{p['title']}: {p['text']}")
            vecs = embedder.encode(texts)
            with cache.lock:
                cache.vectors[missing] = vecs.astype(np.float16)
                cache.have[missing] = 1
        return np.asarray(cache.vectors[idx], dtype=np.float32)

    def _scores(self, query: str, ids: list[int], bm: np.ndarray) -> np.ndarray:
        """BM25 scores (scaled to the best) blended with the cosine of the query and passage
        vectors; BM25 alone when reranking is off or the embedder fails."""
        final = bm / bm.max()
        if self.rerank and not self._rerank_failed and len(ids) > 1:
            try:
                qv = self.embedder.encode([query])[0]
                cos = self._passage_vectors(ids) @ qv
                w = self.rerank_weight
                final = w * cos + (1.0 - w) * (bm / bm.max())
            except ToolError as exc:  # embedding model unavailable: BM25 alone still works
                log.warning("Wikipedia rerank disabled: %s", exc)
                self._rerank_failed = True
        return final

    def _add_title_bonus(self, query: str, records: list[dict[str, Any]], final: np.ndarray) -> None:
        """Add :attr:`title_bonus` to passages whose article title the query contains; with
        :attr:`fuzzy`, also (times :attr:`fuzzy_weight`) when the query has a run of as many
        words within :func:`max_edits` of the title ("mona lissa" for "Mona Lisa")."""
        words = folded_phrase(query).split()
        padded_query = f" {' '.join(words)} "
        for j, p in enumerate(records):
            title = folded_phrase(title_subject(p["title"]))
            if not title:
                continue
            if f" {title} " in padded_query:
                final[j] += self.title_bonus
            elif self.fuzzy and len(title) >= FUZZY_MIN_CHARS and fuzzy_phrase_in(title, words):
                final[j] += self.title_bonus * self.fuzzy_weight

    def search(self, query: str, k: int = 3) -> list[Passage]:
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        self.load()
        candidates = self.bm25_candidates(query, max(self.shortlist, k))
        if not candidates:
            return []
        ids = [i for i, _ in candidates]
        final = self._scores(query, ids, np.asarray([s for _, s in candidates], dtype=np.float32))
        assert self._store is not None
        records = [self._store.get(i) for i in ids]
        if self.title_bonus:
            self._add_title_bonus(query, records, final)
        order = np.argsort(-final, kind="stable")[:k]
        return [Passage(title=records[j]["title"], url=records[j]["url"], text=records[j]["text"],
                        score=round(float(final[j]), 4)) for j in order]

    def __repr__(self) -> str:
        return f"OfflineWikipedia({str(self.path)!r}, rerank={self.rerank})"
