"""The sentence-embedding model on llama.cpp against transformers: same vectors, same decisions?

    .venv/bin/python bench/eval_embeddings.py [--squad-n 300] [--json]

MiniLM feeds the route classifier and reranks Wikipedia passages; both were built on vectors from
transformers, so the llama.cpp runtime (tools/embeddings.py) must give the same ones. Texts:

- every request of the routing sets (dev, held-out, natural requests: what the router sees), with
  the route classifier's probabilities and its choice on each runtime;
- ``--squad-n`` SQuAD dev questions and their paragraphs (seeded sample): for each question the
  nearest paragraph among all sampled ones, on each runtime (what the reranker sees).

Reports cosine between the runtimes' vectors (min / mean), the largest difference of a classifier
probability, how many classifier choices and nearest paragraphs differ, and speed: load time, one
short request (median of 50), and paragraphs per second in batches of 32. Results:
bench/results/embeddings.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.eval_routing import DEFAULT_DATA, heldout_rows  # noqa: E402
from bench.results_io import save_results  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def routing_texts() -> list[str]:
    rows = [json.loads(line) for line in DEFAULT_DATA.read_text().splitlines() if line.strip()]
    rows += heldout_rows()
    natural = REPO / "bench" / "data" / "natural_requests.jsonl"
    rows += [json.loads(line) for line in natural.read_text().splitlines() if line.strip()]
    return [r["text"] for r in rows]


def squad_sample(n: int, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """(questions, paragraphs, index of each question's own paragraph)."""
    data = json.loads((DATA / "raw" / "squad_v1.1_dev" / "dev-v1.1.json").read_text())["data"]
    pairs = [(qa["question"], f"{a['title'].replace('_', ' ')}: {p['context']}")
             for a in data for p in a["paragraphs"] for qa in p["qas"]]
    picked = random.Random(seed).sample(pairs, n)
    paragraphs = list(dict.fromkeys(p for _, p in picked))
    where = {p: i for i, p in enumerate(paragraphs)}
    return [q for q, _ in picked], paragraphs, [where[p] for _, p in picked]


def timed_runtime(runtime: str, short: list[str], paragraphs: list[str]) -> tuple[object, dict]:
    from tools.embeddings import Embedder

    start = time.perf_counter()
    emb = Embedder(runtime=runtime).load()
    load_s = time.perf_counter() - start
    emb.encode(short[:4])  # warm
    one = []
    for text in short[:50]:
        t = time.perf_counter()
        emb.encode([text])
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    emb.encode(paragraphs[:256], batch_size=32)
    per_s = min(256, len(paragraphs)) / (time.perf_counter() - t)
    return emb, {"load_s": round(load_s, 3), "one_request_ms": round(statistics.median(one) * 1000, 2),
                 "paragraphs_per_s": round(per_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--squad-n", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from agent.route_classifier import RouteClassifier
    from agent.state import ROUTES
    from tools.llm_llamacpp import binding_problem

    if binding_problem():
        sys.exit(f"eval_embeddings: {binding_problem()}")
    requests = routing_texts()
    questions, paragraphs, gold = squad_sample(args.squad_n)
    log = sys.stderr
    runs, vectors = {}, {}
    for runtime in ("transformers", "llama.cpp"):
        print(f"{runtime}: loading and timing ...", file=log)
        emb, speed = timed_runtime(runtime, requests, paragraphs)
        print(f"{runtime}: embedding {len(requests)} requests, {len(questions)} questions, "
              f"{len(paragraphs)} paragraphs ...", file=log)
        vectors[runtime] = {"requests": emb.encode(requests), "questions": emb.encode(questions),
                            "paragraphs": emb.encode(paragraphs)}
        runs[runtime] = speed
    hf, ll = vectors["transformers"], vectors["llama.cpp"]
    cos = {k: (hf[k] * ll[k]).sum(axis=1) for k in hf}
    clf = RouteClassifier(embedder=object())  # weights only: the vectors are given
    p_hf, p_ll = clf.probabilities_of(hf["requests"]), clf.probabilities_of(ll["requests"])
    near_hf = (hf["questions"] @ hf["paragraphs"].T).argmax(axis=1)
    near_ll = (ll["questions"] @ ll["paragraphs"].T).argmax(axis=1)
    gold = np.asarray(gold)
    summary = {
        "texts": {"routing_requests": len(requests), "squad_questions": len(questions), "squad_paragraphs": len(paragraphs)},
        "cosine_min": {k: round(float(v.min()), 7) for k, v in cos.items()},
        "cosine_mean": {k: round(float(v.mean()), 7) for k, v in cos.items()},
        "classifier_max_abs_prob_diff": float(np.abs(p_hf - p_ll).max()),
        "classifier_choices_differ": int((p_hf.argmax(1) != p_ll.argmax(1)).sum()),
        "classifier_choice_counts": {rt: {r: int((p.argmax(1) == i).sum()) for i, r in enumerate(ROUTES)}
                                     for rt, p in (("transformers", p_hf), ("llama.cpp", p_ll))},
        "nearest_paragraph_differs": int((near_hf != near_ll).sum()),
        "nearest_paragraph_is_gold": {"transformers": round(float((near_hf == gold).mean()), 4),
                                      "llama.cpp": round(float((near_ll == gold).mean()), 4)},
        "speed": runs,
    }
    headline = {"cosine_min": min(summary["cosine_min"].values()),
                "classifier_choices_differ": summary["classifier_choices_differ"],
                "nearest_paragraph_differs": summary["nearest_paragraph_differs"]}
    save_results("embeddings", summary, headline, as_json=args.json)
    if not args.json:
        print(f"cosine llama.cpp vs transformers: min {headline['cosine_min']:.7f}; "
              f"classifier: max |dp| {summary['classifier_max_abs_prob_diff']:.2e}, "
              f"{summary['classifier_choices_differ']} of {len(requests)} choices differ; nearest paragraph: "
              f"{summary['nearest_paragraph_differs']} of {len(questions)} differ "
              f"(gold@1 {summary['nearest_paragraph_is_gold']})")
        for rt, s in runs.items():
            print(f"  {rt:<12} load {s['load_s']:.2f} s, one request {s['one_request_ms']:.1f} ms, "
                  f"{s['paragraphs_per_s']:.0f} paragraphs/s")


if __name__ == "__main__":
    main()
