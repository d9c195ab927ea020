"""Tests of the pure parts of bench/eval_routing.py (baselines, scoring, held-out requests) and
bench/eval_answers.py (answer normalisation, gold matching, answer kinds, PopQA corpus). Fast:
no model is loaded. Cases that read ../shared/data skip when it is not there."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "routing" / "dev.jsonl").is_file(), reason="../shared/data is not here")


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # eval_answers imports eval_retrieval
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def routing():
    return _load("eval_routing")


@pytest.fixture(scope="module")
def answers():
    return _load("eval_answers")


# -- routing ---------------------------------------------------------------------------------
def test_keyword_baseline_is_the_obvious_rule(routing):
    assert routing.keyword_rule("Please draw a red fox") == "draw"
    assert routing.keyword_rule("Who wrote Hamlet?") == "search"
    assert routing.keyword_rule("Write a poem about rain.") == "answer"
    assert routing.always_search("anything") == "search"


def test_score_counts_precision_recall_and_confusion(routing):
    rows = [{"text": "a", "route": "search"}, {"text": "b", "route": "search"},
            {"text": "c", "route": "draw"}, {"text": "d", "route": "answer"}]
    guesses = {"a": "search", "b": "draw", "c": "draw", "d": "draw"}
    m = routing.score(rows, guesses.get)
    assert m["n"] == 4 and m["accuracy"] == 0.5
    assert m["per_class"]["search"] == {"precision": 1.0, "recall": 0.5, "n": 2}
    assert m["per_class"]["draw"]["precision"] == pytest.approx(0.333, abs=1e-3)
    assert m["per_class"]["answer"] == {"precision": 0.0, "recall": 0.0, "n": 1}
    assert m["confusion"]["search->draw"] == 1 and m["confusion"]["answer->draw"] == 1
    assert [w["text"] for w in m["wrong"]] == ["b", "d"]


@needs_data
def test_heldout_requests_are_balanced_deterministic_and_unseen(routing):
    rows = routing.heldout_rows()
    assert rows == routing.heldout_rows()
    assert {r["route"]: sum(x["route"] == r["route"] for x in rows) for r in rows} == {"search": 50, "answer": 50, "draw": 50}
    dev = {json.loads(line)["text"].lower() for line in (DATA / "routing" / "dev.jsonl").read_text().splitlines() if line}
    assert not any(r["text"].lower() in dev for r in rows)
    draws = [r["text"] for r in rows if r["route"] == "draw"]
    assert not any(t.lower().startswith(("show me", "draw ", "please illustrate", "i'd like to see")) for t in draws)


def test_evaluate_reports_the_router_the_llm_alone_the_classifier_and_the_baselines(routing):
    from agent.router import RouteDecision

    rows = [{"text": "Who wrote Hamlet?", "route": "search"}, {"text": "Write a poem.", "route": "answer"},
            {"text": "Please draw a fox", "route": "draw"}]
    ev = {  # per request: (router's route, the LLM's scores, the classifier's scores)
        "Who wrote Hamlet?": ("search", {"search": 0.3, "answer": 0.6, "draw": 0.1}, {"search": 0.9, "answer": 0.05, "draw": 0.05}),
        "Write a poem.": ("answer", {"search": 0.1, "answer": 0.8, "draw": 0.1}, {"search": 0.6, "answer": 0.3, "draw": 0.1}),
        "Please draw a fox": ("draw", {"search": 0.1, "answer": 0.1, "draw": 0.8}, {"search": 0.1, "answer": 0.1, "draw": 0.8}),
    }

    class Stub:
        def decide(self, text):
            route, llm, clf = ev[text]
            return RouteDecision(route=route, reason="r", scores={}, evidence={
                "llm": {"scores": llm, "ms": 5.0}, "classifier": {"used": True, "scores": clf, "ms": 1.0}})

    out = routing.evaluate(rows, Stub())
    assert set(out) == set(routing.SYSTEMS)
    assert out["router"]["accuracy"] == 1.0 and out["router"]["ms_p50"] >= 0
    assert out["llm_only"]["confusion"]["search->answer"] == 1 and out["llm_only"]["accuracy"] == pytest.approx(0.667, abs=1e-3)
    assert out["classifier_only"]["confusion"]["answer->search"] == 1
    assert out["llm_only"]["ms_per_decision"] == 5.0 and out["classifier_only"]["ms_per_decision"] == 1.0
    assert out["keyword_rule"]["accuracy"] == 1.0 and out["always_search"]["accuracy"] == pytest.approx(0.333, abs=1e-3)


@needs_data
def test_router_training_rows_are_disjoint_from_every_eval_set():
    train = _load("train_router")
    rows, stats = train.build_rows(0)
    assert stats["by_route"]["search"] > 1000 and stats["by_route"]["answer"] > 500 and stats["by_route"]["draw"] > 1000
    taken, ids = train.eval_texts()
    assert len(ids["dev"]) == 142 and len(ids["heldout"]) == 150 and len(ids["squad"]) > 600
    texts = {train.norm(r["text"]) for r in rows}
    assert not texts & taken
    assert not texts & {train.norm(t) for t in ids["dev"] + ids["heldout"]}
    # every request also appears in its spoken form, in the same group (so the split keeps them together)
    spoken = [r for r in rows if r.get("spoken")]
    assert len(spoken) > 0.8 * (len(rows) - len(spoken))
    assert all(r["text"] == r["text"].lower() and not r["text"].endswith("?") for r in spoken)
    # the draw wrappers are our own, not the held-out set's or the dev set's
    own = {w.split("{")[0].strip().lower() for w in train.DRAW_WRAPPERS}
    theirs = {w.split("{")[0].strip().lower() for w in _load("eval_routing")._DRAW_WRAPPERS}
    assert not own & (theirs | {"show me", "draw", "please illustrate", "i'd like to see", "can you make a picture of"})


# -- answers ---------------------------------------------------------------------------------
def test_gold_matching_is_normalised_and_whole_word(answers):
    assert answers.normalize("The  Denver Broncos!") == "denver broncos"
    assert answers.contains_gold("It was won by the Denver Broncos.", ["Denver Broncos"])
    assert answers.contains_gold("Born in Council Bluffs, Iowa", ["council bluffs"])
    assert not answers.contains_gold("He was a politician.", ["pol"])  # not inside a word
    assert not answers.contains_gold(None, ["x"]) and not answers.contains_gold("", ["x"])


def test_answer_kinds(answers):
    assert answers.answer_kind('Wikipedia\'s article "Mona Lisa" says: "..."') == "quote"
    assert answers.answer_kind("I did not find the answer in Wikipedia (...)") == "not_found"
    assert answers.answer_kind("Leonardo da Vinci painted it.") == "model"


def test_summary_separates_what_happens_when_the_passage_lacks_the_answer(answers):
    def cell(correct, top, answer, quote=None):
        return {"answer": answer, "correct": correct, "answer_line_correct": correct, "top_has_gold": top,
                "found": not answer.startswith("I did not"), "quote": quote, "quote_has_gold": bool(quote) and correct,
                "seconds": 1.0}

    rows = [
        {"search": cell(True, True, "Paris is the capital."), "direct": {"correct": True, "seconds": 2.0, "error": None}},
        {"search": cell(False, False, "I did not find the answer in Wikipedia."), "direct": {"correct": False, "seconds": 2.0, "error": None}},
        {"search": cell(False, False, 'Wikipedia\'s article "X" says: "y"', "y"), "direct": {"correct": False, "seconds": 2.0, "error": None}},
    ]
    for r in rows:
        r["search"]["error"] = None
    s = answers.summarise(rows)
    assert s["accuracy"] == {"search": pytest.approx(0.333, abs=1e-3), "direct": pytest.approx(0.333, abs=1e-3)}
    lacking = s["search"]["when_top_lacks_gold"]
    assert lacking["n"] == 2 and lacking["kind_not_found"] == 0.5 and lacking["kind_quote"] == 0.5
    assert lacking["answered_and_wrong"] == 0.5
    assert s["search"]["kinds"]["model"] == {"share": pytest.approx(0.333, abs=1e-3), "correct": 1.0}


@needs_data
def test_popqa_corpus_holds_titled_crag_passages(answers):
    records = answers.popqa_records()
    assert len(records) > 1399
    assert all(r["title"].strip() and r["text"].strip() for r in records)
    assert len({(r["title"], r["text"]) for r in records}) == len(records)
    assert not any("&ndash;" in r["text"] for r in records)
    qs = answers.popqa_questions(5, 13)
    assert qs == answers.popqa_questions(5, 13) and all(q["golds"] for q in qs)


def test_spoken_form_is_lower_case_without_final_punctuation(routing):
    assert routing.spoken_form("  Who wrote The Old Man and the Sea? ") == "who wrote the old man and the sea"
    assert routing.spoken_form("Show me a cat eating fish.") == "show me a cat eating fish"
