"""Does the draw route's image-prompt rewrite keep GenEval's objects and counts, within CLIP's 77 tokens?

    .venv/bin/python bench/eval_prompts.py [--data ../shared/data/raw/image_prompts/geneval_evaluation_metadata.jsonl]
        [--n 50] [--seed 0] [--llm starter:smollm2-135m] [--clip-tokenizer PATH] [--json]

Sample: ``--n`` GenEval prompts, stratified by tag: every tag gets ``n // tags`` prompts (50 over
6 tags: 8 each), the remainder goes one each to the tags with the most prompts (ties by name:
color_attr, position), drawn without replacement by ``random.Random(f"{seed}-{tag}")``; listed
in file order. Same data + n + seed = same sample.

Each prompt goes through the agent's draw path exactly as ``agent/nodes.py`` ``draw`` runs it:
the request ``"Show me " + prompt`` -> ``request_subject`` (which strips "Show me"; since issue 18
it keeps "a photo of", a style the scene asks for) -> ``PromptRewriter(llm).rewrite(subject,
min_share=0.8)``. The router is not involved (the draw route is assumed). The final prompt is
the rewriter's output (the LLM's rewrite if its own validator accepted it, else the request
subject, + ", detailed illustration" unless it names a medium); the LLM's raw candidate is the
reply as the rewriter extracts it (first sentence, label removed, word limit), checked whether or
not it was accepted.

Checks (this script's own, independent of the rewriter's validator), against GenEval's
``include`` metadata, on lower-cased word tokens:

* object: the class name (multi-word names as consecutive words) in singular or plural
  ("wine glass"/"wine glasses", "person"/"people", "knife"/"knives", "skis"/"ski"; also the naive
  "+s" plural that GenEval's own prompts use: "benchs", "sheeps"). Strict:
  a synonym ("sofa" for couch, "television" for tv) counts as a dropped object.
* count >= 2: the count, as a digit or number word ("2"/"two"), in front of an occurrence of
  the object with at most 3 words between ("two fluffy white cats"), none of them a boundary
  word (and, with, of, on, the, a, a comma, ...). "a pair of" is not accepted.
* count 1: no number >= 2 nor "several/many/multiple/few/couple/pair/group/some" in that same
  place; "a"/"an"/"one" are not required (recorded only). Stricter than GenEval's detector,
  which takes an include count as a minimum (exact counts come from its ``exclude``): here
  "a bench" -> "two benches" counts as a changed count.
* colours and positions (GenEval's other attributes, reported apart, not in ``kept``): the colour
  in that same place in front of the object; the relation's words ("left of", "above") anywhere.
* diagnostics, not in ``kept``: the text names another GenEval class the request did not ask
  for (GenEval's detector would see an extra object), and the text loops (some three-word run
  occurs 3+ times: "fun, fun, fun").
* tokens: CLIP BPE tokens including start and end must be <= 77. The real CLIP tokenizer is
  used when one is available offline (``--clip-tokenizer`` = a tokenizer folder with vocab.json +
  merges.txt, e.g. a diffusers pipeline's ``tokenizer/``, or CLIP's ``bpe_simple_vocab_16e6.txt.gz``;
  else one shipped by an installed ``clip``/``open_clip`` package); otherwise
  ``tools.image_prompt.approx_clip_tokens``, an estimate, and the output says so. With the real
  tokenizer the estimate is compared with it on every final prompt and LLM candidate.

Writes bench/results/prompts.json; ``--json`` prints only the headline object.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402
from tools.text import loops as repetitive  # noqa: E402  (the validator's own loop test)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "raw" / "image_prompts" / "geneval_evaluation_metadata.jsonl"
CLIP_MAX_TOKENS = 77
WINDOW = 3  # words allowed between a count/colour and its object

# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


def sample_rows(rows: list[dict], n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` rows stratified by ``tag`` (see the module docstring), in file order."""
    by_tag: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_tag[row["tag"]].append(i)
    n = min(n, len(rows))
    order = sorted(by_tag, key=lambda t: (-len(by_tag[t]), t))
    quota = {t: 0 for t in order}
    left = n
    while left:  # equal shares; a tag that runs out passes its share on
        open_tags = [t for t in order if quota[t] < len(by_tag[t])]
        share = max(1, left // len(open_tags))
        for t in open_tags:
            take = min(share, len(by_tag[t]) - quota[t], left)
            quota[t] += take
            left -= take
            if not left:
                break
    picked = []
    for t in order:
        picked += random.Random(f"{seed}-{t}").sample(by_tag[t], quota[t])
    return sorted(picked)


# --------------------------------------------------------------------------------------
# Object / count / attribute checks (pure functions, unit-tested)
# --------------------------------------------------------------------------------------

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
                9: "nine", 10: "ten", 11: "eleven", 12: "twelve"}
_MANY = frozenset({"several", "many", "multiple", "few", "couple", "pair", "group", "dozen", "some"}
                  | {w for k, w in NUMBER_WORDS.items() if k >= 2})
# words that end the run of modifiers in front of an object
_BOUNDARY = frozenset("and with or of on in at to near beside behind above below under next left right "
                      "the a an , . ; :".split())
_IRREGULAR = {"person": {"people", "persons"}, "knife": {"knives"}, "mouse": {"mice"}, "sheep": {"sheep"},
              "skis": {"ski", "skis"}, "scissors": {"scissors"}, "bus": {"buses", "busses"}}


def tokens(text: str) -> list[str]:
    """Lower-case words, digits runs and clause punctuation (kept as boundaries)."""
    return re.findall(r"[a-z]+|\d+|[,.;:]", text.lower().replace("-", " "))


def noun_forms(word: str) -> set[str]:
    """Singular and plural spellings of one (head) noun. The naive "+s" plural is always accepted
    too, because GenEval's own prompts use it ("two toothbrushs", "four knifes", "two sheeps")."""
    forms = {word, word + "s"}
    if word in _IRREGULAR:
        return forms | _IRREGULAR[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    elif word.endswith("y") and word[-2:-1] not in set("aeiou"):
        forms.add(word[:-1] + "ies")
    else:
        forms.add(word + "s")
    if word.endswith("o"):
        forms.add(word + "es")  # potatoes, tomatoes
    return forms


def find_object(toks: list[str], cls: str) -> list[int]:
    """Token positions where the class name (last word singular or plural) starts."""
    words = cls.lower().replace("-", " ").split()
    head = noun_forms(words[-1])
    n = len(words)
    return [i for i in range(len(toks) - n + 1)
            if toks[i:i + n - 1] == words[:-1] and toks[i + n - 1] in head]


def _before(toks: list[str], start: int) -> list[str]:
    """The up to WINDOW+1 words in front of position ``start``, nearest first, up to a boundary word."""
    out = []
    for t in reversed(toks[max(0, start - WINDOW - 1):start]):
        if t in _BOUNDARY:
            break
        out.append(t)
    return out


def count_words(count: int) -> set[str]:
    return {str(count)} | ({NUMBER_WORDS[count]} if count in NUMBER_WORDS else set())


def check_item(text: str, item: dict) -> dict:
    """Check one GenEval ``include`` item in ``text``: {'object', 'count', 'color', 'position', 'article'}.
    'color'/'position' are None when GenEval sets none."""
    toks = tokens(text)
    hits = find_object(toks, item["class"])
    count = int(item.get("count", 1))
    out: dict = {"object": bool(hits)}
    fronts = [_before(toks, h) for h in hits]
    if count >= 2:
        out["count"] = any(count_words(count) & set(f) for f in fronts)
    else:
        plural_nums = {t for f in fronts for t in f if t in _MANY or (t.isdigit() and int(t) >= 2)}
        out["count"] = bool(hits) and not plural_nums
        # the word just before the modifiers: "a wooden bench" -> "a"
        out["article"] = any((h - len(f) > 0 and toks[h - len(f) - 1] in {"a", "an"}) or {"one", "single"} & set(f)
                             for h, f in zip(hits, fronts, strict=True))
    color = item.get("color")
    out["color"] = None if not color else any(color.lower() in f for f in fronts)
    pos = item.get("position")
    if pos:
        rel = tokens(pos[0])
        out["position"] = any(toks[i:i + len(rel)] == rel for i in range(len(toks) - len(rel) + 1))
    else:
        out["position"] = None
    return out


def check_prompt(text: str, include: list[dict]) -> dict:
    """All items of a GenEval prompt: {'objects', 'counts', 'kept', 'attrs', 'missing': [...]}."""
    items = [check_item(text, it) for it in include]
    missing = []
    for it, res in zip(include, items, strict=True):
        if not res["object"]:
            missing.append(f"object {it['class']}")
        elif not res["count"]:
            missing.append(f"count {it.get('count', 1)} {it['class']}")
        for key in ("color", "position"):
            if res[key] is False:
                missing.append(f"{key} {it[key] if key == 'color' else it[key][0]} ({it['class']})")
    objects = all(r["object"] for r in items)
    counts = all(r["count"] for r in items)
    attrs = all(r[k] is not False for r in items for k in ("color", "position"))
    return {"objects": objects, "counts": counts, "kept": objects and counts, "attrs": attrs, "missing": missing}


def extra_classes(text: str, include: list[dict], classes: list[str]) -> list[str]:
    """Other GenEval classes the text names (objects the request did not ask for). A name inside a
    longer one ("dog" in "hot dog", "tv" in "tv remote") does not count, nor a class that is a
    colour the request asks for ("orange")."""
    toks = tokens(text)
    spans = [(i, i + len(c.split()), c) for c in classes for i in find_object(toks, c)]
    spans = [s for s in spans if not any(o[0] <= s[0] and s[1] <= o[1] and o[1] - o[0] > s[1] - s[0] for o in spans)]
    wanted = {it["class"] for it in include}
    colours = {it.get("color") for it in include}
    return sorted({c for _, _, c in spans if c not in wanted and c not in colours})


# --------------------------------------------------------------------------------------
# CLIP token counting
# --------------------------------------------------------------------------------------


def _tokenizer_from(path: Path):
    from transformers import CLIPTokenizer

    if path.is_dir():
        folder = path / "tokenizer" if (path / "tokenizer" / "vocab.json").is_file() else path
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    # CLIP's own bpe_simple_vocab_16e6.txt.gz: vocab built as clip/simple_tokenizer.py does
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    merges = [m for m in lines if len(m.split()) == 2]
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    syms = list(bytes_to_unicode().values())
    vocab = syms + [s + "</w>" for s in syms] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges],
                         model_max_length=CLIP_MAX_TOKENS)


def _installed_bpe() -> Path | None:
    for mod in ("clip", "open_clip"):
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            continue
        if spec and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                found = sorted(Path(loc).glob("bpe_simple_vocab_16e6.txt.gz"))
                if found:
                    return found[0]
    return None


def token_counter(path: Path | None):
    """(count function, description, is_real). Real CLIP BPE when available, else the estimate."""
    from tools.image_prompt import approx_clip_tokens

    source = path or _installed_bpe()
    if source is not None:
        tok = _tokenizer_from(Path(source))
        return (lambda text: len(tok(text, truncation=False).input_ids)), f"CLIP BPE tokenizer from {source}", True
    return approx_clip_tokens, "ESTIMATE: tools.image_prompt.approx_clip_tokens (no CLIP tokenizer installed)", False


# --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GenEval evaluation_metadata.jsonl")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm", default=None, help="LLM spec (default: the starter)")
    parser.add_argument("--clip-tokenizer", type=Path, default=None,
                        help="CLIP tokenizer folder (vocab.json + merges.txt) or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"eval_prompts: no data file {args.data}")
    if args.clip_tokenizer is not None and not args.clip_tokenizer.exists():
        sys.exit(f"eval_prompts: no CLIP tokenizer at {args.clip_tokenizer}")

    from tools.common import quiet_transformers
    from tools.image_prompt import PromptRewriter, _clean_reply, _limit_words, approx_clip_tokens, request_subject
    from tools.llm import STARTER_LLM, LocalLLM

    quiet_transformers()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    picked = sample_rows(rows, args.n, args.seed)
    classes = sorted({it["class"] for row in rows for it in row["include"]})
    count_tokens, counter_name, real_tokens = token_counter(args.clip_tokenizer)
    llm = LocalLLM(args.llm or STARTER_LLM)
    t0 = time.perf_counter()
    llm.load()
    load_s = time.perf_counter() - t0
    rewriter = PromptRewriter(llm)
    items = []
    start = time.perf_counter()
    for k, idx in enumerate(picked, start=1):
        row = rows[idx]
        print(f"eval_prompts: {k}/{len(picked)} {row['prompt']!r}", file=sys.stderr, flush=True)
        request = "Show me " + row["prompt"]
        subject = request_subject(request.strip())  # as nodes.draw: request_subject(question_of(state))
        t0 = time.perf_counter()
        result = rewriter.rewrite(subject, min_share=0.8)  # as nodes._rewrite for the draw route
        secs = time.perf_counter() - t0
        candidate = _limit_words(_clean_reply(result.model_reply), rewriter.max_words)
        final_check = check_prompt(result.prompt, row["include"])
        cand_check = check_prompt(candidate, row["include"])
        n_tok = count_tokens(result.prompt)
        items.append({
            "line": idx, "tag": row["tag"], "geneval_prompt": row["prompt"], "include": row["include"],
            "request": request, "subject": subject, "subject_kept": check_prompt(subject, row["include"])["kept"],
            "final_prompt": result.prompt, "rewritten": result.rewritten, "rewriter_note": result.note,
            "llm_candidate": candidate, "model_reply": result.model_reply,
            "final": final_check, "llm": cand_check,
            "tokens": n_tok, "within_77": n_tok <= CLIP_MAX_TOKENS, "approx_tokens": approx_clip_tokens(result.prompt),
            "llm_tokens": count_tokens(candidate) if candidate else 0,
            "llm_approx_tokens": approx_clip_tokens(candidate) if candidate else 0,
            "llm_extra_classes": extra_classes(candidate, row["include"], classes),
            "llm_repetitive": repetitive(candidate), "seconds": round(secs, 2),
        })
    total_s = time.perf_counter() - start
    n = len(items)

    def share(key) -> float:
        return round(sum(1 for it in items if key(it)) / n, 3) if n else 0.0

    headline = {"n": n, "kept": share(lambda it: it["final"]["kept"]), "within_77": share(lambda it: it["within_77"]),
                "rewritten": share(lambda it: it["rewritten"]), "llm_rewrite_kept": share(lambda it: it["llm"]["kept"]),
                "token_counter": "clip" if real_tokens else "estimate"}
    if real_tokens:  # how good is the rewriter's own estimate?
        pairs = [(it["approx_tokens"], it["tokens"]) for it in items]
        pairs += [(it["llm_approx_tokens"], it["llm_tokens"]) for it in items if it["llm_candidate"]]
        summary_tokens = {"pairs": len(pairs), "estimate_below_real": sum(a < r for a, r in pairs),
                          "max_over": max((a - r for a, r in pairs), default=0),
                          "max_under": max((r - a for a, r in pairs), default=0),
                          "mean_diff": round(sum(a - r for a, r in pairs) / len(pairs), 2) if pairs else 0.0}
    else:
        summary_tokens = None
    per_tag = {}
    for tag in sorted({it["tag"] for it in items}):
        sub = [it for it in items if it["tag"] == tag]
        per_tag[tag] = {"n": len(sub),
                        "kept": round(sum(it["final"]["kept"] for it in sub) / len(sub), 3),
                        "rewritten": round(sum(it["rewritten"] for it in sub) / len(sub), 3),
                        "llm_rewrite_kept": round(sum(it["llm"]["kept"] for it in sub) / len(sub), 3),
                        "llm_attrs_kept": round(sum(it["llm"]["kept"] and it["llm"]["attrs"] for it in sub) / len(sub), 3)}
    accepted = [it for it in items if it["rewritten"]]
    why_llm = Counter(m.split()[0] for it in items for m in it["llm"]["missing"])
    summary = {
        **headline,
        "detail": {
            "final_objects_kept": share(lambda it: it["final"]["objects"]),
            "final_counts_kept": share(lambda it: it["final"]["counts"]),
            "final_attrs_kept": share(lambda it: it["final"]["kept"] and it["final"]["attrs"]),
            "llm_objects_kept": share(lambda it: it["llm"]["objects"]),
            "llm_counts_kept": share(lambda it: it["llm"]["counts"]),
            "llm_attrs_kept": share(lambda it: it["llm"]["kept"] and it["llm"]["attrs"]),
            "llm_within_77": share(lambda it: 0 < it["llm_tokens"] <= CLIP_MAX_TOKENS),
            "accepted_rewrites_kept": (round(sum(it["final"]["kept"] for it in accepted) / len(accepted), 3)
                                       if accepted else None),
            "n_accepted": len(accepted),
            "subject_kept": share(lambda it: it["subject_kept"]),
            "llm_missing_kinds": dict(why_llm),
            "llm_adds_other_class": share(lambda it: it["llm_extra_classes"]),
            "llm_repetitive": share(lambda it: it["llm_repetitive"]),
            "final_adds_other_class": share(lambda it: extra_classes(it["final_prompt"], it["include"], classes)),
            "final_repetitive": share(lambda it: repetitive(it["final_prompt"])),
            "max_tokens": max((it["tokens"] for it in items), default=0),
            "max_approx_tokens": max((it["approx_tokens"] for it in items), default=0),
            "max_llm_tokens": max((it["llm_tokens"] for it in items), default=0),
        },
        "estimate_vs_clip_tokens": summary_tokens,
        "per_tag": per_tag, "token_counter_source": counter_name, "llm": llm.name, "data": str(args.data),
        "sample": {"n": args.n, "seed": args.seed, "lines": picked,
                   "method": "equal share per tag, remainder to the largest tags; random.Random(f'{seed}-{tag}')"},
        "load_s": round(load_s, 1), "rewrite_s_total": round(total_s, 1),
        "rewrite_s_mean": round(total_s / n, 2) if n else 0.0,
        "items": items,
    }
    out = save_results("prompts", summary, headline, as_json=args.json)
    if args.json:
        return
    d = summary["detail"]
    print(f"{n} GenEval prompts (seed {args.seed}), LLM {llm.name}; load {load_s:.1f} s, "
          f"{summary['rewrite_s_mean']:.2f} s per rewrite")
    print(f"tokens: {counter_name}")
    print(f"{'':<32} {'share':>6}")
    for label, v in [("final prompt keeps objects+counts", headline["kept"]),
                     ("final prompt within 77 tokens", headline["within_77"]),
                     ("LLM rewrite accepted (rewritten)", headline["rewritten"]),
                     ("LLM candidate keeps objects+counts", headline["llm_rewrite_kept"]),
                     ("  objects only", d["llm_objects_kept"]), ("  counts (object needed too)", d["llm_counts_kept"]),
                     ("  + colours/positions", d["llm_attrs_kept"]),
                     ("LLM candidate names another class", d["llm_adds_other_class"]),
                     ("LLM candidate loops (3-gram x3)", d["llm_repetitive"]),
                     ("final prompt loops (3-gram x3)", d["final_repetitive"]),
                     ("accepted rewrites that keep all", d["accepted_rewrites_kept"] or 0.0),
                     ("request subject keeps all", d["subject_kept"])]:
        print(f"{label:<34} {v:>6.1%}")
    if summary_tokens:
        print(f"estimate vs CLIP tokens over {summary_tokens['pairs']} texts: below real in "
              f"{summary_tokens['estimate_below_real']}, mean {summary_tokens['mean_diff']:+.1f}, "
              f"max over {summary_tokens['max_over']}, max under {summary_tokens['max_under']}")
    print(f"max tokens: final {d['max_tokens']}, LLM candidate {d['max_llm_tokens']}")
    print(f"\n{'tag':<14} {'n':>3} {'kept':>6} {'rewritten':>9} {'llm kept':>9} {'+attrs':>7}")
    for tag, m in per_tag.items():
        print(f"{tag:<14} {m['n']:>3} {m['kept']:>6.0%} {m['rewritten']:>9.0%} {m['llm_rewrite_kept']:>9.0%} "
              f"{m['llm_attrs_kept']:>7.0%}")
    print("\nexamples (first of each tag):")
    shown = set()
    for it in items:
        if it["tag"] in shown:
            continue
        shown.add(it["tag"])
        print(f"[{it['tag']}] {it['geneval_prompt']!r} -> subject {it['subject']!r}")
        print(f"   LLM:   {it['llm_candidate']!r} "
              f"{'ok' if it['llm']['kept'] else 'MISSING ' + ', '.join(it['llm']['missing'])}")
        print(f"   final: {it['final_prompt']!r} ({'rewrite' if it['rewritten'] else 'fallback'}, {it['tokens']} tokens)")
    print(f"\nwritten to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
