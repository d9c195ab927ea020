"""Search and answer image prompts: are they scenes, free of citation text, quotes and the question?

    .venv/bin/python bench/eval_scene_prompts.py [--routes search,answer] [--n 80] [--llm SPEC] [--json]

Data: the search- and answer-route requests of ``bench/data/natural_requests.jsonl`` (80 each,
typed and spoken, written for the routing evaluation, not for this one). Each runs through the
real agent (``Agent.ask(route=..., image=True)``, default settings: the default Wikipedia corpus,
the starter LLM, no image model, so the prompt labels the card and the LLM does not rewrite it).
The prompt is ``Result.image_prompt``.

``before`` is the prompt the code before issue 18 built from the same run (``title. first answer
sentence`` on the search route, ``question. first reply sentence`` on the answer route, plus
", detailed illustration"), recomputed from the result, so both see the same answer.

Measures, per route and system (share of requests):

* **boilerplate**: :func:`tools.image_prompt.has_boilerplate` finds citation words ("Wikipedia",
  "article", "according to"), quote marks, bracketed reference numbers, or the question's text
  (the whole question, or its first three words, its framing). Target 0.
* **question**: the question's text alone (part of boilerplate).
* **working** (answer route): the prompt, less the question's own words, holds a word that shows
  the model at work or talking ("I", "you", "let's", "step", "solve", "=", ...: the same list the
  prompt builder filters on, so this checks the wiring, not the list).
* **described** (search route): the prompt says more than the article's title and the short
  answer (a description from the article was found).

Writes ``bench/results/scene_prompts.json``; ``--json`` prints only the headline.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402
from tools.image_prompt import _WORKING, PromptRewriter, has_boilerplate  # noqa: E402
from tools.text import content_words, split_sentences  # noqa: E402

DATA = REPO / "bench" / "data" / "natural_requests.jsonl"


def before_source(question: str, answer: str, title: str | None) -> str:
    """``tools.image_prompt.source_for_answer`` before issue 18 (commit 25c6df5)."""
    first = next(iter(split_sentences(answer)), answer)
    topic = title or question.rstrip("?")
    return f"{topic}. {first}"[:400] if first else topic[:400]


def body_of(result) -> str:
    """The answer as the graph state's ``answer_body`` holds it: the reply's first line without
    its source number."""
    return re.sub(r"\s*\[\d+\]$", "", (result.answer or "").split("\n\n")[0]).strip()


def measure(rows: list[dict]) -> dict:
    n = len(rows)

    def share(key):
        return sum(bool(r[key]) for r in rows) / n if n else None
    return {"n": n, "boilerplate": share("boilerplate"), "question": share("question"),
            "working": share("working"), "described": share("described")}


def not_asked(prompt: str, question: str) -> str:
    """The prompt's words that are not the question's ("a speech for my friend" asked for "my")."""
    asked = set(re.findall(r"[a-z0-9']+", question.lower()))
    return " ".join(w for w in prompt.split() if re.sub(r"[^a-z0-9']", "", w.lower()) not in asked)


def score(prompt: str, question: str, route: str, plain_subject: str) -> dict:
    found = has_boilerplate(prompt, question)
    extra = set(content_words(prompt)) - set(content_words(plain_subject)) - {"detailed", "illustration"}
    return {"prompt": prompt, "boilerplate": found, "question": "the question" in found,
            "working": route == "answer" and bool(_WORKING.search(not_asked(prompt, question))),
            "described": route == "search" and bool(extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", default="search,answer")
    parser.add_argument("--n", type=int, default=80, help="requests per route (default: all 80)")
    parser.add_argument("--llm", default=None, help="LLM spec (default: the starter LLM)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    from agent import Agent, Settings
    from tools.common import quiet_transformers

    quiet_transformers()
    requests = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    plain = PromptRewriter(None).plain  # type: ignore[arg-type]  (plain() never calls the model)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as out:
        settings = {"out_dir": Path(out)}
        if args.llm:
            settings["llm"] = args.llm
        agent = Agent(Settings(**settings))
        for route in [r.strip() for r in args.routes.split(",") if r.strip()]:
            rows = [r for r in requests if r["route"] == route][: args.n]
            scored = {"before": [], "now": []}
            t0 = time.perf_counter()
            for i, row in enumerate(rows, 1):
                question = row["text"]
                result = agent.ask(text=question, route=route, image=True)
                body = body_of(result)
                title = result.sources[0]["title"] if route == "search" and result.sources else None
                found = result.answer_found is not False
                old = plain(before_source(question, body if found else "", title), "").prompt
                subject = f"{title or ''} {body}"
                scored["now"].append({"request": question, "answer": body, **score(result.image_prompt or "", question,
                                                                                    route, subject)})
                scored["before"].append({"request": question, **score(old, question, route, subject)})
                if i % 20 == 0 or i == len(rows):
                    log(f"  {route}: {i}/{len(rows)} ({time.perf_counter() - t0:.0f} s)")
            results[route] = {system: {**measure(s), "rows": s} for system, s in scored.items()}

    headline = {route: {system: {k: v for k, v in r.items() if k != "rows"} for system, r in by.items()}
                for route, by in results.items()}
    if not args.json:
        print(f"\n{'route':7} {'system':7} {'n':>3} {'boilerplate':>12} {'question':>9} {'working':>8} {'described':>10}")
        for route, by in headline.items():
            for system, m in by.items():
                print(f"{route:7} {system:7} {m['n']:3d} {m['boilerplate']:12.1%} {m['question']:9.1%} "
                      f"{m['working']:8.1%} {m['described']:10.1%}")
        for route, by in results.items():
            print(f"\n{route}: first prompts (before -> now)")
            for old, new in list(zip(by["before"]["rows"], by["now"]["rows"]))[:8]:
                print(f"  {new['request']!r}\n    before: {old['prompt']!r}\n    now:    {new['prompt']!r}")
            bad = [r for r in by["now"]["rows"] if r["boilerplate"] or r["working"]]
            for r in bad:
                print(f"  NOT CLEAN {r['request']!r} -> {r['prompt']!r} {r['boilerplate']}")
    out_path = save_results("scene_prompts", {"data": str(DATA.relative_to(REPO)), "results": results,
                                              "headline": headline}, headline, as_json=args.json)
    if not args.json:
        print(f"\nwrote {out_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
