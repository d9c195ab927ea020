"""Answer generation: a short text answer, grounded in Wikipedia passages when there are some.

A grounded answer (the search route) is a short answer picked out of the top passages
(:mod:`tools.short_answer`), followed by its support: the numbered source and the sentence that
says it, ``Leonardo da Vinci. [1]`` then ``[1] Wikipedia, "Mona Lisa": "The Mona Lisa is ..."``.
A direct answer (the answer route) is the LLM's own, cut to a few sentences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tools.base import ChatModel
from tools.common import load_prompt
from tools.short_answer import extract
from tools.text import CONTENT_STOPWORDS, content_words, loops, split_sentences, stem, stems

NOT_FOUND = "NOT FOUND"


DIRECT_MAX_SENTENCES = 3  # prompts/answer_system.txt asks for "one to three short sentences"


def too_many_sentences(text: str, limit: int = DIRECT_MAX_SENTENCES) -> bool:
    """Has prose (text without line breaks: not a list) begun a sentence after ``limit`` finished ones?"""
    return "\n" not in text.strip() and len(split_sentences(text)) > limit


def drop_partial(text: str) -> str:
    """``text`` without its last, unfinished line (or sentence, for one-line text)."""
    text = text.rstrip()
    if "\n" in text:
        return text.rsplit("\n", 1)[0].rstrip()
    sentences = split_sentences(text)
    return " ".join(sentences[:-1]) if len(sentences) > 1 else text


def _passage_field(passage: Any, name: str) -> str:
    return str(passage.get(name, "") if isinstance(passage, dict) else getattr(passage, name, ""))


@dataclass
class Answer:
    text: str
    found: bool
    title: str | None = None
    url: str | None = None
    quote: str | None = None
    model_reply: str = ""
    how: str = ""
    source: int | None = None  # 1-based position of the quoted passage among the sources
    short: str | None = None  # the phrase picked as the short answer
    confidence: float | None = None  # its share of the softmax over the candidates (tools.short_answer)


class AnswerWriter:
    """Writes answers with a chat model; ``grounded`` for the search route, ``direct`` otherwise."""

    def __init__(self, llm: ChatModel, *, max_new_tokens: int = 160) -> None:
        self.llm = llm
        self.max_new_tokens = max_new_tokens

    def _messages(self, user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": load_prompt("answer_system.txt")}, {"role": "user", "content": user}]

    def direct(self, question: str, *, on_token: Callable[[str], None] | None = None) -> Answer:
        user = load_prompt("answer_direct.txt").format(question=question)
        # The prompt asks for one to three sentences: prose stops after the third (the 135M
        # starter model often runs on to the token limit). A reply that starts repeating itself
        # (it loops on lists) is stopped there and cut back to its last finished line. The
        # result says which happened.
        def done(text: str) -> bool:
            return loops(text) or too_many_sentences(text)

        reply = self.llm.chat(self._messages(user), max_new_tokens=self.max_new_tokens, on_token=on_token,
                              stop=done)
        text, how = reply.strip(), ""
        if loops(text):
            text, how = drop_partial(text), "the model began repeating itself; the reply was cut there"
        elif too_many_sentences(text):
            text = " ".join(split_sentences(text)[:DIRECT_MAX_SENTENCES])
            how = f"cut after {DIRECT_MAX_SENTENCES} sentences, as the prompt asks"
        return Answer(text=text, found=bool(text), model_reply=reply, how=how)

    def grounded(
        self, question: str, passages: Sequence[Any], *, on_token: Callable[[str], None] | None = None
    ) -> Answer:
        """Answer from the top passages (best first, at most :data:`GROUNDED_PASSAGES`).

        The short answer is a span picked out of the passages' best sentences
        (:mod:`tools.short_answer`: entities, numbers, dates and noun phrases of the expected
        type, scored against the question), so the sentence quoted under it supports it word for
        word. A passage that does not mention every name the question asks about (or a sentence
        that gives the model orders) is not used. When no passage yields a candidate, the answer
        says so and names the closest articles."""
        top = list(passages[:GROUNDED_PASSAGES])
        if not top:
            return Answer(text="", found=False)
        fields = [tuple(_passage_field(p, k) for k in ("title", "url", "text")) for p in top]
        usable = []  # (title, text) for the extractor; a passage about something else gets no sentences
        for title, _url, text in fields:
            clean = " ".join(s for s in split_sentences(text) if not addresses_the_model(s))
            usable.append((title, clean if mentions_names(question, f"{title} {clean}") else ""))
        short, cands = extract(question, usable)
        if short is not None and not supported(short.text, short.sentence):
            short = None  # never: the span is cut from the sentence; kept as a guard
        if short is None:
            titles = list(dict.fromkeys(t for t, _u, _x in fields if t))
            closest = closest_sentence(question, usable)
            how = "no sentence of the top passages answers the question" + (
                f" (best guess {cands[0].text!r})" if cands else "")
            if closest is None:
                return Answer(text=not_found_text(titles), found=False, title=fields[0][0], url=fields[0][1], how=how)
            source, sentence = closest
            return Answer(text=not_found_text(titles), found=False, title=fields[source][0], url=fields[source][1],
                          quote=sentence, source=source + 1, how=how + "; the sentence closest to it is quoted")
        title, url, _ = fields[short.source]
        text = short_answer_sentence(short.text)
        if on_token is not None:
            on_token(text)
        return Answer(text=text, found=True, title=title, url=url, quote=short.sentence, source=short.source + 1,
                      model_reply="", short=short.text, confidence=round(short.confidence, 3),
                      how=f"short answer ({short.label}, expected {short.expected}) picked from passage "
                          f"{short.source + 1}, probability {short.confidence:.2f} among {len(cands)} candidates"
                          + (f"; next: {', '.join(t for t, _ in short.runners_up)}" if short.runners_up else ""))


#: How many of the search's passages the grounded answer reads.
GROUNDED_PASSAGES = 3


def short_answer_sentence(span: str) -> str:
    """The short answer as a line: the span with a capital and a full stop."""
    span = span.strip()
    text = span[:1].upper() + span[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def not_found_text(titles: Sequence[str]) -> str:
    """The plain "not found" reply, naming the articles that were found instead."""
    names = [f'"{t}"' for t in titles]
    if not names:
        return "I did not find the answer in Wikipedia."
    if len(names) == 1:
        return f"I did not find the answer in Wikipedia; the closest article was {names[0]}."
    listed = ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"I did not find the answer in Wikipedia; the closest articles were {listed}."


def question_names(question: str) -> set[str]:
    """Stems of the capitalised words after the first (the names a question asks about)."""
    words = [re.sub(r"['’]s$", "", w) for w in re.findall(r"[A-Za-z0-9][\w'’-]*", question)]  # Victoria's
    return {stem(w.lower()) for w in words[1:] if w[0].isupper() and w.lower() not in CONTENT_STOPWORDS}


def mentions_names(question: str, text: str) -> bool:
    """Does ``text`` mention every name the question asks about? A passage that does not is
    about something else, whatever words it shares with the question."""
    names = question_names(question)
    return not names or names <= stems(text) | {w.lower() for w in re.findall(r"\w+", text)}


_PREAMBLE = re.compile(r"^(the answer( to (this|the) question)? is\s*:?|answer\s*:)\s*", re.IGNORECASE)


def _answer_sentence(reply: str, question: str) -> str:
    """The first sentence of the reply that is not the question echoed back, without preamble."""
    asked = " ".join(question.lower().split()).rstrip("?")
    for sentence in split_sentences(reply):
        sentence = _PREAMBLE.sub("", sentence.strip()).strip().strip('"')
        if not sentence or sentence.endswith("?") or sentence.lower().rstrip("?.") == asked:
            continue
        return sentence
    return ""


def answer_sentence_done(reply: str, question: str) -> bool:
    """Has a (partial) reply already completed the sentence :func:`_answer_sentence` will pick?
    A sentence counts as complete once the next one has begun, so generation can stop there
    with the same result as generating to the end."""
    complete = split_sentences(reply)[:-1]
    return bool(complete) and bool(_answer_sentence(" ".join(complete), question))


# Article text is data. A sentence in it that speaks to the model ("ignore previous instructions",
# "reply only with ...", "you are now ...") is an injection attempt: it never counts as support
# for the model's answer, so a model that obeys it gets the article quoted instead.
_TO_THE_MODEL = re.compile(
    r"\b(ignore|disregard|forget)\b[^.]{0,30}\b(previous|prior|above|earlier|all|your)\b[^.]{0,20}"
    r"\b(instructions?|prompts?|directions|rules)\b"
    r"|\b(reply|respond|answer)\b[^.]{0,30}\bonly with\b|\byou are now\b|\bsystem prompt\b"
    r"|^\W*(system|assistant)\s*:",
    re.IGNORECASE,
)


def addresses_the_model(sentence: str) -> bool:
    """Does this sentence of a source give orders to the model (a prompt injection)?"""
    return bool(_TO_THE_MODEL.search(sentence))


def supported(claim: str, evidence: str, max_unsupported: float = 0.2) -> bool:
    """Are (nearly) all content words of ``claim`` found in ``evidence`` (after light stemming)?"""
    words = [stem(w) for w in content_words(claim)]
    if not words:
        return False
    have = stems(evidence)
    missing = [w for w in words if w not in have]
    return len(missing) / len(words) <= max_unsupported


def citation(answer: Answer) -> str | None:
    """The numbered support line of a grounded answer (``[1] Wikipedia, "Title": "sentence"``):
    the sentence that says the short answer, or, when none was found, the sentence closest to
    the question; None when the answer has no source."""
    if not answer.title or not (answer.found or answer.quote):
        return None
    cite = f'[{answer.source or 1}] Wikipedia, "{answer.title}"'
    if answer.quote:
        cite += f': "{answer.quote}"'
    return cite


def with_citation(answer: Answer) -> str:
    """The short answer with its source number, then the numbered support line; a "not found"
    reply with the closest sentence, labelled as such."""
    cite = citation(answer)
    if not cite:
        return answer.text
    if not answer.found:
        return f"{answer.text}\n\nClosest sentence: {cite}"
    return f"{answer.text} [{answer.source or 1}]\n\n{cite}"


def closest_sentence(question: str, passages: Sequence[tuple[str, str]]) -> tuple[int, str] | None:
    """(0-based passage, sentence) of the sentence of ``passages`` ((title, text)) that shares
    most with the question, when it shares any of its words; None otherwise."""
    from tools.short_answer import rank_sentences

    ranked = rank_sentences(question, list(passages))
    if not ranked or ranked[0].overlap <= 0:
        return None
    return ranked[0].source, ranked[0].text
