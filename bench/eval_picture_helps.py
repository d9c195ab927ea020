"""Does a picture help? The decision of ``tools/picture_helps.py`` on a labelled set of our own.

    .venv/bin/python bench/eval_picture_helps.py [--fit] [--json]

``bench/data/picture_helps.jsonl``: 279 requests (search-, answer- and draw-like) labelled ``helps``
true/false with a ``kind`` (animal, place, artwork, ... / arithmetic, greeting, advice, translation,
abstract, ...) and a fixed ``split``: dev (179) or report (100). The first 208 lines (dev 108, report
100) were committed before any decision code existed; 71 dev lines were added after the first fit
(named people, works, teams and places; thanks, opinions, stories), the report split untouched. Labelling rule: a picture helps when the request is about
something that can be seen (a creature, a place, a building, an artwork, a person, a vehicle, a
weather or sky phenomenon) or asks for a drawing; it does not for arithmetic, greetings and small
talk, advice, translations, word questions, text to write, opinions, code, definitions of abstract
ideas, and dates or figures about things that cannot be seen.

``--fit`` rebuilds ``tools/picture_helps.npz`` from the **dev split only**: a logistic regression over
MiniLM embeddings (L2 strength and the threshold on p(no picture) chosen by 5-fold cross-validation on
dev, least out-of-fold cost with a missed helpful picture costing 2 and an unneeded one 1; ties go to
the threshold nearest 0.5, then the stronger L2), then refitted on all of dev,
plus one centroid per "no picture" kind (names the reason). The report split is only ever scored.

Scores, per split: the classifier alone, and the whole decision (``decide_picture``: the draw route
always draws, computed arithmetic never does, then the classifier), each as accuracy and the
precision / recall of "no picture" (the class the decision adds). Also, read-only, the share of
``bench/data/natural_requests.jsonl`` (unlabelled for this) given no picture, per route. Writes
``bench/results/picture_helps.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402

from tools.picture_helps import FORMAT, MODEL_PATH, PictureModel, decide_picture  # noqa: E402

DATA = REPO / "bench" / "data" / "picture_helps.jsonl"
NATURAL = REPO / "bench" / "data" / "natural_requests.jsonl"
L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.2, 0.81, 0.05))
# A helpful picture left out costs this many unneeded pictures (fixed by policy, not fitted): the
# user asked about something visible and gets text only, while an unneeded picture costs time.
MISSED_PICTURE_COST = 2.0
FOLDS = 5
SEED = 0


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def fit_logreg(X: np.ndarray, y: np.ndarray, l2: float, iters: int = 30) -> tuple[np.ndarray, float]:
    """Binary logistic regression by Newton's method; L2 on the weights, not the bias."""
    n, d = X.shape
    A = np.hstack([X, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(A @ theta)))
        grad = A.T @ (p - y) / n + reg * theta
        hess = (A.T * (p * (1 - p))) @ A / n + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return theta[:-1], float(theta[-1])


def folds_of(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold number of each row."""
    rng = random.Random(seed)
    fold = np.zeros(len(y), dtype=int)
    for label in (0, 1):
        idx = [i for i in range(len(y)) if y[i] == label]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def out_of_fold(X: np.ndarray, y: np.ndarray, l2: float, fold: np.ndarray) -> np.ndarray:
    p = np.zeros(len(y))
    for f in range(fold.max() + 1):
        w, b = fit_logreg(X[fold != f], y[fold != f], l2)
        p[fold == f] = 1.0 / (1.0 + np.exp(-(X[fold == f] @ w + b)))
    return p


def fit(rows: list[dict], X: np.ndarray, embedder_name: str, out: Path) -> dict:
    """Choose L2 and threshold by cross-validation on ``rows`` (dev), refit, write ``out``."""
    y = np.array([0.0 if r["helps"] else 1.0 for r in rows])
    fold = folds_of(y, FOLDS, SEED)
    best: tuple | None = None
    grid = []
    for l2 in L2_GRID:
        p = out_of_fold(X, y, l2, fold)
        for t in THRESHOLDS:
            acc = float(((p >= t) == (y == 1)).mean())
            cost = float((MISSED_PICTURE_COST * ((p >= t) & (y == 0)) + ((p < t) & (y == 1))).sum())
            grid.append({"l2": l2, "threshold": t, "oof_accuracy": round(acc, 4), "oof_cost": cost})
            key = (-cost, -abs(t - 0.5), l2)
            if best is None or key > best[0]:
                best = (key, l2, t)
    assert best is not None
    _, l2, threshold = best
    w, b = fit_logreg(X, y, l2)
    kinds = sorted({r["kind"] for r in rows if not r["helps"]})
    centroids = np.stack([X[[i for i, r in enumerate(rows) if r["kind"] == k and not r["helps"]]].mean(0) for k in kinds])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    meta = {"format": FORMAT, "embedder": embedder_name, "kinds": kinds, "trained_on": f"{DATA.name} split=dev",
            "n": len(rows), "l2": l2, "threshold_how": f"{FOLDS}-fold CV on dev, least out-of-fold cost "
            f"(a missed helpful picture costs {MISSED_PICTURE_COST:g}, an unneeded one 1)",
            "oof_accuracy": next(g["oof_accuracy"] for g in grid if g["l2"] == l2 and g["threshold"] == threshold),
            "made": time.strftime("%Y-%m-%d")}
    np.savez(out, meta=np.array(json.dumps(meta)), w=w.astype(np.float32), b=np.float64(b),
             threshold=np.float64(threshold), centroids=centroids.astype(np.float32))
    return {"l2": l2, "threshold": threshold, "oof_accuracy": meta["oof_accuracy"], "kinds": kinds}


def scores(gold_no: list[bool], pred_no: list[bool]) -> dict:
    tp = sum(g and p for g, p in zip(gold_no, pred_no))
    fp = sum(p and not g for g, p in zip(gold_no, pred_no))
    fn = sum(g and not p for g, p in zip(gold_no, pred_no))
    tn = sum(not g and not p for g, p in zip(gold_no, pred_no))
    n = len(gold_no)
    return {"n": n, "accuracy": round((tp + tn) / max(1, n), 3),
            "no_picture_precision": round(tp / max(1, tp + fp), 3), "no_picture_recall": round(tp / max(1, tp + fn), 3),
            "confusion": {"no->no": tp, "no->picture": fn, "helps->no": fp, "helps->picture": tn}}


def evaluate(rows: list[dict], X: np.ndarray, model: PictureModel) -> dict:
    gold_no = [not r["helps"] for r in rows]
    clf_no = [bool(p >= model.threshold) for p in model.p_no_picture(X)]
    decisions = [decide_picture(r["text"], r["route"], model=model) for r in rows]
    dec_no = [not d.helps for d in decisions]
    errors = [{"text": r["text"], "kind": r["kind"], "gold": "helps" if r["helps"] else "no picture",
               "decided": "picture" if d.helps else "no picture", "how": d.how, "p_no_picture": d.p_no_picture}
              for r, d, g, p in zip(rows, decisions, gold_no, dec_no) if g != p]
    by_kind = {}
    for kind in sorted({r["kind"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["kind"] == kind]
        by_kind[kind] = f"{sum(gold_no[i] == dec_no[i] for i in idx)}/{len(idx)}"
    named = [(r["kind"], d.kind) for r, d in zip(rows, decisions) if not r["helps"] and not d.helps]
    return {"classifier": scores(gold_no, clf_no), "decision": scores(gold_no, dec_no),
            "reason_kind_right": f"{sum(a == b for a, b in named)}/{len(named)}",
            "decision_how": dict(Counter(d.how for d in decisions)), "correct_by_kind": by_kind, "errors": errors}


def natural(model: PictureModel) -> dict:
    rows = load(NATURAL)
    out = {}
    for route in ("search", "answer", "draw"):
        these = [r for r in rows if r["route"] == route]
        skipped = [r["text"] for r in these if not decide_picture(r["text"], route, model=model).helps]
        out[route] = {"n": len(these), "no_picture": len(skipped), "examples": skipped[:12]}
    return out


#: 120 requests labelled blind, by the labelling rule above, by a helper who saw neither the decision
#: code nor ``picture_helps.jsonl``; scored once, never fitted on (``--blind``).
BLIND = DATA.with_name("picture_helps_blind.jsonl")


def score_blind(as_json: bool) -> None:
    from tools.wikipedia import default_embedder

    embedder = default_embedder()
    rows = load(BLIND)
    X = embedder.encode([r["text"] for r in rows]).astype(np.float64)
    model = PictureModel(MODEL_PATH, embedder=embedder)
    result = evaluate(rows, X, model)
    summary = {"data": str(BLIND.relative_to(REPO)), "model": str(MODEL_PATH.relative_to(REPO)), "blind": result}
    headline = {"blind": {k: result["decision"][k] for k in ("n", "accuracy", "no_picture_precision", "no_picture_recall")}}
    out = save_results("picture_helps_blind", summary, headline, as_json=as_json)
    if as_json:
        return
    for what in ("classifier", "decision"):
        s = result[what]
        print(f"blind  {what:10} n={s['n']:3}  accuracy {s['accuracy']:.3f}  no-picture precision "
              f"{s['no_picture_precision']:.3f} recall {s['no_picture_recall']:.3f}  {s['confusion']}")
    for e in result["errors"]:
        print(f"       wrong: {e['text']!r} ({e['kind']}; gold {e['gold']}, decided {e['decided']} by {e['how']},"
              f" p={e['p_no_picture']})")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help=f"refit {MODEL_PATH.name} on the dev split first")
    parser.add_argument("--json", action="store_true", help="print only the JSON headline")
    parser.add_argument("--blind", action="store_true",
                        help=f"score only {BLIND.name}: requests labelled by a helper who saw neither the decision nor "
                             "the other set (never fitted on)")
    args = parser.parse_args()
    if args.blind:
        return score_blind(args.json)

    from tools.wikipedia import default_embedder

    embedder = default_embedder()
    rows = load(DATA)
    X = embedder.encode([r["text"] for r in rows]).astype(np.float64)
    dev = [i for i, r in enumerate(rows) if r["split"] == "dev"]
    report = [i for i, r in enumerate(rows) if r["split"] == "report"]
    fitted = None
    if args.fit:
        fitted = fit([rows[i] for i in dev], X[dev], embedder.name, MODEL_PATH)
    model = PictureModel(MODEL_PATH, embedder=embedder)
    t0 = time.perf_counter()
    summary = {
        "data": str(DATA.relative_to(REPO)), "model": str(MODEL_PATH.relative_to(REPO)), "meta": model.meta,
        "threshold": model.threshold, "fitted_now": fitted,
        "dev": evaluate([rows[i] for i in dev], X[dev], model),
        "report": evaluate([rows[i] for i in report], X[report], model),
        "natural_requests": natural(model),
    }
    ms = (time.perf_counter() - t0) * 1000 / (len(rows) + 240)
    summary["ms_per_decision_cached_embedder"] = round(ms, 2)
    headline = {s: {k: summary[s]["decision"][k] for k in ("n", "accuracy", "no_picture_precision", "no_picture_recall")}
                for s in ("dev", "report")}
    out = save_results("picture_helps", summary, headline, as_json=args.json)
    if args.json:
        return
    for split in ("dev", "report"):
        for what in ("classifier", "decision"):
            s = summary[split][what]
            print(f"{split:6} {what:10} n={s['n']:3}  accuracy {s['accuracy']:.3f}  no-picture precision "
                  f"{s['no_picture_precision']:.3f} recall {s['no_picture_recall']:.3f}  {s['confusion']}")
        print(f"{split:6} reason kind right: {summary[split]['reason_kind_right']}")
        for e in summary[split]["errors"]:
            print(f"       wrong: {e['text']!r} ({e['kind']}; gold {e['gold']}, decided {e['decided']} by {e['how']},"
                  f" p={e['p_no_picture']})")
    for route, s in summary["natural_requests"].items():
        print(f"natural {route:6}: {s['no_picture']}/{s['n']} no picture  e.g. {s['examples'][:4]}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
