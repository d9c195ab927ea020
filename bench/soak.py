"""A long conversation: one chat thread of N turns with the real starter models, measuring what
grows (issue 14, point 9).

    .venv/bin/python bench/soak.py [--turns 200] [--every 50] [--json]

Every ``--every`` turns it records the conversation database's size on disk (the SQLite file
and its write-ahead log, after a checkpoint of the log), the process's resident memory (RSS),
the thread's kept history and the seconds per turn since the last row. The requests cycle
through ``../shared/data/routing/dev.jsonl`` (search, answer and draw requests), each asked on
the same thread, images off (the card writer is not what this measures). Results go to
``bench/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_io import save_results  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "routing" / "dev.jsonl"


def rss_mb() -> float:
    """Resident memory now, from /proc (MB)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def db_mb(memory) -> float:
    memory._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in memory.path.parent.glob(memory.path.name + "*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print only the headline JSON")
    args = parser.parse_args()

    from agent.agent import Agent
    from agent.settings import Settings
    from tools.common import quiet_transformers

    quiet_transformers()
    requests = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="askdraw-soak-"))
    agent = Agent(Settings(out_dir=work / "runs", memory_path=work / "conversations.sqlite", image=False))
    agent.preload()
    thread = agent.new_thread_id()
    rows = [{"turns": 0, "db_mb": round(db_mb(agent.memory), 3), "rss_mb": round(rss_mb(), 1),
             "history": 0, "s_per_turn": None, "failed": 0}]
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    say(f"{'turns':>5}  {'db MB':>7}  {'RSS MB':>7}  {'history':>7}  {'s/turn':>6}  failed")
    say(f"{0:>5}  {rows[0]['db_mb']:>7.3f}  {rows[0]['rss_mb']:>7.1f}  {0:>7}  {'-':>6}  0")
    failed, start = 0, time.perf_counter()
    for i in range(1, args.turns + 1):
        result = agent.ask(text=requests[(i - 1) % len(requests)], thread_id=thread)
        failed += not result.ok
        if i % args.every == 0 or i == args.turns:
            elapsed = time.perf_counter() - start
            row = {"turns": i, "db_mb": round(db_mb(agent.memory), 3), "rss_mb": round(rss_mb(), 1),
                   "history": len(agent.memory.history(thread)),
                   "s_per_turn": round(elapsed / (i - rows[-1]["turns"]), 2), "failed": failed}
            rows.append(row)
            say(f"{i:>5}  {row['db_mb']:>7.3f}  {row['rss_mb']:>7.1f}  {row['history']:>7}  "
                f"{row['s_per_turn']:>6.2f}  {failed}")
            start = time.perf_counter()
    counted = agent.memory.threads()[0]["turns"]
    summary = {"turns": args.turns, "every": args.every, "rows": rows, "turns_recorded": counted,
               "requests": str(DATA.relative_to(REPO.parent))}
    headline = {"turns": args.turns, "db_mb": rows[-1]["db_mb"], "rss_mb_first": rows[1]["rss_mb"] if len(rows) > 1
                else None, "rss_mb_last": rows[-1]["rss_mb"], "failed": failed}
    path = save_results("soak", summary, headline, as_json=args.json)
    say(f"turns recorded in the thread list: {counted}; results: {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
