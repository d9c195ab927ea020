"""The route decision: the LLM scores the three allowed labels; nothing free-form is parsed.

The model sees a short policy and a few examples, then the request; each label's probability as
its reply is read from the logits (:meth:`tools.llm.LocalLLM.score_labels`), or over an
OpenAI-compatible endpoint from its logprobs, else a JSON-schema-constrained or validated one-word
choice (:meth:`tools.llm.EndpointLLM.score_labels`). Small models lean
toward some labels whatever the input, so the probabilities are calibrated once per model by the
scores of content-free inputs ("Calibrate Before Use", Zhao et al. 2021).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent.route_classifier import (MISS_SEARCH_COST, RouteClassifier, cheapest, combine, expected_costs,
                                    vote_probabilities)
from agent.state import ROUTES, Route
from tools.chat import unreachable
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
    # The route tool call's arguments ({"query": ...} or {"scene": ...}) when the decision was one
    # tool call (decide="tools") and the route taken is the one the model called; else empty.
    tool_args: dict[str, Any] = field(default_factory=dict)
    # Each piece of evidence: {"llm": {...}, "classifier": {...}, "combined": {...}} (see Router.decide)
    evidence: dict[str, Any] = field(default_factory=dict)


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


TOOL_ROUTES: dict[str, Route] = {"search_wikipedia": "search", "answer_directly": "answer", "draw": "draw"}
DECIDE_MODES = ("auto", "labels", "tools")


def route_tools() -> list[dict[str, Any]]:
    """The three tools of a tool-call decision (prompts/route_tools.json, OpenAI format)."""
    return json.loads(load_prompt("route_tools.json"))


class Router:
    """The route decision. ``Router(llm)`` decides by the LLM's calibrated label scores alone;
    ``classifier=`` adds the embedding classifier (a :class:`RouteClassifier`, or ``True`` for the
    shipped ``agent/route_model.npz``, loaded on the first decision) and combines both.

    ``decide``: "labels" scores the three labels (probabilities where the model gives them);
    "tools" makes the LLM's part one native tool call among ``search_wikipedia(query)``,
    ``answer_directly()`` and ``draw(scene)`` (``bind_tools``; the arguments become the search
    query and the image prompt), falling back to labels for a model that cannot call tools;
    "auto" uses labels where they come with probabilities, else a tool call where the model can
    make one (and the label choice when that call fails: then labels only, for this router)."""

    def __init__(self, llm, *, calibrate: bool = True, classifier: RouteClassifier | bool | None = None,
                 decide: str = "labels") -> None:
        if decide not in DECIDE_MODES:
            raise ValueError(f"decide must be one of {', '.join(DECIDE_MODES)}, not {decide!r}")
        self.llm = llm
        self.decide_mode = decide
        self._tools_failed = False  # "auto": a tool call failed once, so the labels decide
        self.calibrate = calibrate
        self._bias: dict[str, float] | None = None
        self._lock = threading.Lock()
        self._classifier: RouteClassifier | bool | None = classifier or None

    @property
    def classifier(self) -> RouteClassifier:
        with self._lock:
            if self._classifier is True:
                self._classifier = RouteClassifier()
            assert isinstance(self._classifier, RouteClassifier)
            return self._classifier

    def load_classifier(self) -> None:
        """Load the classifier and its embedding model now (no-op for an LLM-only router); a
        classifier that cannot load is left for :meth:`decide` to report in the trace."""
        if self._classifier is None:
            return
        try:
            self.classifier.embedder.load()
        except Exception:  # noqa: BLE001 - decide() says why and lets the LLM decide alone
            pass

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
        """How the LLM scores labels: 'logits' (local model), 'logprobs', 'json_schema', 'structured'
        or 'parse' (an endpoint or another LangChain model; see :class:`tools.llm.EndpointLLM`,
        :class:`tools.chat.LangChainLLM`)."""
        return getattr(self.llm, "label_method", None) or "logits"

    @property
    def can_call_tools(self) -> bool:
        return bool(getattr(self.llm, "supports_tools", False)) and hasattr(self.llm, "choose_tool")

    def uses_tools(self) -> bool:
        """Is the LLM's part of the next decision a tool call? ("auto": once label scoring has
        shown it gives no probabilities, for a model that can call tools.)"""
        if self.decide_mode == "tools":
            return self.can_call_tools
        if self.decide_mode == "auto":
            return (self.can_call_tools and not self._tools_failed
                    and getattr(self.llm, "label_method", None) not in (None, "logits", "logprobs"))
        return False

    def tool_messages(self, request: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": load_prompt("route_tools_system.txt")},
                {"role": "user", "content": request}]

    def tool_choice(self, request: str) -> tuple[Route, dict[str, Any]]:
        """The route the LLM's one tool call names, and the call's arguments."""
        name, args = self.llm.choose_tool(self.tool_messages(request), route_tools())
        if name not in TOOL_ROUTES:
            raise DecisionError(f"the model called {name!r}, not one of {', '.join(TOOL_ROUTES)}")
        return TOOL_ROUTES[name], {k: v for k, v in args.items() if isinstance(v, str) and v.strip()}

    def bias(self) -> dict[str, float]:
        """Mean label probabilities on content-free inputs (computed once per router)."""
        with self._lock:
            if self._bias is None:
                rows = [self._scores(x) for x in _calibration_inputs()]
                self._bias = {r: max(sum(row[r] for row in rows) / len(rows), 1e-6) for r in ROUTES}
            return self._bias

    def llm_probabilities(self, request: str) -> dict[str, float]:
        """The LLM's calibrated label probabilities (raises what the model raises)."""
        raw = self._scores(request)
        calibrated = self.calibrate and self.method in ("logits", "logprobs")
        bias = self.bias() if calibrated else {r: 1.0 for r in ROUTES}
        adjusted = {r: raw[r] / bias[r] for r in ROUTES}
        total = sum(adjusted.values())
        return {r: adjusted[r] / total for r in ROUTES}

    def _classifier_evidence(self, request: str) -> dict[str, Any]:
        """The classifier's probabilities, or why there are none (it never stops a decision)."""
        if self._classifier is None:
            return {"used": False, "why": "no classifier configured (LLM only)"}
        try:
            clf = self.classifier
            t0 = time.perf_counter()
            probs = clf.scores(request)
            if set(probs) != set(ROUTES) or not all(math.isfinite(v) for v in probs.values()):
                raise DecisionError(f"classifier scores are not probabilities: {probs!r}"[:200])
        except Exception as exc:  # noqa: BLE001 - a broken classifier leaves the LLM to decide alone
            return {"used": False, "why": f"the classifier failed: {type(exc).__name__}: {exc}"[:300]}
        return {"used": True, "scores": _rounded(probs), "model": clf.name,
                "ms": round((time.perf_counter() - t0) * 1000, 1)}

    def _llm_part(self, request: str, notes: list[str]) -> tuple[str, dict[str, float], dict[str, Any]]:
        """The LLM's evidence: (method, probabilities, tool-call arguments). A tool call where
        :meth:`uses_tools` says so; for "auto", a failed tool call leaves the labels to decide, and
        this router does not ask for tool calls again."""

        def by_tool(why: str) -> tuple[str, dict[str, float], dict[str, Any]] | None:
            try:
                choice, args = self.tool_choice(request)
            except Exception as exc:  # noqa: BLE001 - "tools": retried, then the fallback; "auto": labels
                if self.decide_mode == "tools" or unreachable(exc):
                    raise
                self._tools_failed = True
                notes.append(f"{why}; the tool call failed ({type(exc).__name__}: {exc}), so the labels "
                             "decide"[:300])
                return None
            if self.decide_mode == "auto":
                notes.append(f"{why}; the model's tool call decided")
            return "tools", vote_probabilities(choice), args

        if self.uses_tools():
            done = by_tool(f"label scoring gives no probabilities with this model ({self.method})")
            if done is not None:
                return done
        probs = self.llm_probabilities(request)
        method = self.method  # after scoring: an endpoint learns on its first call which method works
        if self.uses_tools():  # "auto" has just learnt that this model gives no probabilities
            done = by_tool(f"label scoring gave no probabilities ({method})")
            if done is not None:
                return done
        return method, probs, {}

    def decide(self, request: str) -> RouteDecision:
        """Combine the LLM's label scores with the classifier's; retry the LLM once on a malformed
        decision, then fall back to search."""
        errors: list[str] = []
        clf = self._classifier_evidence(request)
        notes: list[str] = []
        if self.decide_mode == "tools" and not self.can_call_tools:
            notes.append(f"decide=tools, but {getattr(self.llm, 'name', 'the LLM')} cannot call tools: label scores "
                         "decided")
        for attempt in (1, 2):
            tool_args: dict[str, Any] = {}
            try:
                t0 = time.perf_counter()
                method, llm_probs, tool_args = self._llm_part(request, notes)
                llm_choice = max(llm_probs, key=llm_probs.get)  # type: ignore[assignment]
                llm_ms = (time.perf_counter() - t0) * 1000
            except Exception as exc:  # the model failed: recorded, retried, then the safe route
                if unreachable(exc):
                    raise  # a server that is down or refuses: no decision can be had; the run stops
                errors.append(f"attempt {attempt}: {type(exc).__name__}: {exc}"[:300])
                continue
            calibrated = self.calibrate and method in ("logits", "logprobs")
            has_probs = method in ("logits", "logprobs")
            llm_ev: dict[str, Any] = {"method": method, "calibrated": calibrated, "choice": llm_choice,
                                      "ms": round(llm_ms, 1)}
            if method == "tools":
                llm_ev["tool_call"] = {"name": next(k for k, v in TOOL_ROUTES.items() if v == llm_choice),
                                       "args": tool_args}
                choices = getattr(self.llm, "_tool_choices", None)
                if choices:  # "auto" when the server refused a required call
                    llm_ev["tool_choice"] = choices[0]
            if notes:
                llm_ev["notes"] = notes
            if has_probs:
                llm_ev["scores"] = _rounded(llm_probs)
                llm_as_probs = llm_probs
            else:  # a one-word choice: a vote of fixed strength
                llm_as_probs = vote_probabilities(llm_choice)
                llm_ev["vote_as"] = _rounded(llm_as_probs)
            evidence: dict[str, Any] = {"llm": llm_ev, "classifier": clf}
            if clf["used"]:
                weights = self.classifier.combination
                probs = combine(llm_as_probs, clf["scores"], weights)
                costs = expected_costs(probs)
                route: Route = cheapest(probs)  # type: ignore[assignment]
                evidence["combined"] = {"scores": _rounded(probs), "expected_cost": _rounded(costs),
                                        "weights": weights.as_dict(), "miss_search_cost": MISS_SEARCH_COST}
                reason = self._combined_reason(route, llm_ev, clf["scores"], probs)
                scores = _rounded(probs)
            else:
                route = llm_choice
                scores = _rounded(llm_probs)
                reason = self._llm_reason(route, method, calibrated, scores)
            return RouteDecision(route=route, reason=reason, scores=scores, attempts=attempt, errors=errors,
                                 evidence=evidence, tool_args=tool_args if route == llm_choice else {})
        return RouteDecision(
            route=SAFE_ROUTE,
            reason=f"the route decision failed twice ({errors[-1]}); fell back to the safe route '{SAFE_ROUTE}'",
            attempts=2, fallback=True, errors=errors, evidence={"llm": {"method": self.method, "errors": errors},
                                                                "classifier": clf},
        )

    @staticmethod
    def _llm_reason(route: str, method: str, calibrated: bool, probs: dict[str, float]) -> str:
        others = ", ".join(f"{r} {probs[r]:.2f}" for r in ROUTES if r != route)
        if method in ("logits", "logprobs"):
            how = ("calibrated " if calibrated else "") + "LLM label scores"
            if method == "logprobs":
                how += " from the endpoint's logprobs"
            return f"the request {_MEANING[route]} ({how}: {route} {probs[route]:.2f}; {others})"
        return f"the request {_MEANING[route]} (the LLM chose '{route}' by {_HOW[method]}; no probabilities)"

    @staticmethod
    def _combined_reason(route: str, llm: dict[str, Any], clf: dict[str, float], probs: dict[str, float]) -> str:
        if "scores" in llm:
            llm_says = f"LLM {llm['choice']} {llm['scores'][llm['choice']]:.2f}"
            if llm.get("method") == "logprobs":
                llm_says += " from the endpoint's logprobs"
        else:
            llm_says = f"the LLM chose '{llm['choice']}' by {_HOW[llm['method']]}, no probabilities"
        clf_choice = max(clf, key=clf.get)
        clf_says = f"classifier {clf_choice} {clf[clf_choice]:.2f}"
        combined = ", ".join(f"{r} {probs[r]:.2f}" for r in ROUTES)
        text = f"the request {_MEANING[route]} ({llm_says}; {clf_says}; combined {combined}"
        top = max(probs, key=probs.get)
        if route != top:
            text += (f"; search chosen over {top} because a missed search costs {MISS_SEARCH_COST:g}x "
                     "an unneeded one")
        elif llm["choice"] != clf_choice:
            text += f"; the evidence disagreed and {route} weighed more"
        return text + ")"


_HOW = {"json_schema": "a JSON-schema-constrained reply", "structured": "a structured reply",
        "tools": "a tool call", "parse": "its one-word reply"}


def _rounded(probs: dict[str, float]) -> dict[str, float]:
    return {r: round(float(probs[r]), 4) for r in ROUTES}
