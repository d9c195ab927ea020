"""The second opinion on the route: a logistic-regression classifier over MiniLM sentence embeddings,
and how its probabilities are combined with the LLM's calibrated label scores.

The weights live in ``agent/route_model.npz`` (a few KB: one 3 x 384 matrix, biases, the combination
weights and a JSON description of how they were made; no training text). ``bench/train_router.py``
rebuilds the file from ``../shared/data`` (seeded, reproducible). At run time the classifier is a dot
product over the request's embedding (the MiniLM model the offline Wikipedia already loads), so it
needs neither the training data nor any training library.

The combination is log-linear, ``z_r = w_llm * log p_llm(r) + w_clf * log p_clf(r) + b_r``, then a
softmax; the route is the one with the least **expected cost** under those probabilities, where a missed
search costs more than an unneeded one (``MISS_SEARCH_COST``): a wrong direct answer about a named
thing is an invented fact, while an extra search only costs a second or two.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.state import ROUTES

MODEL_PATH = Path(__file__).resolve().parent / "route_model.npz"
FORMAT = "askdraw-route-model/1"

# Cost of deciding column when row was right. A search that was needed but not done yields an
# invented fact (the costly error), so it costs MISS_SEARCH_COST; every other mistake 1.
# Fixed by policy, not fitted: bench/train_router.py reports what it does on its validation split.
MISS_SEARCH_COST = 3.0
COSTS: dict[str, dict[str, float]] = {
    gold: {pred: 0.0 if pred == gold else (MISS_SEARCH_COST if gold == "search" else 1.0) for pred in ROUTES}
    for gold in ROUTES
}
# Probabilities below this carry no information we trust (and log(0) would veto a route outright).
FLOOR = 1e-4
# An LLM that only names a label (an endpoint with no logprobs: JSON schema or a parsed word) gives no
# probabilities; its vote counts as this probability for the named label, the rest shared equally.
VOTE_PROBABILITY = 0.8


class ClassifierError(RuntimeError):
    """The route classifier's weights are missing or unusable."""


@dataclass(frozen=True)
class Combination:
    """Weights of the log-linear combination (fitted on a validation split by bench/train_router.py)."""

    w_llm: float = 1.0
    w_clf: float = 1.0
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per route, in ROUTES order

    def as_dict(self) -> dict[str, Any]:
        return {"w_llm": self.w_llm, "w_clf": self.w_clf, "bias": dict(zip(ROUTES, self.bias))}


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def vote_probabilities(choice: str) -> dict[str, float]:
    """A one-word LLM choice as probabilities (see VOTE_PROBABILITY)."""
    rest = (1.0 - VOTE_PROBABILITY) / (len(ROUTES) - 1)
    return {r: VOTE_PROBABILITY if r == choice else rest for r in ROUTES}


def combine(llm: dict[str, float] | None, clf: dict[str, float] | None, weights: Combination) -> dict[str, float]:
    """Combined route probabilities from whichever evidence is there (either may be None)."""
    z = np.array(weights.bias, dtype=np.float64)
    for probs, w in ((llm, weights.w_llm), (clf, weights.w_clf)):
        if probs is not None:
            z = z + w * np.log(np.maximum([float(probs[r]) for r in ROUTES], FLOOR))
    p = softmax(z)
    return {r: float(p[i]) for i, r in enumerate(ROUTES)}


def expected_costs(probs: dict[str, float]) -> dict[str, float]:
    """Expected cost of each decision under ``probs`` (COSTS)."""
    return {pred: sum(probs[gold] * COSTS[gold][pred] for gold in ROUTES) for pred in ROUTES}


def cheapest(probs: dict[str, float]) -> str:
    costs = expected_costs(probs)
    return min(ROUTES, key=lambda r: (costs[r], ROUTES.index(r)))  # ties: search first


class RouteClassifier:
    """Route probabilities of a request from its sentence embedding: ``softmax(W @ e + b)``.

    ``path``: the weights file (default ``agent/route_model.npz``), read at construction (tiny).
    ``embedder``: a :class:`tools.embeddings.Embedder` of the model the weights were trained on; by
    default the one the offline Wikipedia shares (:func:`tools.wikipedia.default_embedder`), built and
    loaded on the first request, so an agent that routes and searches loads MiniLM once.
    """

    def __init__(self, path: str | Path | None = None, *, embedder: Any = None) -> None:
        self.path = Path(path) if path is not None else MODEL_PATH
        try:
            with np.load(self.path, allow_pickle=False) as data:
                self.meta: dict[str, Any] = json.loads(str(data["meta"]))
                self.W = np.asarray(data["W"], dtype=np.float32)
                self.b = np.asarray(data["b"], dtype=np.float32)
                self.combination = Combination(
                    w_llm=float(data["w_llm"]), w_clf=float(data["w_clf"]),
                    bias=tuple(float(x) for x in data["combo_bias"]))  # type: ignore[arg-type]
        except FileNotFoundError:
            raise ClassifierError(f"route model {self.path} is missing (rebuild: bench/train_router.py)") from None
        except (OSError, KeyError, ValueError) as exc:
            raise ClassifierError(f"route model {self.path} is unusable: {exc}") from exc
        if self.meta.get("format") != FORMAT or tuple(self.meta.get("classes", ())) != ROUTES:
            raise ClassifierError(f"route model {self.path} is not a {FORMAT} file for routes {ROUTES}")
        if self.W.ndim != 2 or self.W.shape[0] != len(ROUTES) or self.b.shape != (len(ROUTES),):
            raise ClassifierError(f"route model {self.path} has weights of shape {self.W.shape}")
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def embedder_name(self) -> str:
        return str(self.meta.get("embedder", "starter:minilm"))

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from tools.wikipedia import default_embedder

                shared = default_embedder()
                if shared.name == self.embedder_name:
                    self._embedder = shared
                else:  # pragma: no cover - only if the default embedder changes model
                    from tools.embeddings import Embedder

                    self._embedder = Embedder(self.embedder_name)
            return self._embedder

    @property
    def name(self) -> str:
        return f"logistic regression over {self.embedder_name} embeddings ({self.path.name})"

    def probabilities_of(self, vectors: np.ndarray) -> np.ndarray:
        """Route probabilities (rows in ROUTES order) of embedding rows."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.W.shape[1]:
            raise ClassifierError(f"embeddings have {vectors.shape[1]} dimensions; the route model expects "
                                  f"{self.W.shape[1]} ({self.embedder_name})")
        return softmax(vectors.astype(np.float64) @ self.W.T.astype(np.float64) + self.b)

    def scores(self, request: str) -> dict[str, float]:
        p = self.probabilities_of(self.embedder.encode([request]))[0]
        return {r: float(p[i]) for i, r in enumerate(ROUTES)}


def finite(probs: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in probs.values())
