"""Fit the short-answer scorer's weights (``tools.short_answer.WEIGHTS``) on the dev split.

    .venv/bin/python bench/fit_short_answer.py [--n 1500] [--cv] [--write]

The dev split is ``bench/eval_answers.py --split dev``'s: ``--n`` PopQA and ``--n`` SQuAD questions,
none of them in the report split. For each question the top 3 passages are retrieved (offline
corpora of ``eval_answers.py``; cached in ``$ASKDRAW_HOME/bench/short_answer_dev.json``), candidates
are extracted and featurised as the answer step does, and the weights of a softmax over each
question's candidates are fitted (gradient descent, small L2) so that candidates holding a gold
answer score highest. ``--cv`` first reports 2-fold cross-validated accuracy of the top candidate
(the fit on one half scored on the other), beside the dense features alone. ``--write`` saves the
weights to ``tools/short_answer_weights.json`` (read by ``tools.short_answer``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from eval_answers import DATASETS, contains_gold, split_questions  # noqa: E402

import tools.short_answer as sa  # noqa: E402


def dev_passages(n: int, seed: int) -> dict[str, list[dict]]:
    from agent import Agent, Settings
    from eval_retrieval import write_corpus
    from tools.common import cache_dir

    path = cache_dir() / "bench" / f"short_answer_dev_{n}_{seed}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, list[dict]] = {}
    for name, (questions_of, records_of) in DATASETS.items():
        corpus = write_corpus(records_of(), cache_dir() / "bench")
        wiki = Agent(Settings(wiki=str(corpus), out_dir=Path(tempfile.mkdtemp()))).tools.wiki
        out[name] = [{**q, "passages": [p.model_dump() for p in wiki.search(q["question"].rstrip("?!. "), k=3)]}
                     for q in split_questions(questions_of, n, seed, "dev")]
    path.write_text(json.dumps(out), encoding="utf-8")
    return out


def build(rows: list[dict]) -> list[tuple[dict, list]]:
    nlp = sa.spacy_pipeline()
    out = []
    for r in rows:
        passages = [(p["title"], p["text"]) for p in r["passages"]]
        cands = sa.candidates(r["question"], sa.rank_sentences(r["question"], passages)[:sa.MAX_SENTENCES], nlp)
        sa.featurise(r["question"], cands, nlp)
        out.append((r, cands))
    return out


def fit(items: list[tuple[dict, list]], keys: list[str], l2: float = 0.001, iters: int = 1500,
        lr: float = 0.5, label: str = "phrase") -> dict[str, float]:
    """Softmax over each question's candidates; maximise the probability of those holding gold
    (in the widened phrase, or with ``label="span"`` in the span alone)."""
    groups = []
    for r, cands in items:
        y = np.array([1.0 if contains_gold((c.phrase or c.text) if label == "phrase" else c.text, r["golds"]) else 0.0
                      for c in cands])
        if y.sum():
            groups.append((np.array([[c.features.get(k, 0.0) for k in keys] for c in cands]), y))
    x = np.vstack([g for g, _ in groups])
    y = np.concatenate([t for _, t in groups])
    idx = np.concatenate([[i] * len(g) for i, (g, _) in enumerate(groups)])
    n_groups, w = len(groups), np.zeros(len(keys))
    for _ in range(iters):
        z = x @ w
        zmax = np.full(n_groups, -1e9)
        np.maximum.at(zmax, idx, z)
        e = np.exp(z - zmax[idx])
        total, pos = np.zeros(n_groups), np.zeros(n_groups)
        np.add.at(total, idx, e)
        np.add.at(pos, idx, e * y)
        grad = x.T @ (e / total[idx] - e * y / pos[idx]) / n_groups + l2 * w
        w -= lr * grad
    return {k: round(float(v), 2) for k, v in zip(keys, w)}


def accuracy(items: list[tuple[dict, list]], weights: dict[str, float]) -> float:
    hits = 0
    for r, cands in items:
        cands = sa.admissible(r["question"], cands)
        if cands:
            for c in cands:
                c.score = sa.score(c.features, weights)
            best = sa.narrowest(max(cands, key=lambda c: c.score), cands)
            hits += contains_gold(best.phrase or best.text, r["golds"])
    return hits / len(items) if items else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1500, help="dev questions per dataset (PopQA has 1,199)")
    parser.add_argument("--l2", type=float, default=0.003)
    parser.add_argument("--write", action="store_true", help=f"save the weights to {sa.WEIGHTS_FILE.name}")
    parser.add_argument("--seed", type=int, default=13, help="the report split's seed (its questions are left out)")
    parser.add_argument("--cv", action="store_true", help="report 2-fold cross-validated accuracy first")
    parser.add_argument("--label", choices=("phrase", "span"), default="phrase",
                        help="a candidate is right when its phrase (default) or its span alone holds a gold answer")
    args = parser.parse_args()
    sets = {name: build(rows) for name, rows in dev_passages(args.n, args.seed).items()}
    keys = sorted({k for items in sets.values() for _, cands in items for c in cands for k in c.features})
    keys = [k for k in keys if k != "thing"]  # constant within a question: no effect on a softmax
    dense = [k for k in keys if "|" not in k]
    if args.cv:
        for name in sets:
            random.Random(0).shuffle(sets[name])
        halves = [{k: v[: len(v) // 2] for k, v in sets.items()}, {k: v[len(v) // 2:] for k, v in sets.items()}]
        for what, use in (("dense features only", dense), ("all features", keys)):
            for i in (0, 1):
                w = fit([x for items in halves[i].values() for x in items], use, l2=args.l2, label=args.label)
                print(f"{what}, fold {i}: " + ", ".join(f"{k} {accuracy(v, w):.3f}" for k, v in halves[1 - i].items()))
    weights = fit([x for items in sets.values() for x in items], keys, l2=args.l2, label=args.label)
    print("dev (in-sample): " + ", ".join(f"{k} {accuracy(v, weights):.3f}" for k, v in sets.items()))
    print("current WEIGHTS: " + ", ".join(f"{k} {accuracy(v, sa.WEIGHTS):.3f}" for k, v in sets.items()))
    weights = {k: v for k, v in weights.items() if v}
    if args.write:
        sizes = {k: len(v) for k, v in sets.items()}
        sa.WEIGHTS_FILE.write_text(json.dumps({"fitted_by": "bench/fit_short_answer.py --write", "dev_questions": sizes,
                                               "l2": args.l2, "label": args.label, "weights": weights},
                                              indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {len(weights)} weights to {sa.WEIGHTS_FILE}")
    else:
        print(json.dumps(weights))


if __name__ == "__main__":
    main()
