"""The route decision: the LLM scores the three allowed labels; nothing free-form is parsed.

The model sees a short policy and a few examples, then the request; each label's probability as
its reply is read from the logits (:meth:`tools.llm.LocalLLM.score_labels`), or over an
OpenAI-compatible endpoint from its logprobs, else a JSON-schema-constrained or validated one-word
choice (:meth:`tools.llm.EndpointLLM.score_labels`). Small models lean
toward some labels whatever the input, so the probabilities are calibrated once per model by the
scores of content-free inputs ("Calibrate Before Use", Zhao et al. 2021).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from agent.state import ROUTES, Route
from tools.common import load_prompt

SAFE_ROUTE: Route = "search"
_MEANING = {
    "search": "asks for a fact about a specific named thing, so look it up on Wikipedia",
    "answer": "needs no outside facts, so answer directly",
    "draw": "asks to see something, so draw the request itself",
}


class DecisionError(ValueError):
    """The model's decision could not be used (exception, missing labels or not a number)."""


@dataclass
class RouteDecision:
    route: Route
    reason: str
    scores: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    fallback: bool = False
    errors: list[str] = field(default_factory=list)


def _unavailable(exc: BaseException) -> bool:
    from tools.endpoint import EndpointUnavailable

    return isinstance(exc, EndpointUnavailable)


def _examples() -> list[tuple[str, str]]:
    rows = []
    for line in load_prompt("route_examples.txt").splitlines():
        if line.strip() and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((text.strip(), label.strip()))
    return rows


def _calibration_inputs() -> list[str]:
    lines = load_prompt("route_calibration.txt").splitlines()
    inputs = [ln.strip() for ln in lines if not ln.startswith("#")]
    return [x for x in dict.fromkeys(inputs)] or ["N/A"]


class Router:
    def __init__(self, llm, *, calibrate: bool = True) -> None:
        self.llm = llm
        self.calibrate = calibrate
        self._bias: dict[str, float] | None = None
        self._lock = threading.Lock()

    def messages(self, request: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": load_prompt("route_system.txt")}]
        for text, label in _examples():
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
        messages.append({"role": "user", "content": request})
        return messages

    def _scores(self, request: str) -> dict[str, float]:
        scores = self.llm.score_labels(self.messages(request), list(ROUTES))
        if not isinstance(scores, dict) or set(scores) != set(ROUTES):
            raise DecisionError(f"expected scores for {', '.join(ROUTES)}, got {scores!r}"[:200])
        values = [float(scores[r]) for r in ROUTES]
        if any(math.isnan(v) or v < 0 for v in values) or sum(values) <= 0:
            raise DecisionError(f"scores are not probabilities: {scores!r}"[:200])
        return {r: float(scores[r]) for r in ROUTES}

    @property
    def method(self) -> str:
        """How the LLM scores labels: 'logits' (local model), 'logprobs', 'json_schema' or 'parse'
        (an endpoint; see :class:`tools.llm.EndpointLLM`)."""
        return getattr(self.llm, "label_method", None) or "logits"

    def bias(self) -> dict[str, float]:
        """Mean label probabilities on content-free inputs (computed once per router)."""
        with self._lock:
            if self._bias is None:
                rows = [self._scores(x) for x in _calibration_inputs()]
                self._bias = {r: max(sum(row[r] for row in rows) / len(rows), 1e-6) for r in ROUTES}
            return self._bias

    def decide(self, request: str) -> RouteDecision:
        """Score the routes; retry once on a malformed decision, then fall back to search."""
        errors: list[str] = []
        for attempt in (1, 2):
            try:
                raw = self._scores(request)
                method = self.method
                # A constrained choice (JSON schema, parsed label) has no probabilities to calibrate.
                calibrated = self.calibrate and method in ("logits", "logprobs")
                bias = self.bias() if calibrated else {r: 1.0 for r in ROUTES}
            except Exception as exc:  # the model failed: recorded, retried, then the safe route
                if _unavailable(exc):
                    raise  # a server that is down or refuses: no decision can be had; the run stops
                errors.append(f"attempt {attempt}: {type(exc).__name__}: {exc}"[:300])
                continue
            adjusted = {r: raw[r] / bias[r] for r in ROUTES}
            total = sum(adjusted.values())
            probs = {r: round(adjusted[r] / total, 4) for r in ROUTES}
            route: Route = max(probs, key=probs.get)  # type: ignore[arg-type]
            others = ", ".join(f"{r} {probs[r]:.2f}" for r in ROUTES if r != route)
            if method in ("logits", "logprobs"):
                how = ("calibrated " if calibrated else "") + "LLM label scores"
                if method == "logprobs":
                    how += " from the endpoint's logprobs"
                reason = f"the request {_MEANING[route]} ({how}: {route} {probs[route]:.2f}; {others})"
            else:
                how = "a JSON-schema-constrained reply" if method == "json_schema" else "its one-word reply"
                reason = f"the request {_MEANING[route]} (the LLM chose '{route}' by {how}; no probabilities)"
            return RouteDecision(route=route, reason=reason, scores=probs, attempts=attempt, errors=errors)
        return RouteDecision(
            route=SAFE_ROUTE,
            reason=f"the route decision failed twice ({errors[-1]}); fell back to the safe route '{SAFE_ROUTE}'",
            attempts=2, fallback=True, errors=errors,
        )
