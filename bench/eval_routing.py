"""Route-decision quality of the agent's router (the real LLM), side by side with two baselines.

    .venv/bin/python bench/eval_routing.py [--data ../shared/data/routing/dev.jsonl] [--json]
    .venv/bin/python bench/eval_routing.py --heldout [--json]

``--data``: JSONL lines of ``{text, route}`` (default: the labelled dev set). ``--heldout``: instead,
150 requests built here from the raw sources the dev set was drawn from, with rows and wordings the
dev set does not use (see :func:`heldout_rows`); nothing was tuned on them, so they estimate how the
decision carries over to requests worded differently.

Prints accuracy, per-class precision/recall, confusion matrices and ms per decision for the agent's
router (the LLM's calibrated label scores combined with the embedding classifier, see
agent/route_classifier.py), side by side with the LLM's scores alone (the decision before issue 16),
the classifier alone and two baselines (always-search; a keyword rule), and writes them to
``bench/results/routing.json`` (``routing_heldout.json`` with ``--heldout``,
``routing_<name>.json`` for another ``--data`` file). ``--json`` prints
only the headline JSON object on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from agent.state import ROUTES  # noqa: E402
from results_io import run_suffix, save_results  # noqa: E402

DATA = REPO.parent / "shared" / "data"
DEFAULT_DATA = DATA / "routing" / "dev.jsonl"

# -- baselines -------------------------------------------------------------------------------

_DRAW_WORDS = re.compile(r"\b(draw|drawing|show me|picture|image|illustrat\w*|paint|painting|sketch|see)\b", re.I)
_QUESTION = re.compile(r"^\s*(who|what|when|where|which|whose|how many|how old|in what|is|are|was|were|did|does)\b", re.I)


def always_search(text: str) -> str:
    return "search"


def keyword_rule(text: str) -> str:
    """The obvious rule: picture words -> draw; a question naming something capitalised -> search;
    anything else -> answer."""
    if _DRAW_WORDS.search(text):
        return "draw"
    names = [w for w in re.findall(r"[A-Za-z][\w'-]*", text)[1:] if w[0].isupper() and w != "I"]
    if _QUESTION.search(text) and names:
        return "search"
    return "answer"


# -- held-out requests -----------------------------------------------------------------------

# Request wrappers of our own, unlike the dev set's ("Show me", "Draw", "Please illustrate",
# "I'd like to see", "Can you make a picture of").
_DRAW_WRAPPERS = (
    "Could you sketch {p}?", "Paint {p}.", "Generate an image of {p}.", "I want a picture of {p}.",
    "Let me see {p}.", "Make me an illustration of {p}.", "Render {p}, please.", "Picture this for me: {p}.",
    "What would {p} look like? Draw it.", "Create artwork showing {p}.",
)


def _lower_first(text: str) -> str:
    text = text.strip().rstrip(".")
    acronym = len(text) > 1 and text[1].isupper()
    return text if acronym else text[:1].lower() + text[1:]


def heldout_rows(seed: int = 7, per_class: int = 50) -> list[dict]:
    """``per_class`` requests per route from the raw sources, excluding every dev text.

    search: PopQA long-tail questions in their original wording (``sources.txt``), rows the dev set
    does not use; answer: Alpaca seed instructions not in the dev set (with their input appended
    when they have one); draw: PartiPrompts/DrawBench prompts not in the dev set, wrapped in the
    request forms above."""
    dev = {json.loads(line)["text"] for line in DEFAULT_DATA.read_text().splitlines() if line.strip()}
    dev_norm = {" ".join(t.lower().split()) for t in dev}
    rng = random.Random(seed)

    def unseen(text: str) -> bool:
        low = " ".join(text.lower().split())
        return low not in dev_norm and not any(low in d for d in dev_norm)

    popqa = (DATA / "raw" / "popqa" / "crag_popqa_longtail" / "sources.txt").read_text().splitlines()
    with (DATA / "raw" / "popqa" / "DisambPopQA_longtail1399.csv").open(encoding="utf-8") as f:
        rewritten = [row["question"] for row in csv.DictReader(f)]
    search = [q for q, r in zip(popqa, rewritten) if q.strip() and unseen(q) and unseen(r)]
    seeds = [json.loads(line) for line in (DATA / "raw" / "alpaca_seed" / "seed_tasks.jsonl").read_text().splitlines()]
    answer = []
    for task in seeds:
        inst, extra = task["instruction"].strip(), (task["instances"][0].get("input") or "").strip()
        text = f"{inst}\n{extra}" if extra else inst
        if unseen(inst) and len(text) < 600:
            answer.append(text)
    prompts = [row["Prompt"] for row in csv.DictReader((DATA / "raw" / "image_prompts" / "PartiPrompts.tsv").open(encoding="utf-8"), delimiter="\t")
               if len(row["Prompt"].split()) >= 3]
    prompts += [row["Prompt"] for row in csv.DictReader((DATA / "raw" / "image_prompts" / "drawbench.csv").open(encoding="utf-8"))]
    prompts = [p for p in dict.fromkeys(prompts) if unseen(p) and len(p) < 200]
    rows = []
    for route, pool in (("search", search), ("answer", answer), ("draw", prompts)):
        picked = rng.sample(pool, min(per_class, len(pool)))
        for i, text in enumerate(picked):
            if route == "draw":
                text = _DRAW_WRAPPERS[i % len(_DRAW_WRAPPERS)].format(p=_lower_first(text))
            rows.append({"text": text, "route": route, "id": f"heldout-{route}-{i:03d}"})
    return rows


# -- scoring ---------------------------------------------------------------------------------


def score(rows: list[dict], decide: Callable[[str], str]) -> dict:
    confusion: Counter = Counter()
    wrong = []
    start = time.perf_counter()
    for row in rows:
        got = decide(row["text"])
        confusion[(row["route"], got)] += 1
        if got != row["route"]:
            wrong.append({"text": row["text"][:200], "gold": row["route"], "predicted": got})
    ms = (time.perf_counter() - start) * 1000 / max(len(rows), 1)
    correct = sum(v for (gold, got), v in confusion.items() if gold == got)
    per_class = {}
    for route in ROUTES:
        tp = confusion[(route, route)]
        predicted = sum(v for (_, got), v in confusion.items() if got == route)
        actual = sum(v for (gold, _), v in confusion.items() if gold == route)
        per_class[route] = {"precision": round(tp / predicted, 3) if predicted else 0.0,
                            "recall": round(tp / actual, 3) if actual else 0.0, "n": actual}
    return {"n": len(rows), "accuracy": round(correct / max(len(rows), 1), 3), "per_class": per_class,
            "ms_per_decision": round(ms, 2),
            "confusion": {f"{g}->{p}": confusion[(g, p)] for g in ROUTES for p in ROUTES}, "wrong": wrong}


def spoken_form(text: str) -> str:
    """A typed request as a speech recogniser may give it: lower case, no final punctuation."""
    return " ".join(text.split()).rstrip("?!.").lower()


SYSTEMS = ("router", "llm_only", "classifier_only", "keyword_rule", "always_search")
LABELS = {"router": "router (new)", "llm_only": "LLM only (before)", "classifier_only": "classifier only",
          "keyword_rule": "keyword rule", "always_search": "always search"}


def evaluate(rows: list[dict], router) -> dict:
    """Every system's metrics on ``rows`` from one pass of the router: the combined decision, and from
    its evidence the LLM's calibrated scores alone (the decision before issue 16) and the classifier's
    alone; plus the two baselines. ``ms_per_decision`` of the router is the whole decision's wall time."""
    decisions, times = {}, []
    for row in rows:
        t0 = time.perf_counter()
        decisions[row["text"]] = router.decide(row["text"])
        times.append((time.perf_counter() - t0) * 1000)

    def llm_only(text: str) -> str:
        ev = decisions[text].evidence.get("llm", {})
        scores = ev.get("scores")
        return max(scores, key=scores.get) if scores else decisions[text].route

    def classifier_only(text: str) -> str:
        ev = decisions[text].evidence.get("classifier", {})
        return max(ev["scores"], key=ev["scores"].get) if ev.get("used") else "search"

    out = {"router": score(rows, lambda t: decisions[t].route), "llm_only": score(rows, llm_only),
           "classifier_only": score(rows, classifier_only), "keyword_rule": score(rows, keyword_rule),
           "always_search": score(rows, always_search)}
    times.sort()
    out["router"]["ms_per_decision"] = round(sum(times) / max(len(times), 1), 1)
    out["router"]["ms_p50"] = round(times[len(times) // 2], 1) if times else 0.0
    out["router"]["ms_p90"] = round(times[int(len(times) * 0.9)], 1) if times else 0.0
    for name in ("llm_only", "classifier_only"):
        key = "llm" if name == "llm_only" else "classifier"
        ms = [d.evidence.get(key, {}).get("ms") for d in decisions.values()]
        ms = sorted(m for m in ms if m is not None)
        out[name]["ms_per_decision"] = round(sum(ms) / len(ms), 1) if ms else None
    return out


def print_table(results: dict) -> None:
    head = f"{'system':<18} {'accuracy':>8} {'ms/dec':>7}" + "".join(f" {r + ' P/R':>13}" for r in ROUTES)
    print(head)
    for name in SYSTEMS:
        m = results[name]
        cells = "".join(f" {m['per_class'][r]['precision']:>6.1%}/{m['per_class'][r]['recall']:<6.1%}" for r in ROUTES)
        ms = m.get("ms_per_decision")
        print(f"{LABELS[name]:<18} {m['accuracy']:>8.1%} {ms if ms is not None else '':>7}{cells}")
    for name in ("router", "llm_only", "keyword_rule"):
        print(f"{LABELS[name]} confusion (rows: gold, columns: predicted):")
        print(" " * 9 + "".join(f"{r:>8}" for r in ROUTES))
        for gold in ROUTES:
            print(f"  {gold:<7}" + "".join(f"{results[name]['confusion'][f'{gold}->{p}']:>8}" for p in ROUTES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="JSONL lines of {text, route} (default: the dev set)")
    parser.add_argument("--heldout", action="store_true", help="evaluate on held-out requests built from the raw sources")
    parser.add_argument("--spoken", action="store_true",
                        help="lower-case every request and drop its final punctuation, as a speech recogniser may "
                             "give it (results: <name>_spoken.json)")
    parser.add_argument("--llm", default=None, help="LLM spec (default: the starter LLM)")
    parser.add_argument("--llm-runtime", choices=("auto", "llama.cpp", "transformers"), default="auto",
                        help="where the LLM runs (default auto: a GGUF model on llama.cpp when installed); a "
                        "runtime or --llm other than the default gets its own results file (routing_..._llamacpp.json)")
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()
    if args.heldout and args.data:
        sys.exit("eval_routing: give --data or --heldout, not both")
    if args.heldout:
        rows, source = heldout_rows(), "held-out (built from ../shared/data/raw, see heldout_rows)"
    else:
        path = args.data or DEFAULT_DATA
        if not path.is_file():
            sys.exit(f"eval_routing: no data file {path}")
        rows, source = [json.loads(line) for line in path.read_text().splitlines() if line.strip()], str(path)
        bad = [r for r in rows if r.get("route") not in ROUTES or not str(r.get("text", "")).strip()]
        if bad:
            sys.exit(f"eval_routing: {len(bad)} line(s) without a text and a route in {ROUTES}: {bad[0]}")

    if args.spoken:
        rows = [{**r, "text": spoken_form(r["text"])} for r in rows]
        source += ", lower-cased as spoken (--spoken)"

    from agent.router import Router
    from tools.common import quiet_transformers
    from tools.llm import STARTER_LLM, local_llm

    quiet_transformers()
    router = Router(local_llm(args.llm or STARTER_LLM, runtime=args.llm_runtime), classifier=True)
    t0 = time.perf_counter()
    router.llm.load()
    router.bias()
    router.classifier.embedder.load()
    load_s = time.perf_counter() - t0
    results = evaluate(rows, router)
    summary = {**results["router"], "llm": router.llm.name, "classifier": router.classifier.name,
               "combination": router.classifier.combination.as_dict(), "data": source,
               "load_and_calibrate_s": round(load_s, 2),
               "systems": {k: v for k, v in results.items() if k != "router"},
               "baselines": {"always_search": results["always_search"], "keyword_rule": results["keyword_rule"]}}
    name = "routing_heldout" if args.heldout else "routing" if args.data in (None, DEFAULT_DATA) else f"routing_{args.data.stem}"
    brief = lambda m: {k: m[k] for k in ("accuracy", "per_class", "confusion", "ms_per_decision") if k in m}  # noqa: E731
    headline = {k: v for k, v in summary.items() if k not in ("wrong", "systems", "baselines")} | {
        "systems": {k: brief(v) for k, v in summary["systems"].items()},
        "baselines": {k: brief(v) for k, v in summary["baselines"].items()}}
    name += "_spoken" if args.spoken else ""
    name += run_suffix(args.llm, args.llm_runtime)
    out = save_results(name, summary, headline, as_json=args.json)  # another --data file: its own results file
    if args.json:
        return
    print(f"{len(rows)} requests from {source}; LLM: {router.llm.name} (load + calibration {load_s:.1f} s); "
          f"classifier: {router.classifier.name}")
    print_table(results)
    print(f"router ms per decision: mean {results['router']['ms_per_decision']}, p50 {results['router']['ms_p50']}, "
          f"p90 {results['router']['ms_p90']}")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
