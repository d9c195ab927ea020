"""Per-step timings of a typed and a spoken question, cold (models load) and warm, in one Agent.

    .venv/bin/python bench/step_timings.py [--json]

Prints one line per question with the route, total seconds and each step's milliseconds; model
load times (recorded in the trace as data.load_*_ms) are listed separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import Agent, Settings  # noqa: E402
from agent.trace import read_trace  # noqa: E402
from tools.common import quiet_transformers  # noqa: E402

SPOKEN = REPO / "examples" / "who_painted_the_mona_lisa.wav"
PLAN = [
    ("typed, cold", {"text": "Who wrote Hamlet?"}),
    ("spoken, ASR cold", {"audio": str(SPOKEN)}),
    ("typed, warm", {"text": "Who wrote Hamlet?"}),
    ("spoken, warm", {"audio": str(SPOKEN)}),
    ("draw, warm", {"text": "Show me a cat eating fish"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only a JSON list on stdout")
    args = parser.parse_args()
    quiet_transformers()
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as out:
        agent = Agent(Settings(out_dir=Path(out)))
        for label, question in PLAN:
            result = agent.ask(**question)
            loads = {k: v for e in read_trace(Path(result.trace_path).parent)
                     for k, v in e.data.items() if k.startswith("load_")}
            rows.append({"case": label, "route": result.route, "total_s": round(sum(result.timings_ms.values()) / 1000, 2),
                         "steps_ms": result.timings_ms, "loads_ms": loads, "error": result.error})
    if args.json:
        print(json.dumps({"rows": rows, "process_s": round(time.perf_counter() - start, 1)}))
        return
    for row in rows:
        steps = ", ".join(f"{k} {v:.0f}" for k, v in row["steps_ms"].items())
        loads = ", ".join(f"{k} {v:.0f}" for k, v in row["loads_ms"].items()) or "-"
        print(f"{row['case']:<17} {row['route']:<7} {row['total_s']:6.2f}s  steps ms: {steps}  (model loads ms: {loads})")
    print(f"process total {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
