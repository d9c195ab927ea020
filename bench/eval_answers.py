"""End-to-end text answers: the search route (grounded, cited) against a forced direct answer.

    .venv/bin/python bench/eval_answers.py [--n 200] [--datasets popqa,squad] [--split report|dev]
                                           [--modes search,direct] [--json]

Two datasets, each with its own offline corpus in the project's JSONL corpus format (written to
``$ASKDRAW_HOME/bench/``, indexed once and cached like any corpus):

* **popqa**: ``--n`` PopQA long-tail questions (a fixed-seed sample of the 1,399), searched over
  the CRAG evidence passages of all 1,399 questions (``ref_incorrect``: title-prefixed Wikipedia
  snippets, titled as given; ``ref_correct``: one refined passage per question, titled with the
  question's subject article ``s_wiki_title``, as CRAG gives none).
* **squad**: ``--n`` SQuAD v1.1 dev questions (fixed-seed sample), searched over the retrieval
  evaluation's corpus (the 2,067 SQuAD dev paragraphs plus the HotpotQA paragraphs, titled with
  their article; see ``eval_retrieval.py``).

Two splits: ``report`` (the default: ``--n`` questions per dataset drawn with ``--seed``, the
numbers in the README) and ``dev`` (``--n`` other questions, drawn with another seed and never
any of the report split's 200: for tuning the answer step; written to ``answers_dev.json``).

Each question runs through the real agent (``Agent.ask``, starter LLM, text only) in each mode:
``route="search"`` (retrieve, pick a short answer out of the top 3 passages, cite it) and
``route="answer"`` (the LLM answers from its own weights). An answer is correct when a gold answer
string is contained in it after SQuAD-style normalisation (lowercase, no punctuation or
articles). For the search route it reports: the short answer line alone (the reply's first
line), the whole reply (short answer and quoted support), the quoted sentence, how often the top
passage and the top 3 passages contain a gold answer (the answer step's ceilings), how often the
reply gives no short answer although one of the top 3 passages holds the gold, the answer step's
seconds (p50), and how the step behaves when the top 3 passages do *not* contain it.

Prints a table, writes ``bench/results/answers.json``; ``--json`` prints only the headline object.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import random
import re
import string
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from eval_retrieval import DEFAULT_HOTPOT as HOTPOT  # noqa: E402
from eval_retrieval import corpus_records, load_hotpot, load_squad, write_corpus  # noqa: E402
from results_io import RESULTS, run_suffix, save_results  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "raw"
POPQA = DATA / "popqa"
SQUAD = DATA / "squad_v1.1_dev" / "dev-v1.1.json"
MODES = {"search": "search", "direct": "answer"}  # mode name -> forced route


# -- normalisation and scoring ---------------------------------------------------------------

def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = html.unescape(text).lower()
    text = "".join(" " if ch in string.punctuation or ch in "–—‘’“”" else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains_gold(text: str | None, golds: list[str]) -> bool:
    """Is any gold answer contained in ``text`` (whole words, after normalisation)?"""
    if not text:
        return False
    hay = f" {normalize(text)} "
    return any(g and f" {g} " in hay for g in (normalize(x) for x in golds))


# -- datasets and corpora --------------------------------------------------------------------

def _sample(items: list, n: int, seed: int) -> list:
    return random.Random(seed).sample(items, min(n, len(items)))


REPORT_N, DEV_SEED = 200, 101  # the report split's size, and the dev split's seed


def split_questions(questions_of, n: int, seed: int, split: str) -> list[dict]:
    """The ``report`` split (``n`` questions drawn with ``seed``), or the ``dev`` split: ``n``
    questions drawn with :data:`DEV_SEED` from those not in the report split's 200."""
    if split == "report":
        return questions_of(n, seed)
    report = {q["id"] for q in questions_of(REPORT_N, seed)}
    return [q for q in questions_of(10**9, DEV_SEED) if q["id"] not in report][:n]


def popqa_questions(n: int, seed: int) -> list[dict]:
    with (POPQA / "DisambPopQA_longtail1399.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    items = [{"id": f"popqa-{i}", "question": r["question"], "golds": json.loads(r["possible_answers"])}
             for i, r in enumerate(rows)]
    return _sample(items, n, seed)


def popqa_records() -> list[dict]:
    """The CRAG evidence passages of every PopQA long-tail question, as corpus records."""
    crag = POPQA / "crag_popqa_longtail"
    with (POPQA / "DisambPopQA_longtail1399.csv").open(encoding="utf-8") as f:
        titles = [r["s_wiki_title"] or r["subj"] for r in csv.DictReader(f)]
    records: dict[tuple[str, str], None] = {}  # (title, text), first occurrence kept
    for line in (crag / "ref_incorrect.txt").read_text(encoding="utf-8").splitlines():
        for snippet in re.split(r"\s*;\s*(?=[^;:]{1,120}:\s)", line.lstrip("#")):
            title, sep, text = snippet.partition(": ")
            if sep and text.strip():
                records[(title.strip(), html.unescape(" ".join(text.split())))] = None
    correct = (crag / "ref_correct.txt").read_text(encoding="utf-8").splitlines()
    for title, line in zip(titles, correct):
        for text in line.split("#"):
            if text.strip():
                records[(title, html.unescape(" ".join(text.split())))] = None
    return [{"title": t, "text": x} for t, x in records]


def squad_questions(n: int, seed: int) -> list[dict]:
    data = json.loads(SQUAD.read_text(encoding="utf-8"))["data"]
    items = [{"id": qa["id"], "question": qa["question"], "golds": [a["text"] for a in qa["answers"]]}
             for article in data for para in article["paragraphs"] for qa in para["qas"]]
    return _sample(items, n, seed)


def squad_records() -> list[dict]:
    """The retrieval evaluation's corpus (SQuAD dev + HotpotQA paragraphs), so its cached index
    and passage vectors are shared."""
    squad, _ = load_squad(SQUAD)
    hotpot, _ = load_hotpot(HOTPOT)
    return corpus_records(squad, hotpot)


DATASETS = {"popqa": (popqa_questions, popqa_records), "squad": (squad_questions, squad_records)}


# -- running ---------------------------------------------------------------------------------

def answer_step(trace_path: str | None) -> dict:
    """The answer step's trace data (grounded, found, quote)."""
    if not trace_path:
        return {}
    from agent.trace import read_trace

    for event in read_trace(Path(trace_path).parent):
        if event.step == "answer":
            return event.data or {}
    return {}


def short_line(answer: str | None) -> str:
    """The reply's first line: the short answer (without its citation or support)."""
    return (answer or "").split("\n\n")[0]


def run_dataset(agent, questions: list[dict], log=print, modes: dict[str, str] = MODES) -> dict:
    rows = []
    start = time.perf_counter()
    for i, q in enumerate(questions, 1):
        row = {"id": q["id"], "question": q["question"], "golds": q["golds"][:5]}
        for mode, route in modes.items():
            t0 = time.perf_counter()
            result = agent.ask(text=q["question"], route=route, image=False)
            secs = time.perf_counter() - t0
            step = answer_step(result.trace_path)
            first = short_line(result.answer)
            cell = {"answer": result.answer, "correct": contains_gold(result.answer, q["golds"]),
                    "answer_line_correct": contains_gold(first, q["golds"]),
                    "seconds": round(secs, 2), "error": result.error,
                    "answer_step_s": round((result.timings_ms or {}).get("answer", 0.0) / 1000, 3)}
            if mode == "search":
                top = agent.tools.wiki.search(result.search_query or q["question"], k=3) if result.search_query else []
                cell.update({
                    "title": top[0].title if top else None,
                    "top_has_gold": bool(top) and contains_gold(top[0].text, q["golds"]),
                    "top3_has_gold": any(contains_gold(p.text, q["golds"]) for p in top),
                    "found": bool(step.get("found")),
                    "short": step.get("short"),
                    "quote": step.get("quote"),
                    "quote_has_gold": contains_gold(step.get("quote"), q["golds"]),
                })
            row[mode] = cell
        rows.append(row)
        if i % 10 == 0 or i == len(questions):
            done = rows
            acc = "  ".join(f"{m} {sum(r[m]['correct'] for r in done) / len(done):.1%}" for m in modes)
            short = sum(r["search"]["answer_line_correct"] for r in done) / len(done) if "search" in modes else 0
            log(f"  {i}/{len(questions)}  {acc}  short {short:.1%}  ({time.perf_counter() - start:.0f} s)")
    return summarise(rows)


def answer_kind(answer: str | None) -> str:
    """How the search route answered: the model's own (passage-supported) sentence, a quote of the
    passage's closest sentence (the model's answer was not supported), or "not found"."""
    text = answer or ""
    if text.startswith("I did not find the answer"):
        return "not_found"
    if text.startswith("Wikipedia's article"):
        return "quote"
    if re.search(r" \[\d+\]$", short_line(text)):
        return "short"
    return "model" if text else "none"


KINDS = ("short", "model", "quote", "not_found")


def _p50(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    return round(values[len(values) // 2], 3) if values else None


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    s = [r["search"] for r in rows]
    d = [r["direct"] for r in rows if "direct" in r]
    for c in s:
        c["kind"] = answer_kind(c["answer"])
        c.setdefault("top3_has_gold", None)  # rows written before the 3-passage answer step lack it
    missing = [c for c in s if not c["top_has_gold"]]
    having = [c for c in s if c["top_has_gold"]]
    having3 = [c for c in s if c["top3_has_gold"]]
    share = lambda xs, f: round(sum(1 for x in xs if f(x)) / len(xs), 3) if xs else None  # noqa: E731
    return {
        "n": n,
        "accuracy": {"search": share(s, lambda c: c["correct"]), "direct": share(d, lambda c: c["correct"])},
        "search": {
            "short_answer_correct": share(s, lambda c: c["answer_line_correct"]),
            "top_passage_has_gold": share(s, lambda c: c["top_has_gold"]),
            "top3_passages_have_gold": (share(s, lambda c: c["top3_has_gold"])
                                        if any(c["top3_has_gold"] is not None for c in s) else None),
            "no_short_answer_when_top3_has_gold": share(having3, lambda c: c["kind"] != "short"),
            "answer_step_p50_s": _p50([c.get("answer_step_s") for c in s]),
            "answer_line_correct": share(s, lambda c: c["answer_line_correct"]),
            "quote_has_gold": share(s, lambda c: c["quote_has_gold"]),
            "quote_has_gold_when_quoted": share([c for c in s if c["quote"]], lambda c: c["quote_has_gold"]),
            "not_found": share(s, lambda c: not c["found"]),
            "correct_when_top_has_gold": share(having, lambda c: c["correct"]),
            "when_top_lacks_gold": {"n": len(missing), "said_not_found": share(missing, lambda c: not c["found"]),
                                    "answered_anyway": share(missing, lambda c: c["found"]),
                                    "answered_and_wrong": share(missing, lambda c: c["found"] and not c["correct"]),
                                    **{f"kind_{k}": share(missing, lambda c, k=k: c["kind"] == k) for k in KINDS}},
            "kinds": {k: {"share": share(s, lambda c, k=k: c["kind"] == k),
                          "correct": share([c for c in s if c["kind"] == k], lambda c: c["correct"])} for k in KINDS},
            "seconds_per_question": round(sum(c["seconds"] for c in s) / n, 2) if n else None,
        },
        "direct": {"seconds_per_question": round(sum(c["seconds"] for c in d) / len(d), 2) if d else None},
        "errors": sum(1 for r in rows for m in MODES if m in r and r[m]["error"]),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="questions per dataset (default 200)")
    parser.add_argument("--datasets", default="popqa,squad", help="comma-separated: popqa, squad")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--llm", default=None, help="LLM spec (default: the starter LLM)")
    parser.add_argument("--llm-runtime", choices=("auto", "llama.cpp", "transformers"), default="auto",
                        help="where the LLM runs (default auto); another runtime or --llm gets its own results file")
    parser.add_argument("--max-answer-tokens", type=int, default=48,
                        help="longest answer in tokens (default 48: answers here are short facts)")
    parser.add_argument("--split", choices=("report", "dev"), default="report",
                        help="report (default; answers.json) or dev: other questions, for tuning (answers_dev.json)")
    parser.add_argument("--modes", default="search,direct", help="comma-separated: search, direct")
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the summary from the rows in bench/results/answers.json (no models run)")
    args = parser.parse_args()
    out_path = RESULTS / (("answers" if args.split == "report" else "answers_dev")
                          + run_suffix(args.llm, args.llm_runtime) + ".json")
    modes = {m: MODES[m] for m in (x.strip() for x in args.modes.split(",")) if m in MODES}
    if "search" not in modes:
        sys.exit("eval_answers: --modes must include search")
    if args.rescore:
        saved = json.loads(out_path.read_text(encoding="utf-8"))
        results = {}
        for name, r in saved["datasets"].items():
            results[name] = {**summarise(r["rows"]), "corpus_passages": r.get("corpus_passages"), "llm": r.get("llm")}
        report(results, saved.get("settings", {}), out_path, args.json)
        return
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATASETS]
    if unknown or not names:
        sys.exit(f"eval_answers: unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    from agent import Agent, Settings
    from tools.common import cache_dir, quiet_transformers

    quiet_transformers()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as out:
        for name in names:
            questions_of, records_of = DATASETS[name]
            t0 = time.perf_counter()
            corpus = write_corpus(records_of(), cache_dir() / "bench")
            settings = {"wiki": str(corpus), "out_dir": Path(out), "max_answer_tokens": args.max_answer_tokens}
            if args.llm:
                settings["llm"] = args.llm
            settings["llm_runtime"] = args.llm_runtime
            agent = Agent(Settings(**settings))
            agent.preload()
            wiki = agent.tools.wiki
            log(f"{name}: corpus {corpus} ({wiki.num_passages} passages; index "
                f"{'built' if getattr(wiki, 'built_index', False) else 'cached'}, ready in {time.perf_counter() - t0:.1f} s)")
            questions = split_questions(questions_of, args.n, args.seed, args.split)
            results[name] = run_dataset(agent, questions, log, modes)
            results[name]["corpus_passages"] = wiki.num_passages
            results[name]["llm"] = agent.tools.llm.name
    report(results, vars(args) | {"json": None, "rescore": None}, out_path, args.json)


def report(results: dict, settings: dict, out_path: Path, as_json: bool) -> None:
    headline = {"n": {k: v["n"] for k, v in results.items()},
                "accuracy": {k: v["accuracy"] for k, v in results.items()},
                "quote_has_gold": {k: v["search"]["quote_has_gold"] for k, v in results.items()},
                "top_passage_has_gold": {k: v["search"]["top_passage_has_gold"] for k, v in results.items()},
                "when_top_lacks_gold": {k: v["search"]["when_top_lacks_gold"] for k, v in results.items()}}
    headline["short_answer_correct"] = {k: v["search"].get("short_answer_correct") for k, v in results.items()}
    headline["top3_passages_have_gold"] = {k: v["search"].get("top3_passages_have_gold") for k, v in results.items()}
    headline["no_short_answer_when_top3_has_gold"] = {k: v["search"].get("no_short_answer_when_top3_has_gold")
                                                      for k, v in results.items()}
    headline["answer_step_p50_s"] = {k: v["search"].get("answer_step_p50_s") for k, v in results.items()}
    save_results(out_path.stem, {**headline, "settings": settings, "datasets": results}, headline, as_json=as_json)
    if as_json:
        return
    pct = lambda x: f"{x:.1%}" if isinstance(x, (int, float)) else "-"  # noqa: E731
    sec = lambda x: f"{x:.2f}" if isinstance(x, (int, float)) else "-"  # noqa: E731
    print("Accuracy: a gold answer is in the text. 'short': the short answer line alone; 'reply': the whole")
    print("search reply (short answer and quoted support). 'top1'/'top3': the top passage / top 3 passages hold one")
    print("(the answer step's ceilings). 'no short|top3': replies without a short answer although a top-3 passage")
    print("holds the gold. 'step p50': the answer step's seconds.")
    print(f"\n{'dataset':<8} {'n':>4} {'short':>7} {'reply':>7} {'direct':>7} {'top1':>7} {'top3':>7} {'quote':>7} "
          f"{'not found':>10} {'no short|top3':>14} {'step p50':>9} {'s/q search':>11} {'s/q direct':>11}")
    for name, r in results.items():
        s = r["search"]
        print(f"{name:<8} {r['n']:>4} {pct(s.get('short_answer_correct', s['answer_line_correct'])):>7} "
              f"{pct(r['accuracy']['search']):>7} {pct(r['accuracy']['direct']):>7} {pct(s['top_passage_has_gold']):>7} "
              f"{pct(s.get('top3_passages_have_gold')):>7} {pct(s['quote_has_gold']):>7} {pct(s['not_found']):>10} "
              f"{pct(s.get('no_short_answer_when_top3_has_gold')):>14} {sec(s.get('answer_step_p50_s')):>9} "
              f"{sec(s['seconds_per_question']):>11} {sec(r['direct']['seconds_per_question']):>11}")
    print("\nSearch-route answers by kind (share of answers, accuracy within the kind):")
    for name, r in results.items():
        print(f"  {name}: " + "; ".join(f"{k} {v['share']:.1%} (correct {v['correct']:.1%})" if v["correct"] is not None
                                      else f"{k} {v['share']:.1%}" for k, v in r["search"]["kinds"].items()))
    print("\nWhen the top passage does not contain a gold answer (search route):")
    for name, r in results.items():
        m = r["search"]["when_top_lacks_gold"]
        if m["n"]:
            print(f"  {name}: {m['n']} questions; said not found {m['kind_not_found']:.1%}, gave a short answer "
                  f"{m['kind_short']:.1%}, quoted the closest sentence {m['kind_quote']:.1%}, gave the model's answer "
                  f"{m['kind_model']:.1%}; wrong answers (not 'not found') {m['answered_and_wrong']:.1%}")
    for name, r in results.items():
        print(f"\nExamples ({name}):")
        for row in r["rows"][:3]:
            print(f"  Q: {row['question']}   gold: {row['golds'][0]}")
            print(f"    search [{'ok' if row['search']['correct'] else 'x '}]: {next(iter((row['search']['answer'] or '').splitlines()), '')[:150]}")
            if "direct" in row:
                print(f"    direct [{'ok' if row['direct']['correct'] else 'x '}]: {(row['direct']['answer'] or '')[:150]}")
    print(f"\nwritten to {out_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
