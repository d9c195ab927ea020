"""Arithmetic questions: the starter LLM's direct answer against tools/arithmetic.py's computation.

    .venv/bin/python bench/eval_arithmetic.py [--n 40] [--seed 7] [--json]

``--n`` questions are generated with ``random.Random(seed)``: two whole numbers (1-999) and one of
the four operations, in one of eight phrasings ("What is 23 times 4?", "how much is 144 divided
by 12", "calculate 17 + 25", ...). A reply is correct when it contains the exact result (whole
numbers; a division's result to 2 decimals). The LLM side is what the agent did before the
computation existed: ``AnswerWriter.direct`` on the starter model. Writes
``bench/results/arithmetic.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402

OPS = [("plus", "+", lambda a, b: a + b), ("minus", "-", lambda a, b: a - b),
       ("times", "*", lambda a, b: a * b), ("divided by", "/", lambda a, b: Fraction(a, b))]
FORMS = ["What is {a} {w} {b}?", "what is {a} {w} {b}", "How much is {a} {w} {b}?", "What's {a} {s} {b}?",
         "Calculate {a} {s} {b}.", "what does {a} {w} {b} equal", "Compute {a} {w} {b}", "What is {a}{s}{b}?"]


def questions(n: int, seed: int) -> list[tuple[str, Fraction]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 99)
        word, symbol, fn = rng.choice(OPS)
        out.append((rng.choice(FORMS).format(a=a, b=b, w=word, s=symbol), Fraction(fn(a, b))))
    return out


def correct(reply: str, value: Fraction) -> bool:
    numbers = {n.replace(",", "").replace("−", "-") for n in re.findall(r"[−-]?\d[\d,]*(?:\.\d+)?", reply)}
    if value.denominator == 1:
        return str(int(value)) in numbers
    return any(abs(float(n) - float(value)) < 0.005 for n in numbers if n.replace(".", "").lstrip("-").isdigit())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()

    from tools.answer import AnswerWriter
    from tools.arithmetic import compute
    from tools.common import quiet_transformers
    from tools.llm import STARTER_LLM, LocalLLM

    quiet_transformers()
    writer = AnswerWriter(LocalLLM(STARTER_LLM))
    rows = []
    for question, value in questions(args.n, args.seed):
        t0 = time.perf_counter()
        reply = writer.direct(question).text
        llm_s = time.perf_counter() - t0
        computed = compute(question)
        rows.append({"question": question, "value": str(value), "llm": reply, "llm_correct": correct(reply, value),
                     "llm_s": round(llm_s, 2), "computed": computed.answer if computed else None,
                     "computed_correct": bool(computed) and correct(computed.answer, value)})
    n = len(rows)
    summary = {"n": n, "llm_accuracy": round(sum(r["llm_correct"] for r in rows) / n, 3),
               "computed_accuracy": round(sum(r["computed_correct"] for r in rows) / n, 3),
               "computed_coverage": round(sum(r["computed"] is not None for r in rows) / n, 3),
               "llm_s_per_question": round(sum(r["llm_s"] for r in rows) / n, 2),
               "seed": args.seed, "rows": rows}
    headline = {k: v for k, v in summary.items() if k != "rows"}
    out = save_results("arithmetic", summary, headline, as_json=args.json)
    if not args.json:
        print(json.dumps(headline, indent=1))
        print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
