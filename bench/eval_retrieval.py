"""Retrieval recall of the offline Wikipedia search (BM25 alone and the hybrid ranker) on SQuAD, HotpotQA and PopQA.

    .venv/bin/python bench/eval_retrieval.py [--squad-n 500] [--popqa-n 500] [--seed 0] [--k 5]
                                             [--noisy] [--split report|dev] [--datasets squad,hotpotqa,popqa] [--json]

Corpus: every SQuAD v1.1 dev paragraph plus every HotpotQA paragraph (distractors included) of the
500 IRCoT-subsampled dev questions, one ``{"title", "text"}`` JSONL record per distinct paragraph
(deduplicated by title and whitespace-normalised text; SQuAD titles lose their underscores, so
``Super_Bowl_50`` becomes the real article title ``Super Bowl 50``). The JSONL file is written
under ``cache_dir()/bench/`` with its content hash in the name and is never rewritten when it
already exists, so the index that :class:`tools.wikipedia.OfflineWikipedia` builds from it (keyed
by the file's path, size and mtime) is built once and then loaded from ``cache_dir()/indexes``.

Queries: ``--squad-n`` SQuAD questions sampled with ``random.Random(seed)`` from all dev
questions (deterministic), and all HotpotQA questions. Gold: the SQuAD question's own paragraph;
for HotpotQA both supporting paragraphs, and a query counts as a hit when *any* of them is
retrieved (``all@k`` also reports how often both are).

PopQA (``--popqa-n`` of the 1,399 long-tail questions) is searched in its own corpus: the CRAG
evidence passages of every PopQA question (``bench/eval_answers.py``'s ``popqa_records``, the
corpus the answer evaluation uses). Gold: the question's subject article (``s_wiki_title``, as
those records title its evidence); any passage of it counts.

Splits: ``--split report`` (default) is what results are reported on: the seeded SQuAD sample
above, every HotpotQA question, and PopQA questions whose id hashes even. ``--split dev`` is for
tuning: SQuAD questions sampled with ``seed + 1`` from those *not* in the report sample, PopQA
questions whose id hashes odd, and no HotpotQA (never tuned on). ``--noisy`` gives the same
questions lower-cased with one name misspelt (:func:`noisy_question`).

Matching a returned passage to a paragraph: the index splits long texts into passages of at most
~150 words, so a returned passage is a piece of one record's text. A passage matches a gold
paragraph when the titles are equal and the passage's whitespace-normalised text is a substring of
the paragraph's whitespace-normalised text (a record never gives a passage that spans two records,
so any piece of the gold paragraph counts as retrieving it).

Rankers: ``bm25`` is ``OfflineWikipedia(corpus, rerank=False)`` (BM25 plus the title bonus);
``hybrid`` is ``OfflineWikipedia(corpus)`` with all defaults (BM25 shortlist reranked with MiniLM
cosine), the agent's default ranker. Passage vectors are cached lazily next to the index, so the
first hybrid run embeds every shortlisted passage ("cold") and later runs only the queries
("warm"); the report says which, and gives ms/query both with and without passage embedding.

Prints a table, writes bench/results/retrieval.json; ``--json`` prints only that JSON object on
stdout (headline: ``n`` and ``recall@1``/``recall@5`` per dataset, for the default ranker).
``--split dev`` writes ``retrieval_dev.json`` / ``retrieval_dev_noisy.json`` instead.
Targets: SQuAD recall@5 >= 90 % with the default (hybrid) ranker; with ``--noisy``, recall@5
within 5 points of the clean questions (compare with retrieval.json).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402
from tools.common import cache_dir  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "raw"
DEFAULT_SQUAD = DATA / "squad_v1.1_dev" / "dev-v1.1.json"
DEFAULT_HOTPOT = DATA / "hotpotqa_dev_subsampled_ircot" / "dev_subsampled.jsonl"
RESULTS = REPO / "bench" / "results" / "retrieval.json"  # what save_results("retrieval", ...) writes
TARGET_RECALL_AT_5 = 0.90

Gold = tuple[str, str | None]  # (title, whitespace-normalised paragraph text; None: any passage of the title)


# --------------------------------------------------------------------------------------------
# Data: paragraphs and questions


def norm_text(text: str) -> str:
    """Whitespace-normalised text (how the index's passage splitter leaves it)."""
    return " ".join(text.split())


def squad_title(raw: str) -> str:
    """``Super_Bowl_50`` -> ``Super Bowl 50`` (as tools.wikipedia reads SQuAD-format files)."""
    return raw.replace("_", " ").strip()


def load_squad(path: Path) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(paragraphs ``{title, text}``, questions ``{id, question, gold: [(title, text)]}``) of a
    SQuAD v1.1 JSON file, in file order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    paragraphs, questions = [], []
    for article in data:
        title = squad_title(article["title"])
        for para in article["paragraphs"]:
            paragraphs.append({"title": title, "text": para["context"]})
            gold = [(title, norm_text(para["context"]))]
            for qa in para["qas"]:
                questions.append({"id": qa["id"], "question": qa["question"].strip(), "gold": gold})
    return paragraphs, questions


def load_hotpot(path: Path) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(paragraphs ``{title, text}`` of every context, questions ``{id, question, gold}``) of the
    IRCoT HotpotQA JSONL (``question_text``; ``contexts`` of ``{title, paragraph_text,
    is_supporting}``). ``gold`` lists the supporting paragraphs."""
    paragraphs, questions = [], []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            gold = []
            for ctx in row["contexts"]:
                title, text = ctx["title"].strip(), ctx["paragraph_text"]
                paragraphs.append({"title": title, "text": text})
                if ctx.get("is_supporting"):
                    gold.append((title, norm_text(text)))
            if not gold:
                raise ValueError(f"{path}: question {row.get('question_id')} has no supporting paragraph")
            questions.append({"id": row["question_id"], "question": row["question_text"].strip(), "gold": gold})
    return paragraphs, questions


def load_popqa() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(corpus records, questions ``{id, question, gold: [(subject title, None)]}``) of PopQA
    long-tail: the records are ``bench/eval_answers.py``'s CRAG evidence corpus, ids are its
    ``popqa-<row>`` ids."""
    import csv

    from eval_answers import POPQA, popqa_records

    with (POPQA / "DisambPopQA_longtail1399.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    questions = [{"id": f"popqa-{i}", "question": r["question"].strip(),
                  "gold": [((r["s_wiki_title"] or r["subj"]).strip(), None)]} for i, r in enumerate(rows)]
    return popqa_records(), questions


def in_report_split(qid: str) -> bool:
    """PopQA's report/dev split: a question is reported on when its id hashes even."""
    return hashlib.sha256(qid.encode()).digest()[0] % 2 == 0


def dev_sample(questions: list[dict[str, Any]], report: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` questions not in ``report``, drawn with ``random.Random(seed + 1)``."""
    taken = {q["id"] for q in report}
    return sample_questions([q for q in questions if q["id"] not in taken], n, seed + 1)


def corpus_records(*paragraph_lists: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """One record per distinct (title, normalised text), first occurrence kept, empty texts dropped."""
    seen: set[tuple[str, str]] = set()
    records = []
    for paragraphs in paragraph_lists:
        for p in paragraphs:
            key = (p["title"], norm_text(p["text"]))
            if not key[1] or key in seen:
                continue
            seen.add(key)
            records.append({"title": p["title"], "text": p["text"]})
    return records


def write_corpus(records: list[dict[str, str]], folder: Path) -> Path:
    """The records as JSONL in ``folder``, named by content hash; an existing file with the same
    content is left untouched (its mtime keys the cached index)."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    digest = hashlib.sha1(payload).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"retrieval-corpus-{digest}.jsonl"
    if path.is_file() and path.stat().st_size == len(payload):
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return path


def sample_questions(questions: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` questions drawn without replacement with ``random.Random(seed)`` (all if n >= len)."""
    if n >= len(questions):
        return list(questions)
    return random.Random(seed).sample(questions, n)


# --------------------------------------------------------------------------------------------
# Scoring


def misspell(word: str, rng: random.Random) -> str:
    """One typing or hearing slip in ``word``: a letter doubled, dropped, or two inner letters swapped."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("double", "drop", "swap"))
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def noisy_question(question: str, key: str) -> tuple[str, str | None]:
    """The question as a speech recogniser might give it: all lower case, and one name (a
    capitalised word of 4+ letters after the first word) misspelt. Deterministic per ``key``.
    Returns (noisy question, the misspelt name or None when it names nothing)."""
    rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
    words = question.split()
    names = [i for i, w in enumerate(words[1:], 1) if w[:1].isupper() and sum(c.isalpha() for c in w) >= 4]
    name = None
    if names:
        i = rng.choice(names)
        core = words[i].rstrip("?.,!;:'\"")
        name = core
        words[i] = misspell(core, rng) + words[i][len(core):]
    return " ".join(words).lower(), name


def noisy_questions(questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**q, "question": noisy_question(q["question"], str(q["id"]))[0], "clean": q["question"],
             "misspelt": noisy_question(q["question"], str(q["id"]))[1]} for q in questions]


def is_hit(title: str, text: str, gold: Gold) -> bool:
    """Whether a returned passage (title, text) is (a piece of) the gold paragraph, or of the
    gold article when the gold has no text."""
    piece = norm_text(text)
    if gold[1] is None:
        return bool(piece) and title == gold[0]
    return bool(piece) and title == gold[0] and piece in gold[1]


def gold_ranks(passages: list[tuple[str, str]], golds: list[Gold]) -> list[int | None]:
    """For each gold paragraph, the 1-based rank of the first passage matching it (None: not
    retrieved)."""
    ranks: list[int | None] = []
    for gold in golds:
        ranks.append(next((i for i, (t, x) in enumerate(passages, 1) if is_hit(t, x, gold)), None))
    return ranks


def cutoffs(k: int) -> list[int]:
    return sorted({c for c in (1, 5, k) if c <= k})


def recall(rank_lists: list[list[int | None]], ks: list[int]) -> dict[str, float]:
    """``recall@c`` (any gold within the top c) and, when some query has several golds,
    ``all@c`` for c > 1 (every gold within the top c), as fractions of the queries."""
    n = len(rank_lists)
    out: dict[str, float] = {}
    for c in ks:
        any_hit = sum(any(r is not None and r <= c for r in ranks) for ranks in rank_lists)
        out[f"recall@{c}"] = round(any_hit / n, 4) if n else 0.0
    for c in ks:  # all@1 is 0 by construction when a query has several golds
        if c > 1 and any(len(ranks) > 1 for ranks in rank_lists):
            all_hit = sum(all(r is not None and r <= c for r in ranks) for ranks in rank_lists)
            out[f"all@{c}"] = round(all_hit / n, 4) if n else 0.0
    return out


def evaluate(search: Callable[[str, int], list[Any]], questions: list[dict[str, Any]], k: int,
             before_query: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every question through ``search(query, k)`` (passages with .title and .text) and
    score it: ``n``, recall figures, ``ms_per_query`` and the per-query gold ranks."""
    rank_lists, seconds = [], 0.0
    for q in questions:
        if before_query is not None:
            before_query(q["question"])
        t0 = time.perf_counter()
        passages = search(q["question"], k)
        seconds += time.perf_counter() - t0
        rank_lists.append(gold_ranks([(p.title, p.text) for p in passages[:k]], q["gold"]))
    result: dict[str, Any] = {"n": len(questions), **recall(rank_lists, cutoffs(k))}
    result["ms_per_query"] = round(seconds * 1000 / len(questions), 2) if questions else 0.0
    result["seconds"] = round(seconds, 3)
    result["ranks"] = rank_lists
    return result


class CountingEmbedder:
    """Wraps the embedder the hybrid ranker uses and counts what it embeds: the query being
    evaluated (set through :meth:`expect_query`) versus shortlisted passages missing from the
    on-disk vector cache. ``name``/``dim``/``max_length`` are the inner embedder's, so the vector
    cache is the one the agent uses."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._query: str | None = None
        self.passages = 0
        self.passage_seconds = 0.0
        self.query_seconds = 0.0

    def expect_query(self, query: str) -> None:
        self._query = query

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_length(self) -> int:
        return self.inner.max_length

    def load(self) -> "CountingEmbedder":
        self.inner.load()
        return self

    def encode(self, texts: list[str], batch_size: int = 32) -> Any:
        t0 = time.perf_counter()
        out = self.inner.encode(texts, batch_size=batch_size)
        dt = time.perf_counter() - t0
        if list(texts) == [self._query]:
            self.query_seconds += dt
        else:
            self.passages += len(texts)
            self.passage_seconds += dt
        return out


# --------------------------------------------------------------------------------------------
# Main


def _open_corpus(corpus: Path, counter: "CountingEmbedder", log: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    """(BM25 ranker, hybrid ranker, index facts) of a corpus file."""
    from tools.wikipedia import OfflineWikipedia

    bm25 = OfflineWikipedia(corpus, rerank=False).load()
    index_meta = json.loads((bm25.index_dir / "meta.json").read_text())
    index = {"dir": str(bm25.index_dir), "built": bm25.built_index,
             "build_seconds": round(bm25.load_seconds, 2) if bm25.built_index else None,
             "original_build_seconds": index_meta.get("build_seconds"),
             "passages": bm25.num_passages, "documents": index_meta.get("documents")}
    log(f"{corpus.name}: index {'built in %.1f s' % bm25.load_seconds if bm25.built_index else 'cached'}, "
        f"{index['passages']} passages")
    hybrid = OfflineWikipedia(corpus, embedder=counter).load()  # every other parameter at its default
    return bm25, hybrid, index


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from tools.common import quiet_transformers
    from tools.wikipedia import default_embedder

    quiet_transformers()
    t_start = time.perf_counter()
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if args.split == "dev":
        wanted = [d for d in wanted if d != "hotpotqa"]  # HotpotQA is never tuned on
    squad_paragraphs, squad_questions = load_squad(args.squad)
    hotpot_paragraphs, hotpot_questions = load_hotpot(args.hotpot)
    records = corpus_records(squad_paragraphs, hotpot_paragraphs)
    corpus = write_corpus(records, cache_dir() / "bench")
    report_squad = sample_questions(squad_questions, args.squad_n, args.seed)
    datasets: dict[str, list[dict[str, Any]]] = {}
    corpus_of: dict[str, str] = {}
    if "squad" in wanted:
        datasets["squad"] = (report_squad if args.split == "report"
                             else dev_sample(squad_questions, report_squad, args.squad_n, args.seed))
        corpus_of["squad"] = "main"
    if "hotpotqa" in wanted:
        datasets["hotpotqa"], corpus_of["hotpotqa"] = hotpot_questions, "main"
    popqa_corpus = None
    if "popqa" in wanted:
        popqa_recs, popqa_questions = load_popqa()
        popqa_corpus = write_corpus(corpus_records(popqa_recs), cache_dir() / "bench")
        pool = [q for q in popqa_questions if in_report_split(q["id"]) == (args.split == "report")]
        datasets["popqa"], corpus_of["popqa"] = sample_questions(pool, args.popqa_n, args.seed), "popqa"
    if not datasets:
        raise SystemExit("eval_retrieval: no dataset to evaluate")
    if args.noisy:
        datasets = {name: noisy_questions(questions) for name, questions in datasets.items()}
    log(f"corpus {corpus} ({len(records)} paragraphs); loading the index ...")

    counter = CountingEmbedder(default_embedder())
    t0 = time.perf_counter()
    counter.load()
    embedder_load_s = time.perf_counter() - t0
    corpora: dict[str, tuple[Any, Any, dict[str, Any]]] = {}
    if "main" in corpus_of.values():
        corpora["main"] = _open_corpus(corpus, counter, log)
    if popqa_corpus is not None:
        corpora["popqa"] = _open_corpus(popqa_corpus, counter, log)

    rankers: dict[str, dict[str, Any]] = {}
    for position, label in enumerate(("bm25", "hybrid")):
        per_dataset = {}
        for name, questions in datasets.items():
            log(f"{label}: {name} ({len(questions)} questions) ...")
            wiki = corpora[corpus_of[name]][position]
            hook = counter.expect_query if label == "hybrid" else None
            per_dataset[name] = evaluate(wiki.search, questions, args.k, before_query=hook)
        total_n = sum(r["n"] for r in per_dataset.values())
        total_s = sum(r["seconds"] for r in per_dataset.values())
        rankers[label] = {**per_dataset, "ms_per_query": round(total_s * 1000 / total_n, 2)}
    embedded = counter.passages
    vectors = {"state": "cold" if embedded else "warm", "passages_embedded": embedded,
               "passage_embed_seconds": round(counter.passage_seconds, 2),
               "query_embed_seconds": round(counter.query_seconds, 2),
               "embedder": counter.name, "embedder_load_seconds": round(embedder_load_s, 2)}
    total_n = sum(len(q) for q in datasets.values())
    hybrid_s = sum(rankers["hybrid"][name]["seconds"] for name in datasets)
    rankers["hybrid"]["ms_per_query_without_passage_embedding"] = round(
        (hybrid_s - counter.passage_seconds) * 1000 / total_n, 2)

    default = "hybrid"
    headline_keys = ["n"] + [f"recall@{c}" for c in cutoffs(args.k)]
    summary: dict[str, Any] = {"n": total_n, "split": args.split}
    for name in datasets:
        summary[name] = {key: rankers[default][name][key] for key in headline_keys
                         if key in rankers[default][name]}
        extra = {key: v for key, v in rankers[default][name].items() if key.startswith("all@")}
        summary[name].update(extra)
    squad_r5 = rankers[default].get("squad", {}).get("recall@5")
    summary["target"] = {"metric": f"squad recall@5 ({default})", "min": TARGET_RECALL_AT_5,
                         "value": squad_r5, "met": None if squad_r5 is None else squad_r5 >= TARGET_RECALL_AT_5}
    summary["default_ranker"] = default
    summary["rankers"] = {label: {name: {key: v for key, v in r.items() if key not in ("ranks", "seconds")}
                                  if isinstance(r, dict) else r for name, r in res.items()}
                          for label, res in rankers.items()}
    some_hybrid = next(iter(corpora.values()))[1]
    if "main" in corpora:
        index = corpora["main"][2]
        summary["index"] = index
        summary["corpus"] = {"path": str(corpus), "paragraphs": len(records),
                             "squad_paragraphs": len(corpus_records(squad_paragraphs)),
                             "hotpotqa_paragraphs": len(corpus_records(hotpot_paragraphs)),
                             "passages": index["passages"]}
    if "popqa" in corpora:
        summary["popqa_index"] = corpora["popqa"][2]
        summary["popqa_corpus"] = {"path": str(popqa_corpus), "records": len(popqa_recs),
                                   "passages": corpora["popqa"][2]["passages"]}
    summary["vectors"] = vectors
    summary["params"] = {"k": args.k, "seed": args.seed, "squad_n": args.squad_n, "popqa_n": args.popqa_n,
                         "shortlist": some_hybrid.shortlist, "rerank_weight": some_hybrid.rerank_weight,
                         "title_bonus": some_hybrid.title_bonus,
                         **{key: getattr(some_hybrid, key) for key in ("fuzzy", "fuzzy_weight")
                            if hasattr(some_hybrid, key)}}
    summary["data"] = {"squad": str(args.squad), "hotpotqa": str(args.hotpot)}
    if args.noisy:
        summary["noisy"] = {"what": "questions lower-cased, one capitalised name (4+ letters, not the first word) "
                                    "misspelt: a letter doubled, dropped or two swapped",
                            "misspelt": {name: sum(q["misspelt"] is not None for q in qs) for name, qs in datasets.items()},
                            "examples": [[q["clean"], q["question"]] for q in next(iter(datasets.values()))[:5]]}
    summary["process_seconds"] = round(time.perf_counter() - t_start, 1)
    return summary


def print_table(summary: dict[str, Any], written: Path = RESULTS) -> None:
    rankers = summary["rankers"]
    labels = list(rankers)
    datasets = [name for name in rankers[labels[0]] if isinstance(rankers[labels[0]][name], dict)]
    vec = summary["vectors"]
    if "corpus" in summary:
        corpus, index = summary["corpus"], summary["index"]
        built = (f"built in {index['build_seconds']:.1f} s" if index["built"]
                 else f"cached (first built in {index['original_build_seconds']} s)")
        print(f"corpus: {corpus['paragraphs']} paragraphs ({corpus['squad_paragraphs']} SQuAD, "
              f"{corpus['hotpotqa_paragraphs']} HotpotQA), {corpus['passages']} passages; index {built}")
    if "popqa_corpus" in summary:
        corpus, index = summary["popqa_corpus"], summary["popqa_index"]
        built = (f"built in {index['build_seconds']:.1f} s" if index["built"]
                 else f"cached (first built in {index['original_build_seconds']} s)")
        print(f"PopQA corpus: {corpus['records']} CRAG evidence records, {corpus['passages']} passages; index {built}")
    print(f"{'dataset':<9} {'n':>4} {'metric':<10}" + "".join(f" {label:>7}" for label in labels))
    for name in datasets:
        metrics = [key for key in rankers[labels[0]][name] if key.startswith(("recall@", "all@"))]
        for j, metric in enumerate(metrics):
            head = f"{name:<9} {rankers[labels[0]][name]['n']:>4}" if j == 0 else " " * 14
            print(f"{head} {metric:<10}" + "".join(f" {rankers[label][name][metric]:>7.1%}" for label in labels))
    print(f"{'ms/query':<25}" + "".join(f" {rankers[label]['ms_per_query']:>7.1f}" for label in labels))
    hybrid = rankers.get("hybrid", {})
    if vec["state"] == "cold":
        print(f"hybrid vectors cold: {vec['passages_embedded']} passages embedded in "
              f"{vec['passage_embed_seconds']:.1f} s; {hybrid.get('ms_per_query_without_passage_embedding', 0):.1f}"
              f" ms/query without that (about the warm cost)")
    else:
        print("hybrid vectors warm: every shortlisted passage vector was cached")
    t = summary["target"]
    if t["value"] is not None:
        print(f"target {t['metric']} >= {t['min']:.0%}: {t['value']:.1%} "
              f"{'met' if t['met'] else 'MISSED'}")
    print(f"process {summary['process_seconds']:.0f} s; written to {written.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD, help="SQuAD v1.1 dev JSON")
    parser.add_argument("--hotpot", type=Path, default=DEFAULT_HOTPOT, help="IRCoT HotpotQA dev JSONL")
    parser.add_argument("--squad-n", type=int, default=500, help="SQuAD questions to sample")
    parser.add_argument("--popqa-n", type=int, default=500, help="PopQA questions to sample (from the split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question samples")
    parser.add_argument("--split", choices=("report", "dev"), default="report",
                        help="report: the reported questions; dev: disjoint questions for tuning (no HotpotQA)")
    parser.add_argument("--datasets", default="squad,hotpotqa,popqa",
                        help="comma-separated subset of squad,hotpotqa,popqa")
    parser.add_argument("--k", type=int, default=5, help="passages retrieved per query")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--noisy", action="store_true",
                        help="the same questions lower-cased with one name misspelt (as speech may give them); "
                             "writes bench/results/retrieval_noisy.json")
    args = parser.parse_args()
    for path in (args.squad, args.hotpot):
        if not path.is_file():
            sys.exit(f"eval_retrieval: no data file {path}")
    if args.k < 1 or args.squad_n < 1 or args.popqa_n < 1:
        parser.error("--k, --squad-n and --popqa-n must be at least 1")
    unknown = {d.strip() for d in args.datasets.split(",") if d.strip()} - {"squad", "hotpotqa", "popqa"}
    if unknown:
        parser.error(f"unknown datasets: {', '.join(sorted(unknown))}")

    def log(msg: str) -> None:
        print(f"eval_retrieval: {msg}", file=sys.stderr, flush=True)

    # With --json nothing but the object may reach stdout.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        summary = run(args, log)
    name = "retrieval" + ("_dev" if args.split == "dev" else "") + ("_noisy" if args.noisy else "")
    written = save_results(name, summary, as_json=args.json)
    if args.json:
        return
    print_table(summary, written)


if __name__ == "__main__":
    main()
