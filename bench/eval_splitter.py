"""Sentence splitting after abbreviations, on SQuAD dev contexts: the old hand regexes vs pysbd vs
the project's splitter (``tools.text.split_sentences``).

    .venv/bin/python bench/eval_splitter.py [--json]

Data: every SQuAD v1.1 dev context (2,067 Wikipedia paragraphs), whitespace collapsed.

Gold, two kinds of stop:

* **Abbreviation stops**: a "." after St, Dr, Mr, Mrs, Ms, Prof, Jr, Sr, No, Gen, Gov, Sen, Rev,
  Lt, Col, Capt, Inc, Co, Corp, Ltd, vs, etc, c, ca, b, d, fl, approx, Mt, Ft, U.S, U.K, U.N,
  e.g, i.e, a.m, p.m or a single capital letter (initials: "J. R. R."), followed by a space.
  Each one was read in context; the :data:`ABBREVIATION_SENTENCE_ENDS` below end a sentence
  ("... 6:00 p.m. Eastern Time" does not, "... the Saturn V. The S-IB ..." does), every other
  one does not. A split at one that does not is a **wrong split**; no split at one that does is
  a **missed boundary**.
* **Ordinary sentence ends**: ".", "!" or "?" right after a lower-case word of 3+ letters or a
  number (not an abbreviation above), optional closing quotes or brackets, a space, then a
  capital letter or digit (optionally after an opening quote or bracket): "... 517 yards.
  Running back ...". Nearly all are real ends; no split there is a **missed boundary**.

A splitter "splits at" a stop when one of its sentences ends right after it (closing quotes and
brackets after the stop may go with it). Splitters: the two regexes the project used before
(``split_sentences`` for answers, ``PASSAGE_SENTENCE_END`` for passages), plain pysbd 0.3.4, and
the project's splitter (pysbd with Wikipedia's number abbreviations c./ca./fl./b./d.). Nothing
was tuned on this data: the extra abbreviations come from the issue ("c. 1503") and Wikipedia
style.

Writes bench/results/splitter.json; ``--json`` prints only that object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402

DEFAULT_SQUAD = REPO.parent / "shared" / "data" / "raw" / "squad_v1.1_dev" / "dev-v1.1.json"

ABBREVIATION_STOP = re.compile(
    r"(?<![\w.])(St|Dr|Mr|Mrs|Ms|Prof|Jr|Sr|No|Nos|Gen|Gov|Sen|Rev|Lt|Col|Capt|Inc|Co|Corp|Ltd|vs|etc"
    r"|c|ca|b|d|fl|approx|Mt|Ft|U\.S|U\.K|U\.N|e\.g|i\.e|a\.m|p\.m|[A-Z])\.(?=\s)")
ORDINARY_STOP = re.compile(r"(?<![\w.])(?:[a-z]{3,}|\d+)([.!?])[\"')\]’”]*\s+(?=[\"'(\[“‘]?[A-Z0-9])")
CLOSERS = "\"')]’”"

#: Abbreviation stops that end a sentence, read in context: (paragraph number in file order,
#: offset of the stop in the whitespace-collapsed context). Every other abbreviation stop does not.
ABBREVIATION_SENTENCE_ENDS = frozenset({
    (24, 273),    # ... as opposed to Super Bowl L. The use of Roman numerals ...
    (186, 172),   # ... near Foote Ave. and Kiowa St. He chose ...
    (212, 476),   # ... Madison Ave. and 81st St. A long-time friend ...
    (269, 362),   # ... we say that X reduces to Y. There are ...
    (271, 162), (271, 263), (272, 74), (272, 371), (280, 138),  # complexity classes: "... in P. Because ..."
    (494, 191),   # ... broadcast from 19.2°E. This was ...
    (592, 361), (615, 539),  # ... around 30 °C. This gives ...
    (713, 53), (713, 385), (727, 98), (732, 292), (739, 233),  # ... the Saturn V. The ...
    (731, 301),   # ... Richard F. Gordon, Jr. Conrad and Bean carried ...
    (1006, 406), (1019, 1131),  # ... held by the V&A. With over 600,000 drawings ...
    (1054, 700), (1082, 351),  # ... Companies, Inc. Woods retained ...
    (1199, 422), (1251, 486), (1302, 648), (1854, 414), (1899, 859),  # ..., etc. The largest ...
    (1262, 265),  # ... with vitamin D. Not only ...
    (1752, 519),  # ... Schinzel's hypothesis H. Brocard's conjecture ...
    (1975, 782),  # ... from outside the U.S. One Congolese bishop ...
    (2043, 908),  # ... exchanging by B. This description ...
})

# The regexes the project used before pysbd (tools/text.py up to INDEX_VERSION 2), kept here as
# the baseline.
OLD_SPLIT_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
OLD_PASSAGE_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def load_contexts(path: Path) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    return [" ".join(p["context"].split()) for article in data for p in article["paragraphs"]]


def gold_stops(contexts: list[str]) -> list[dict]:
    """Every abbreviation and ordinary stop: ``{para, pos, kind, abbr, boundary}``."""
    stops = []
    for i, text in enumerate(contexts):
        abbr_pos = set()
        for m in ABBREVIATION_STOP.finditer(text):
            pos = m.end() - 1
            abbr_pos.add(pos)
            abbr = m.group(1) if len(m.group(1)) > 1 or m.group(1).islower() else "initial"
            stops.append({"para": i, "pos": pos, "kind": "abbreviation", "abbr": abbr,
                          "boundary": (i, pos) in ABBREVIATION_SENTENCE_ENDS})
        for m in ORDINARY_STOP.finditer(text):
            pos = m.start(1)
            if pos not in abbr_pos:
                stops.append({"para": i, "pos": pos, "kind": "ordinary", "abbr": None, "boundary": True})
    return stops


def _regex_ends(pattern: re.Pattern) -> Callable[[str], set[int]]:
    return lambda text: {m.start() for m in pattern.finditer(text)}


def _spans_ends(spans: Callable[[str], list[tuple[int, int]]]) -> Callable[[str], set[int]]:
    return lambda text: {b for _, b in spans(text)}


def splitters() -> dict[str, Callable[[str], set[int]]]:
    """name -> function giving the offsets where each sentence of a text ends."""
    import pysbd

    from tools.text import _align, sentence_spans

    plain = pysbd.Segmenter(language="en", clean=False)
    return {
        "regex_answers": _regex_ends(OLD_SPLIT_SENTENCES),
        "regex_passages": _regex_ends(OLD_PASSAGE_SENTENCE_END),
        "pysbd": _spans_ends(lambda text: _align(text, plain.segment(text))),
        "project": _spans_ends(sentence_spans),
    }


def splits_at(text: str, pos: int, ends: set[int]) -> bool:
    """Does a sentence end right after the stop at ``pos`` (closing quotes/brackets may follow)?"""
    j = pos + 1
    if j in ends:
        return True
    while j < len(text) and text[j] in CLOSERS:
        j += 1
        if j in ends:
            return True
    return False


def score(contexts: list[str], stops: list[dict], ends_of: Callable[[str], set[int]]) -> dict:
    t0 = time.perf_counter()
    ends = [ends_of(text) for text in contexts]
    seconds = time.perf_counter() - t0
    wrong, missed_abbr, missed_ord = [], [], []
    for s in stops:
        split = splits_at(contexts[s["para"]], s["pos"], ends[s["para"]])
        if s["kind"] == "abbreviation" and not s["boundary"] and split:
            wrong.append(s)
        elif s["boundary"] and not split:
            (missed_abbr if s["kind"] == "abbreviation" else missed_ord).append(s)
    by_abbr: dict[str, int] = {}
    for s in wrong:
        by_abbr[s["abbr"]] = by_abbr.get(s["abbr"], 0) + 1
    words = sum(len(t.split()) for t in contexts)
    example = [contexts[s["para"]][max(0, s["pos"] - 40):s["pos"] + 30] for s in wrong[:5]]
    return {"wrong_splits_after_abbreviation": len(wrong),
            "missed_boundaries_after_abbreviation": len(missed_abbr),
            "missed_ordinary_boundaries": len(missed_ord),
            "missed_boundaries": len(missed_abbr) + len(missed_ord),
            "wrong_splits_by_abbreviation": dict(sorted(by_abbr.items(), key=lambda kv: -kv[1])),
            "sentences": sum(len(e) for e in ends),
            "ms_per_1k_words": round(seconds * 1000 / words * 1000, 2),
            "wrong_split_examples": example}


def run(squad: Path) -> dict:
    contexts = load_contexts(squad)
    stops = gold_stops(contexts)
    abbr = [s for s in stops if s["kind"] == "abbreviation"]
    summary = {
        "data": {"squad": str(squad), "paragraphs": len(contexts), "words": sum(len(t.split()) for t in contexts)},
        "gold": {"abbreviation_stops": len(abbr),
                 "abbreviation_stops_not_ending_a_sentence": sum(not s["boundary"] for s in abbr),
                 "abbreviation_stops_ending_a_sentence": sum(s["boundary"] for s in abbr),
                 "ordinary_sentence_ends": len(stops) - len(abbr)},
        "splitters": {},
    }
    for name, ends_of in splitters().items():
        summary["splitters"][name] = score(contexts, stops, ends_of)
    return summary


def print_table(summary: dict, written: Path) -> None:
    g = summary["gold"]
    print(f"SQuAD dev contexts: {summary['data']['paragraphs']} paragraphs; {g['abbreviation_stops']} abbreviation "
          f"stops ({g['abbreviation_stops_not_ending_a_sentence']} inside a sentence, "
          f"{g['abbreviation_stops_ending_a_sentence']} ending one), {g['ordinary_sentence_ends']} ordinary sentence ends")
    print(f"{'splitter':<16} {'wrong splits':>12} {'missed (abbr)':>13} {'missed (ord)':>12} {'ms/1k words':>11}")
    for name, r in summary["splitters"].items():
        print(f"{name:<16} {r['wrong_splits_after_abbreviation']:>12} {r['missed_boundaries_after_abbreviation']:>13} "
              f"{r['missed_ordinary_boundaries']:>12} {r['ms_per_1k_words']:>11.1f}")
    print(f"written to {written.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, default=DEFAULT_SQUAD, help="SQuAD v1.1 dev JSON")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args()
    if not args.squad.is_file():
        sys.exit(f"eval_splitter: no data file {args.squad}")
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        summary = run(args.squad)
    written = save_results("splitter", summary, as_json=args.json)
    if not args.json:
        print_table(summary, written)


if __name__ == "__main__":
    main()
