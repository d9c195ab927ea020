"""Route-decision accuracy of the agent's router (the real LLM) on labelled requests.

    .venv/bin/python bench/eval_routing.py [--data ../shared/data/routing/dev.jsonl] [--json]

Prints accuracy, per-class precision/recall and the confusion matrix, and writes them to
bench/results/routing.json. ``--json`` prints only the headline JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.router import Router  # noqa: E402
from agent.state import ROUTES  # noqa: E402
from tools.common import quiet_transformers  # noqa: E402
from tools.llm import STARTER_LLM, LocalLLM  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "routing" / "dev.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL lines of {text, route}")
    parser.add_argument("--llm", default=STARTER_LLM)
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"eval_routing: no data file {args.data}")
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    quiet_transformers()
    router = Router(LocalLLM(args.llm))
    router.llm.load()
    router.bias()
    confusion: Counter = Counter()
    start = time.perf_counter()
    for row in rows:
        confusion[(row["route"], router.decide(row["text"]).route)] += 1
    ms = (time.perf_counter() - start) * 1000 / len(rows)
    correct = sum(v for (gold, got), v in confusion.items() if gold == got)
    per_class = {}
    for route in ROUTES:
        tp = confusion[(route, route)]
        predicted = sum(v for (_, got), v in confusion.items() if got == route)
        actual = sum(v for (gold, _), v in confusion.items() if gold == route)
        per_class[route] = {"precision": round(tp / predicted, 3) if predicted else 0.0,
                            "recall": round(tp / actual, 3) if actual else 0.0, "n": actual}
    summary = {"n": len(rows), "accuracy": round(correct / len(rows), 3), "per_class": per_class,
               "ms_per_decision": round(ms, 1), "llm": router.llm.name, "data": str(args.data),
               "confusion": {f"{g}->{p}": v for (g, p), v in sorted(confusion.items())}}
    out = REPO / "bench" / "results" / "routing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{len(rows)} requests, accuracy {summary['accuracy']:.1%}, {ms:.0f} ms per decision ({router.llm.name})")
    print(f"{'route':<8} {'precision':>9} {'recall':>7} {'n':>4}")
    for route, m in per_class.items():
        print(f"{route:<8} {m['precision']:>9.1%} {m['recall']:>7.1%} {m['n']:>4}")
    print("confusion (gold -> predicted):")
    for gold in ROUTES:
        print(f"  {gold:<7}" + "".join(f" {pred}:{confusion[(gold, pred)]:<3}" for pred in ROUTES))
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
