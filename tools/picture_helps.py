"""Does a picture help this request? Decided per turn, not assumed.

Arithmetic, greetings, advice, translations, definitions of abstract ideas and the like get no
picture; questions about things that can be seen (animals, places, buildings, artworks, people,
vehicles, weather) and every draw request get one. The decision is:

1. forced by the caller (``--image`` / ``Agent.ask(image=True)``): a picture;
2. the draw route: always a picture (drawing is what was asked);
3. arithmetic that :func:`tools.arithmetic.compute` can evaluate: no picture;
4. otherwise a logistic regression over the request's MiniLM sentence embedding (the model the
   route classifier and the offline Wikipedia already load), with a threshold on
   p(no picture) fitted on the dev split of ``bench/data/picture_helps.jsonl``. When it says
   "no picture", the reason names the nearest labelled kind (greeting, advice, ...): the closest
   of the per-kind centroids stored with the weights.

The weights live in ``tools/picture_helps.npz`` (one 384-vector, a bias, the threshold, one centroid
per kind and a JSON description; no training text); ``bench/eval_picture_helps.py --fit`` rebuilds
it from the dev split and reports both splits.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_PATH = Path(__file__).resolve().parent / "picture_helps.npz"
FORMAT = "askdraw-picture-helps/1"

# What each labelled kind of "no picture" request is called in the reason a user reads.
KIND_PHRASES: dict[str, str] = {
    "arithmetic": "arithmetic",
    "greeting": "a greeting or small talk",
    "advice": "a request for advice",
    "translation": "a translation",
    "abstract": "a question about an abstract idea",
    "language": "a question about words or spelling",
    "writing": "a request for text (a poem, an email, a joke)",
    "opinion": "a question of opinion",
    "fact-date": "a date or figure about something that cannot be seen",
    "code": "a programming question",
}


@dataclass(frozen=True)
class PictureDecision:
    """Whether this turn gets a picture, and why (``how``: forced | draw | arithmetic | classifier | fallback)."""

    helps: bool
    reason: str
    how: str
    p_no_picture: float | None = None
    kind: str | None = None  # the nearest "no picture" kind, when the classifier decided

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class PictureModel:
    """``p(no picture) = sigmoid(w . e + b)`` over a sentence embedding ``e``, a threshold, and the
    kind centroids that name the reason. ``embedder``: default the shared MiniLM (lazy)."""

    def __init__(self, path: str | Path | None = None, *, embedder: Any = None) -> None:
        self.path = Path(path) if path is not None else MODEL_PATH
        with np.load(self.path, allow_pickle=False) as data:
            self.meta: dict[str, Any] = json.loads(str(data["meta"]))
            self.w = np.asarray(data["w"], dtype=np.float64)
            self.b = float(data["b"])
            self.threshold = float(data["threshold"])
            self.centroids = np.asarray(data["centroids"], dtype=np.float64)
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a {FORMAT} file")
        self.kinds: list[str] = list(self.meta["kinds"])
        if self.centroids.shape != (len(self.kinds), self.w.shape[0]):
            raise ValueError(f"{self.path}: centroids of shape {self.centroids.shape} for {len(self.kinds)} kinds")
        self._embedder = embedder
        self._lock = threading.Lock()

    @property
    def embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from tools.wikipedia import default_embedder

                self._embedder = default_embedder()
            return self._embedder

    def p_no_picture(self, vectors: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(np.asarray(vectors, dtype=np.float64)) @ self.w + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def nearest_kind(self, vector: np.ndarray) -> str:
        return self.kinds[int(np.argmax(self.centroids @ np.asarray(vector, dtype=np.float64)))]

    def judge(self, text: str) -> PictureDecision:
        vector = self.embedder.encode([text])[0]
        p = float(self.p_no_picture(vector)[0])
        if p < self.threshold:
            return PictureDecision(True, f"a picture helps: this is about something that can be shown "
                                   f"(p(no picture) {p:.2f} < {self.threshold:.2f})", "classifier", round(p, 3))
        kind = self.nearest_kind(vector)
        return PictureDecision(False, f"no picture: this reads as {KIND_PHRASES.get(kind, kind)}, where a picture "
                               f"adds nothing (p(no picture) {p:.2f} >= {self.threshold:.2f}); --image (image=True) draws one anyway",
                               "classifier", round(p, 3), kind)


_default: PictureModel | None = None
_default_lock = threading.Lock()


def default_model() -> PictureModel:
    global _default
    with _default_lock:
        if _default is None:
            _default = PictureModel()
        return _default


def decide_picture(question: str, route: str | None, *, forced: bool | None = None,
                   model: PictureModel | None = None) -> PictureDecision:
    """Whether the turn answering ``question`` on ``route`` gets a picture. ``forced`` True: always
    (the caller asked for one). A classifier that cannot run (missing weights or embedder) does not
    cost the user a picture: the turn gets one and the reason says why the decision was not made."""
    if forced:
        return PictureDecision(True, "a picture was asked for (--image / image=True)", "forced")
    if route == "draw":
        return PictureDecision(True, "the draw route always draws", "draw")
    from tools.arithmetic import compute

    computed = compute(question)
    if computed is not None:
        return PictureDecision(False, f"no picture: {computed.expression} is arithmetic, where a picture adds "
                               "nothing; --image (image=True) draws one anyway", "arithmetic", kind="arithmetic")
    try:
        return (model or default_model()).judge(question)
    except Exception as exc:  # noqa: BLE001 - no decision is no reason to drop the picture
        from tools.text import exception_line

        return PictureDecision(True, f"a picture by default: the picture classifier failed ({exception_line(exc, 160)})",
                               "fallback")


__all__ = ["KIND_PHRASES", "MODEL_PATH", "PictureDecision", "PictureModel", "decide_picture", "default_model"]
