"""Tests of bench/eval_retrieval.py's pure parts: reading SQuAD/HotpotQA samples, building and
caching the corpus JSONL, sampling, matching passages to gold paragraphs and recall. Fast: no
embedding model; one tiny BM25 index in tmp_path."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools.wikipedia import OfflineWikipedia, split_passages

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "eval_retrieval.py"


@pytest.fixture(scope="module")
def er():
    spec = importlib.util.spec_from_file_location("bench_eval_retrieval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LONG = " ".join(f"Sentence number {i} talks about the history of the harbour and its cranes." for i in range(40))

SQUAD = {"version": "1.1", "data": [
    {"title": "Super_Bowl_50", "paragraphs": [
        {"context": "Super Bowl 50 was an American football game played at Levi's Stadium.",
         "qas": [{"id": "q1", "question": "Where was Super Bowl 50 played?", "answers": []},
                 {"id": "q2", "question": " Which sport was Super Bowl 50? ", "answers": []}]},
        {"context": LONG, "qas": [{"id": "q3", "question": "What about the harbour cranes?", "answers": []}]},
    ]},
    {"title": "Oxygen", "paragraphs": [
        {"context": "Oxygen is a chemical element with symbol O and atomic number 8.",
         "qas": [{"id": "q4", "question": "What is the atomic number of oxygen?", "answers": []}]},
    ]},
]}

HOTPOT = [
    {"question_id": "h1", "question_text": "Which element did the discoverer of oxygen also find?",
     "answers_objects": [], "contexts": [
         {"id": "0", "title": "Oxygen", "paragraph_text": "Oxygen is a chemical element with symbol O  and atomic number 8.",
          "is_supporting": True},
         {"id": "1", "title": "Carl Wilhelm Scheele", "paragraph_text": "Carl Wilhelm Scheele was a Swedish chemist who discovered chlorine.",
          "is_supporting": True},
         {"id": "2", "title": "Nitrogen", "paragraph_text": "Nitrogen is a chemical element with symbol N.",
          "is_supporting": False}]},
    {"question_id": "h2", "question_text": "Who discovered chlorine?", "answers_objects": [], "contexts": [
        {"id": "0", "title": "Carl Wilhelm Scheele", "paragraph_text": "Carl Wilhelm Scheele was a Swedish chemist who discovered chlorine.",
         "is_supporting": True},
        {"id": "1", "title": "Chlorine", "paragraph_text": "Chlorine is a chemical element with symbol Cl.",
         "is_supporting": True}]},
]


@pytest.fixture
def data(tmp_path):
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    hotpot = tmp_path / "hotpot.jsonl"
    hotpot.write_text("".join(json.dumps(row) + "\n" for row in HOTPOT) + "\n")
    return squad, hotpot


def test_load_squad(er, data):
    paragraphs, questions = er.load_squad(data[0])
    assert [p["title"] for p in paragraphs] == ["Super Bowl 50", "Super Bowl 50", "Oxygen"]
    assert [q["id"] for q in questions] == ["q1", "q2", "q3", "q4"]
    assert questions[1]["question"] == "Which sport was Super Bowl 50?"
    assert questions[0]["gold"] == [("Super Bowl 50", SQUAD["data"][0]["paragraphs"][0]["context"])]
    assert questions[1]["gold"] == questions[0]["gold"]


def test_load_hotpot_gold_is_supporting_paragraphs(er, data):
    paragraphs, questions = er.load_hotpot(data[1])
    assert len(paragraphs) == 5 and [q["id"] for q in questions] == ["h1", "h2"]
    assert [t for t, _ in questions[0]["gold"]] == ["Oxygen", "Carl Wilhelm Scheele"]
    # whitespace-normalised (the raw text has a double space)
    assert questions[0]["gold"][0][1] == "Oxygen is a chemical element with symbol O and atomic number 8."


def test_corpus_dedupes_by_title_and_normalised_text(er, data):
    squad_p, _ = er.load_squad(data[0])
    hotpot_p, _ = er.load_hotpot(data[1])
    records = er.corpus_records(squad_p, hotpot_p)
    keys = [(r["title"], er.norm_text(r["text"])) for r in records]
    assert len(keys) == len(set(keys))
    # Oxygen (SQuAD and HotpotQA, whitespace differs) and Scheele (two questions) kept once each
    assert [r["title"] for r in records] == ["Super Bowl 50", "Super Bowl 50", "Oxygen",
                                             "Carl Wilhelm Scheele", "Nitrogen", "Chlorine"]
    assert er.corpus_records([{"title": "Empty", "text": "  \n "}]) == []


def test_write_corpus_is_content_addressed_and_not_rewritten(er, tmp_path):
    records = [{"title": "A", "text": "alpha é"}, {"title": "B", "text": "beta"}]
    path = er.write_corpus(records, tmp_path / "bench")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == records
    mtime = path.stat().st_mtime_ns
    assert er.write_corpus(records, tmp_path / "bench") == path
    assert path.stat().st_mtime_ns == mtime  # the index cache is keyed by mtime
    other = er.write_corpus(records[:1], tmp_path / "bench")
    assert other != path and other.is_file()


def test_sampling_is_deterministic(er):
    questions = [{"id": i} for i in range(100)]
    a = er.sample_questions(questions, 10, seed=0)
    assert a == er.sample_questions(questions, 10, seed=0)
    assert a != er.sample_questions(questions, 10, seed=1)
    assert len({q["id"] for q in a}) == 10
    assert er.sample_questions(questions, 500, seed=0) == questions


def test_is_hit_matches_every_split_piece_of_the_gold_paragraph(er):
    gold = ("Harbour", er.norm_text(LONG))
    pieces = split_passages(LONG)
    assert len(pieces) > 1
    assert all(er.is_hit("Harbour", piece, gold) for piece in pieces)
    assert not er.is_hit("Other title", pieces[0], gold)
    assert not er.is_hit("Harbour", "Something else entirely.", gold)
    assert not er.is_hit("Harbour", "   ", gold)
    # whitespace differences (newline-joined merged pieces) do not matter
    assert er.is_hit("Harbour", pieces[0].replace(" ", "\n", 3), gold)


def test_gold_ranks_and_recall(er):
    g1, g2 = ("A", "alpha text here"), ("B", "beta text here")
    passages = [("C", "gamma"), ("B", "beta text"), ("A", "alpha text here")]
    assert er.gold_ranks(passages, [g1, g2]) == [3, 2]
    assert er.gold_ranks(passages, [("D", "delta")]) == [None]
    assert er.cutoffs(5) == [1, 5] and er.cutoffs(3) == [1, 3] and er.cutoffs(10) == [1, 5, 10]
    single = er.recall([[1], [3], [None], [6]], [1, 5])
    assert single == {"recall@1": 0.25, "recall@5": 0.5}
    multi = er.recall([[1, 4], [None, 2], [None, None], [7, 1]], [1, 5])
    assert multi == {"recall@1": 0.5, "recall@5": 0.75, "all@5": 0.25}


def test_evaluate_with_a_fake_search(er):
    questions = [{"question": "q1", "gold": [("A", "alpha")]}, {"question": "q2", "gold": [("B", "beta")]}]
    results = {"q1": [("X", "x"), ("A", "alpha")], "q2": [("B", "beta")]}
    seen = []

    def search(query, k):
        return [SimpleNamespace(title=t, text=x) for t, x in results[query]][:k]

    out = er.evaluate(search, questions, 5, before_query=seen.append)
    assert seen == ["q1", "q2"]
    assert out["n"] == 2 and out["recall@1"] == 0.5 and out["recall@5"] == 1.0
    assert out["ranks"] == [[2], [1]] and out["ms_per_query"] >= 0


def test_end_to_end_bm25_on_a_tiny_corpus(er, data, tmp_path):
    squad_p, squad_q = er.load_squad(data[0])
    hotpot_p, hotpot_q = er.load_hotpot(data[1])
    corpus = er.write_corpus(er.corpus_records(squad_p, hotpot_p), tmp_path / "bench")
    wiki = OfflineWikipedia(corpus, rerank=False, cache=tmp_path / "indexes").load()
    assert wiki.built_index and wiki.num_passages > 6  # the long paragraph is split
    squad = er.evaluate(wiki.search, squad_q, 5)
    assert squad["recall@5"] == 1.0 and squad["recall@1"] >= 0.75
    hotpot = er.evaluate(wiki.search, hotpot_q, 5)
    assert hotpot["recall@5"] == 1.0
    assert not OfflineWikipedia(corpus, rerank=False, cache=tmp_path / "indexes").load().built_index


def test_counting_embedder_separates_queries_from_passages(er):
    class Inner:
        name, dim, max_length = "fake", 3, 16

        def load(self):
            return self

        def encode(self, texts, batch_size=32):
            return [[0.0, 0.0, 1.0]] * len(texts)

    counter = er.CountingEmbedder(Inner())
    counter.expect_query("who?")
    counter.encode(["who?"])
    counter.encode(["T: passage one", "T: passage two"])
    assert counter.passages == 2 and (counter.name, counter.dim, counter.max_length) == ("fake", 3, 16)


def test_noisy_questions_are_lower_case_with_one_name_misspelt(er):
    noisy, name = er.noisy_question("Which NFL team represented the AFC at Super Bowl 50?", "q1")
    assert noisy == noisy.lower() and name in ("Super", "Bowl")
    assert noisy != "which nfl team represented the afc at super bowl 50?"  # one slip in the name
    words, clean = noisy.split(), "which nfl team represented the afc at super bowl 50?".split()
    assert len(words) == len(clean) and sum(a != b for a, b in zip(words, clean)) == 1
    assert er.noisy_question("Which NFL team represented the AFC at Super Bowl 50?", "q1") == (noisy, name)
    assert er.noisy_question("how many people live there?", "q2") == ("how many people live there?", None)
    for seed in range(50):  # every slip is one edit: a letter doubled, dropped or two swapped
        slipped = er.misspell("Leonardo", __import__("random").Random(seed))
        assert slipped != "Leonardo"  # it has no two equal letters side by side
        assert abs(len(slipped) - len("Leonardo")) <= 1 and slipped[0] == "L"


def test_is_hit_with_an_article_gold_matches_any_passage_of_it(er):
    gold = ("Henry Feilden (Conservative politician)", None)
    assert er.is_hit("Henry Feilden (Conservative politician)", "Any passage of the article.", gold)
    assert not er.is_hit("Henry Feilden", "Any passage of the article.", gold)
    assert not er.is_hit("Henry Feilden (Conservative politician)", "  ", gold)


def test_report_and_dev_splits_are_disjoint_and_deterministic(er):
    questions = [{"id": f"q{i}"} for i in range(400)]
    report = er.sample_questions(questions, 100, seed=0)
    dev = er.dev_sample(questions, report, 100, seed=0)
    assert len(dev) == 100 and not {q["id"] for q in dev} & {q["id"] for q in report}
    assert dev == er.dev_sample(questions, report, 100, seed=0)
    ids = [f"popqa-{i}" for i in range(1399)]
    share = sum(map(er.in_report_split, ids)) / len(ids)
    assert 0.4 < share < 0.6 and [er.in_report_split(i) for i in ids] == [er.in_report_split(i) for i in ids]


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared/data/raw/popqa").is_dir(),
                    reason="PopQA data not present")
def test_load_popqa_questions_name_their_subject_article(er):
    records, questions = er.load_popqa()
    assert len(questions) == 1399 and questions[0]["id"] == "popqa-0"
    titles = {r["title"] for r in records}
    assert questions[0]["gold"][0][1] is None
    # every question's subject article has evidence in the corpus (its CRAG "correct" passages)
    assert sum(q["gold"][0][0] in titles for q in questions) / len(questions) > 0.95
