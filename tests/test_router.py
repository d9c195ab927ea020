"""The route decision of issue 16: the embedding classifier (agent/route_model.npz), its combination
with the LLM's calibrated label scores (a missed search costs more), and the evidence in the trace.
Fast tests use a scripted LLM and a stand-in embedder; the slow ones run the real starter models on
lower-cased spoken requests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.route_classifier import (COSTS, MISS_SEARCH_COST, MODEL_PATH, ClassifierError, Combination, RouteClassifier,
                                    cheapest, combine, expected_costs, vote_probabilities)
from agent.router import Router
from agent.state import ROUTES
from tests.fakes import ScriptedLLM

UNBIASED = {"search": 1 / 3, "answer": 1 / 3, "draw": 1 / 3}


class AxisEmbedder:
    """A stand-in embedder: the request's vector is the model row of the route named in the text."""

    name = "starter:minilm"

    def __init__(self, W: np.ndarray) -> None:
        self.W = W
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = []
        for text in texts:
            route = next((r for r in ROUTES if r in text), "answer")
            v = self.W[ROUTES.index(route)].astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def write_model(path, W, b, *, w_llm=1.0, w_clf=1.0, bias=(0.0, 0.0, 0.0), meta=None):
    meta = meta or {"format": "askdraw-route-model/1", "classes": list(ROUTES), "embedder": "starter:minilm"}
    np.savez(path, W=np.asarray(W, np.float32), b=np.asarray(b, np.float32), w_llm=np.float64(w_llm),
             w_clf=np.float64(w_clf), combo_bias=np.asarray(bias, np.float64), meta=np.array(json.dumps(meta)))
    return path


# -- the shipped weights -------------------------------------------------------------------------
def test_shipped_model_is_small_loads_offline_and_holds_no_text():
    assert MODEL_PATH.is_file() and MODEL_PATH.stat().st_size < 20_000
    clf = RouteClassifier()
    assert clf.W.shape == (3, 384) and clf.b.shape == (3,)
    assert clf.meta["classes"] == list(ROUTES) and clf.meta["trained_by"] == "bench/train_router.py"
    w = clf.combination
    assert w.w_llm >= 0 and w.w_clf > 0 and len(w.bias) == 3
    with np.load(MODEL_PATH, allow_pickle=False) as data:  # numbers and one JSON description, no request text
        assert set(data.files) == {"W", "b", "w_llm", "w_clf", "combo_bias", "meta"}
        assert len(str(data["meta"])) < 3000


def test_classifier_scores_are_a_softmax_over_the_embedding(tmp_path):
    W = np.eye(3, 384) * 10
    clf = RouteClassifier(write_model(tmp_path / "m.npz", W, [0, 0, 0]), embedder=AxisEmbedder(np.eye(3, 384)))
    probs = clf.scores("please draw this")
    assert max(probs, key=probs.get) == "draw" and abs(sum(probs.values()) - 1) < 1e-6
    assert probs["draw"] == pytest.approx(np.exp(10) / (np.exp(10) + 2), rel=1e-4)
    with pytest.raises(ClassifierError, match="dimensions"):
        clf.probabilities_of(np.ones((1, 5)))


def test_a_missing_or_foreign_model_file_is_refused(tmp_path):
    with pytest.raises(ClassifierError, match="missing"):
        RouteClassifier(tmp_path / "none.npz")
    bad = write_model(tmp_path / "bad.npz", np.zeros((3, 4)), [0, 0, 0], meta={"format": "other", "classes": ["a"]})
    with pytest.raises(ClassifierError, match="not a"):
        RouteClassifier(bad)


# -- combination and costs -----------------------------------------------------------------------
def test_a_missed_search_costs_more_than_an_unneeded_one():
    assert COSTS["search"]["answer"] == COSTS["search"]["draw"] == MISS_SEARCH_COST > 1
    assert COSTS["answer"]["search"] == COSTS["draw"]["search"] == 1.0
    # answer is the most probable, but not by enough to risk missing a needed search
    probs = {"search": 0.35, "answer": 0.55, "draw": 0.10}
    assert max(probs, key=probs.get) == "answer" and cheapest(probs) == "search"
    assert expected_costs(probs)["search"] < expected_costs(probs)["answer"]
    # a clear answer stays an answer; draw vs answer is weighed evenly
    assert cheapest({"search": 0.1, "answer": 0.85, "draw": 0.05}) == "answer"
    assert cheapest({"search": 0.0, "answer": 0.45, "draw": 0.55}) == "draw"


def test_combination_is_log_linear_and_either_evidence_can_be_missing():
    llm = {"search": 0.2, "answer": 0.7, "draw": 0.1}
    clf = {"search": 0.9, "answer": 0.05, "draw": 0.05}
    both = combine(llm, clf, Combination(w_llm=1.0, w_clf=1.0))
    z = np.log([0.2 * 0.9, 0.7 * 0.05, 0.1 * 0.05])
    assert [both[r] for r in ROUTES] == pytest.approx(list(np.exp(z) / np.exp(z).sum()))
    assert combine(llm, None, Combination()) == pytest.approx(llm)
    assert combine(None, clf, Combination(w_llm=5.0)) == pytest.approx(clf)
    biased = combine(None, UNBIASED, Combination(bias=(1.0, 0.0, 0.0)))
    assert biased["search"] > biased["answer"] == pytest.approx(biased["draw"])
    # a probability of exactly 0 is floored, so one voice cannot veto a route on its own
    assert combine({"search": 0.0, "answer": 1.0, "draw": 0.0}, clf, Combination())["search"] > 0
    assert vote_probabilities("draw") == pytest.approx({"search": 0.1, "answer": 0.1, "draw": 0.8})


# -- the router with both pieces of evidence --------------------------------------------------------
@pytest.fixture
def classifier(tmp_path):
    W = np.eye(3, 384) * 6
    return RouteClassifier(write_model(tmp_path / "m.npz", W, [0, 0, 0]), embedder=AxisEmbedder(np.eye(3, 384)))


def test_router_without_classifier_is_the_llm_alone():
    llm = ScriptedLLM(labels=[{"search": 0.2, "answer": 0.7, "draw": 0.1}, UNBIASED, UNBIASED, UNBIASED])
    d = Router(llm).decide("a question")
    assert d.route == "answer" and d.evidence["classifier"] == {"used": False, "why": "no classifier configured (LLM only)"}
    assert "combined" not in d.evidence and d.evidence["llm"]["scores"]["answer"] == pytest.approx(0.7)


def test_classifier_overrules_a_weak_llm_and_the_trace_says_why(classifier):
    # The LLM leans answer (0.55); the classifier is sure it is a search: the fact is looked up.
    llm = ScriptedLLM(labels=[{"search": 0.35, "answer": 0.55, "draw": 0.10}, UNBIASED, UNBIASED, UNBIASED])
    d = Router(llm, classifier=classifier).decide("how tall is it (search)")
    assert d.route == "search" and not d.fallback
    ev = d.evidence
    assert ev["llm"]["choice"] == "answer" and ev["llm"]["calibrated"] and ev["llm"]["method"] == "logits"
    assert ev["classifier"]["used"] and max(ev["classifier"]["scores"], key=ev["classifier"]["scores"].get) == "search"
    assert set(ev["combined"]["scores"]) == set(ROUTES) and ev["combined"]["miss_search_cost"] == MISS_SEARCH_COST
    assert d.scores == ev["combined"]["scores"]
    assert "LLM answer 0.55" in d.reason and "classifier search" in d.reason and "combined" in d.reason


def test_cost_turns_a_close_call_into_a_search(classifier):
    # Combined answer 0.5 vs search 0.4: answer is likelier but a missed search costs 3x.
    llm = ScriptedLLM(labels=[{"search": 0.4, "answer": 0.5, "draw": 0.1}, UNBIASED, UNBIASED, UNBIASED])
    router = Router(llm, classifier=classifier)
    router._classifier.combination = Combination(w_llm=1.0, w_clf=0.0)  # the LLM's voice only
    d = router.decide("no route named here")
    assert d.route == "search" and "missed search costs 3x" in d.reason
    assert d.evidence["combined"]["scores"]["answer"] > d.evidence["combined"]["scores"]["search"]


def test_one_word_llm_choice_is_a_vote_and_the_classifier_still_works(classifier):
    llm = ScriptedLLM(labels=["answer"])
    llm.label_method = "json_schema"
    d = Router(llm, classifier=classifier).decide("show me this (draw)")
    assert d.evidence["llm"]["vote_as"]["answer"] == 0.8 and "scores" not in d.evidence["llm"]
    assert d.route == "draw" and "chose 'answer' by a JSON-schema-constrained reply, no probabilities" in d.reason


def test_a_broken_classifier_leaves_the_llm_to_decide(tmp_path):
    llm = ScriptedLLM(labels=[{"search": 0.1, "answer": 0.1, "draw": 0.8}, UNBIASED, UNBIASED, UNBIASED])
    router = Router(llm, classifier=RouteClassifier(write_model(tmp_path / "m.npz", np.zeros((3, 7)), [0, 0, 0]),
                                                    embedder=AxisEmbedder(np.eye(3, 384))))
    d = router.decide("anything")
    assert d.route == "draw" and not d.evidence["classifier"]["used"]
    assert "dimensions" in d.evidence["classifier"]["why"]


def test_failed_llm_still_falls_back_to_search_with_the_evidence(classifier):
    llm = ScriptedLLM(labels=[{"search": 0.5}, ValueError("boom")])
    d = Router(llm, classifier=classifier).decide("write a poem (answer)")
    assert d.fallback and d.route == "search" and d.attempts == 2 and len(d.errors) == 2
    assert d.evidence["classifier"]["used"]


def test_the_decide_node_puts_the_evidence_in_the_trace(tmp_path, classifier):
    from agent import Agent, Settings
    from agent.context import Toolbox
    from agent.trace import read_trace
    from tools.diffusion import ImageGenerator

    llm = ScriptedLLM(replies=["Rain taps the roof."], labels=[{"search": 0.2, "answer": 0.7, "draw": 0.1}]
                      + [UNBIASED] * 3)
    settings = Settings(out_dir=tmp_path / "runs", image=False)
    agent = Agent(settings, tools=Toolbox(settings, llm=llm, image=ImageGenerator(None),
                                          router=Router(llm, classifier=classifier)))
    result = agent.ask(text="Write a haiku (answer)")
    assert result.route == "answer"
    step = next(e for e in read_trace(tmp_path / "runs" / result.run_id) if e.step == "decide")
    ev = step.data["evidence"]
    assert set(ev) == {"llm", "classifier", "combined"}
    assert ev["llm"]["scores"]["answer"] == pytest.approx(0.7) and ev["classifier"]["used"]
    assert step.data["scores"] == ev["combined"]["scores"] and "classifier answer" in step.reason


def test_the_agent_builds_its_router_with_the_shipped_classifier():
    from agent import Settings
    from agent.context import Toolbox

    box = Toolbox(Settings(), llm=ScriptedLLM())
    assert isinstance(box.router.classifier, RouteClassifier) and box.router.classifier.path == MODEL_PATH


# -- the real starter models on spoken (lower-case) requests ----------------------------------------
@pytest.fixture(scope="module")
def real_router():
    from tools.llm import STARTER_LLM, LocalLLM

    llm = LocalLLM(STARTER_LLM)
    llm.load()
    return Router(llm, classifier=True)


@pytest.mark.slow
@pytest.mark.parametrize("request_text, route", [
    ("who wrote the old man and the sea", "search"),
    ("how long is the river thames", "search"),
    ("how tall is the eiffel tower", "search"),
    ("what did marie curie win", "search"),
    ("draw me a red bicycle", "draw"),
    ("can you show me a cat eating fish", "draw"),
    ("write a haiku about rain", "answer"),
    ("what is 23 times 4", "answer"),
])
def test_real_router_on_spoken_requests(real_router, request_text, route):
    d = real_router.decide(request_text)
    assert d.route == route, d.reason
    assert d.evidence["classifier"]["used"] and "combined" in d.evidence
