"""Follow-up rewriting: does the standalone question keep what the user asked?

    .venv/bin/python bench/eval_followup.py [--split dev|report|all|blind|blind2..blind5] [--json] [--llm SPEC]

Data: ``bench/data/followups.jsonl``, hand-written two-turn conversations, one per line:
``{id, split, type, first, route, source, topic, [answer,] followup, expected}``. ``route`` and ``source``
(the first turn's route and the title of its first Wikipedia source) give the history entry's topic
the way the agent computes it (:func:`agent.followup.topic_of_turn`); ``topic`` is what the
follow-up refers to, for reading only; ``answer`` (a few rows) is the first turn's answer as the
history keeps it, for a "he" that means the person the first answer named. ``type`` is one of
pronoun, possessive, ellipsis, what_about, switch (a full new question that must be left as
asked). ``split``: ``dev`` was used for tuning; ``report`` was written before any tuning, and only
one fix followed its first run (see README, Quality: the "World War I" topic).

A rewrite has the **exact intent** when it has the expected question's question word ("when",
"how tall", "who"; a yes/no question's auxiliary) and exactly its set of content stems (see
:func:`agent.followup.same_intent`): nothing dropped, added or changed; articles, "'s", word order,
case and punctuation may differ.

Systems, all behind the agent's ``needs_context`` gate and from one LLM call per conversation:
``agent`` (:func:`agent.followup.standalone_question`: the rule when it applies, else the LLM's
checked rewrite), ``rule`` (substitution alone), ``llm_checked`` (the LLM's rewrite when
:func:`check_rewrite` accepts it, else the rule), ``llm_checked_only`` (the same, else the
follow-up as asked: what the checked LLM achieves without the rule) and ``llm`` (the LLM's rewrite
as it comes, unchecked). The LLM's rewrite is forced to start as the follow-up does (see
:func:`agent.followup.llm_rewrite`).
Writes ``bench/results/followup_<split>.json``; ``--json`` prints only the headline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from agent.followup import (  # noqa: E402
    check_rewrite, context_of, llm_rewrite, needs_context, same_intent, standalone_question, substitute, topic_of_turn,
)
from results_io import save_results  # noqa: E402

DATA = REPO / "bench" / "data" / "followups.jsonl"
TYPES = ("pronoun", "possessive", "ellipsis", "what_about", "switch")
SYSTEMS = ("agent", "rule", "llm_checked", "llm_checked_only", "llm")
LABELS = {"agent": "agent (rule, else checked LLM)", "rule": "rule alone", "llm_checked": "LLM checked, else rule",
          "llm_checked_only": "LLM checked, else as asked",
          "llm": "LLM alone (unchecked)"}


class OnceLLM:
    """The LLM, asked each distinct prompt once (the systems share its rewrites); times the calls."""

    def __init__(self, llm) -> None:
        self.llm, self.replies, self.seconds, self.calls = llm, {}, [], 0

    def chat(self, messages, **kwargs) -> str:
        key = json.dumps(messages)
        if key not in self.replies:
            t0 = time.perf_counter()
            self.replies[key] = self.llm.chat(messages, **kwargs)
            self.seconds.append(time.perf_counter() - t0)
            self.calls += 1
        return self.replies[key]


#: Conversations written blind, each set by a helper who saw neither the rule nor the other sets, each
#: run once before any tuning on it and then tuned on: ``blind`` (48), ``blind2`` (72), ``blind3`` (80, with
#: the first turn's answer), ``blind4`` (100), ``blind5`` (100, never tuned on: the held-out figure). The
#: first-run figures are in the README (Quality).
BLIND = {name: DATA.with_name(f"followups_{name}.jsonl") for name in ("blind", "blind2", "blind3", "blind4", "blind5")}


def load_rows(split: str) -> list[dict]:
    if split in BLIND:
        return [json.loads(line) for line in BLIND[split].read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [r for r in rows if r.get("type") not in TYPES or r.get("split") not in ("dev", "report")]
    if bad:
        sys.exit(f"eval_followup: bad type or split in {bad[0]}")
    return [r for r in rows if split == "all" or r["split"] == split]


def history_of(row: dict) -> list[dict]:
    """The history entry the agent keeps after the first turn (agent/nodes.py)."""
    sources = [{"title": row["source"]}] if row.get("source") else []
    state = {"question": row["first"], "route": row["route"], "sources": sources}
    return [{"question": row["first"], "route": row["route"], "answer": row.get("answer", ""),
             "topic": topic_of_turn(state)}]


def run_systems(row: dict, llm: OnceLLM) -> dict[str, tuple[str, str | None]]:
    question, history = row["followup"], history_of(row)
    previous = history[0]["question"]
    out = {"agent": standalone_question(question, history, llm)}
    if not needs_context(question):
        return out | {name: (question, None) for name in SYSTEMS if name != "agent"}
    c = context_of(question, history)  # the topic, answer and route the agent reads the follow-up against
    rule = substitute(question, c.previous, c.topic, c.answer, c.answered, route=c.route)
    rewrite, error = llm_rewrite(question, previous, llm)
    ok, why = check_rewrite(rewrite, question, c.previous, c.topic, c.answer, c.answered)
    out["rule"] = (rule.text, rule.rule or "no rule applied")
    out["llm_checked"] = (rewrite, f"accepted: {why}") if ok else (rule.text, f"rejected: {why}")
    out["llm_checked_only"] = (rewrite, "accepted") if ok else (question, f"rejected: {why}")
    out["llm"] = (rewrite or question, error)
    return out


def score(rows: list[dict], outputs: list[dict], name: str) -> dict:
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row, out in zip(rows, outputs):
        hit = same_intent(out[name][0], row["expected"])
        per_type[row["type"]][0] += hit
        per_type[row["type"]][1] += 1
    total = [sum(v[0] for v in per_type.values()), sum(v[1] for v in per_type.values())]
    rate = lambda v: round(100 * v[0] / v[1], 1) if v[1] else None  # noqa: E731
    return {"exact_intent": rate(total), "correct": total[0], "n": total[1],
            "per_type": {t: {"exact_intent": rate(per_type[t]), "correct": per_type[t][0], "n": per_type[t][1]}
                         for t in TYPES if per_type[t][1]}}


def print_table(results: dict, rows: list[dict]) -> None:
    counts = {t: sum(r["type"] == t for r in rows) for t in TYPES}
    types = [t for t in TYPES if counts[t]]
    heads = "".join(f"{f'{t} ({counts[t]})':>17}" for t in types)
    print(f"{'exact intent %':<32}{heads}{f'all ({len(rows)})':>12}")
    for name in SYSTEMS:
        m = results[name]
        print(f"{LABELS[name]:<32}" + "".join(f"{m['per_type'][t]['exact_intent']:>17}" for t in types)
              + f"{m['exact_intent']:>12}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "report", "all", *BLIND), default="report")
    parser.add_argument("--llm", default=None, help="LLM spec (default: the starter LLM)")
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()
    rows = load_rows(args.split)

    from tools.common import quiet_transformers
    from tools.llm import STARTER_LLM, LocalLLM

    quiet_transformers()
    model = LocalLLM(args.llm or STARTER_LLM)  # as the agent's Toolbox builds it
    t0 = time.perf_counter()
    model.load()
    load_s = time.perf_counter() - t0
    llm = OnceLLM(model)
    outputs = [run_systems(row, llm) for row in rows]
    results = {name: score(rows, outputs, name) for name in SYSTEMS}
    wrong = [{"id": r["id"], "type": r["type"], "followup": r["followup"], "expected": r["expected"],
              "got": o["agent"][0], "how": o["agent"][1]}
             for r, o in zip(rows, outputs) if not same_intent(o["agent"][0], r["expected"])]
    rule_used = sum(1 for o in outputs if (o["agent"][1] or "").startswith("by rule"))
    accepted = [(r, o) for r, o in zip(rows, outputs) if (o["llm_checked"][1] or "").startswith("accepted")]
    checks = {"llm_rewrites_accepted": len(accepted),
              "accepted_exact": sum(same_intent(o["llm_checked"][0], r["expected"]) for r, o in accepted),
              "llm_rewrites_checked": sum(1 for r in rows if needs_context(r["followup"]))}
    summary = {
        "split": args.split, "n": len(rows), "llm": model.name, "load_s": round(load_s, 2),
        "exact_intent": results["agent"]["exact_intent"], "systems": results,
        "agent_rule_used": rule_used, "llm_calls": llm.calls, "checks": checks,
        "llm_ms_per_call": round(1000 * sum(llm.seconds) / max(len(llm.seconds), 1), 1),
        "wrong": wrong,
        "rows": [{"id": r["id"], "type": r["type"], "followup": r["followup"], "expected": r["expected"],
                  **{name: o[name][0] for name in SYSTEMS}, "how": o["agent"][1]} for r, o in zip(rows, outputs)],
    }
    headline = {k: v for k, v in summary.items() if k not in ("wrong", "rows")}
    out = save_results(f"followup_{args.split}", summary, headline, as_json=args.json)
    if args.json:
        return
    print(f"{len(rows)} conversations ({args.split} split of {DATA.relative_to(REPO)}); LLM: {model.name} "
          f"(load {load_s:.1f} s, {llm.calls} rewrites, {summary['llm_ms_per_call']} ms each)")
    print_table(results, rows)
    asked = sum(1 for o in outputs if (o["agent"][1] or "").startswith(("rewritten", "no rule")))
    print(f"agent: rule used for {rule_used}, LLM asked for {asked}")
    print(f"checks: {checks['llm_rewrites_accepted']} LLM rewrites accepted, {checks['accepted_exact']} of them exact")
    for w in wrong:
        print(f"  wrong {w['id']} [{w['type']}] {w['followup']!r} -> {w['got']!r} (expected {w['expected']!r}; {w['how']})")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
