"""Answer generation: a short text answer, grounded in Wikipedia passages when there are some.

Small local models answer best from a short context, so the grounded answer is written from the
single passage that best supports the question, and the reply quotes that passage's best
sentence with the article's title, so a reader can check it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tools.base import ChatModel
from tools.common import load_prompt
from tools.text import (CONTENT_STOPWORDS, content_words, loops, padded_phrase, split_sentences, stem, stems,
                        title_subject)

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


def best_sentence(question: str, text: str) -> str:
    """The sentence of ``text`` sharing most content words with the question (first on ties)."""
    wanted = stems(question)
    best, best_score = "", -1.0
    for sentence in split_sentences(text):
        words = stems(sentence)
        score = len(wanted & words) + 0.01 * min(len(words), 25) / 25  # prefer informative sentences
        if score > best_score:
            best, best_score = sentence, score
    return best


def _passage_field(passage: Any, name: str) -> str:
    return str(passage.get(name, "") if isinstance(passage, dict) else getattr(passage, name, ""))


def _clip_words(text: str, limit: int, keep: str = "") -> str:
    """At most ``limit`` words of ``text``, centred on the sentence ``keep`` when it is given."""
    words = text.split()
    if len(words) <= limit:
        return text
    start = 0
    if keep:
        at = text.find(keep)
        if at >= 0:
            start = max(0, len(text[:at].split()) - limit // 3)
    return " ".join(words[start : start + limit])


@dataclass
class Answer:
    text: str
    found: bool
    title: str | None = None
    url: str | None = None
    quote: str | None = None
    model_reply: str = ""
    how: str = ""


class AnswerWriter:
    """Writes answers with a chat model; ``grounded`` for the search route, ``direct`` otherwise."""

    def __init__(self, llm: ChatModel, *, max_new_tokens: int = 160, passage_words: int = 160) -> None:
        self.llm = llm
        self.max_new_tokens = max_new_tokens
        self.passage_words = passage_words

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
        """Answer from the passages (best first).

        The model reads the top passage and answers in one sentence. The answer is kept only if
        the passage supports it (nearly all its content words occur in the passage or the
        question); otherwise the passage's best sentence is given instead, so nothing the
        passage does not say is presented as its answer. When even that sentence shares nothing
        with the question, the answer says it was not found."""
        if not passages:
            return Answer(text="", found=False)
        top = passages[0]
        title, url, text = (_passage_field(top, k) for k in ("title", "url", "text"))
        quote = best_sentence(question, text)
        asked = stems(question)
        about = mentions_names(question, f"{title} {text}")
        # The quote is relevant when it shares a word with the question beyond the article's name,
        # or when the article is the very thing asked about ("In what country is X?" -> article X).
        relevant = about and (bool((stems(quote) & asked) - stems(title)) or names_article(question, title))
        user = load_prompt("answer_grounded.txt").format(
            title=title, passage=_clip_words(text, self.passage_words, quote), question=question
        )
        messages = [{"role": "system", "content": load_prompt("answer_grounded_system.txt")},
                    {"role": "user", "content": user}]
        reply = self.llm.chat(messages, max_new_tokens=min(self.max_new_tokens, 64), on_token=on_token,
                              stop=lambda text: answer_sentence_done(text, question))
        first = _answer_sentence(reply, question)
        evidence = " ".join(s for s in split_sentences(text) if not addresses_the_model(s))
        if about and first and supported(first, evidence + " " + question + " " + title) and stems(first) - asked:
            support = best_sentence(first + " " + question, text) or quote  # the sentence backing the answer
            return Answer(text=first, found=True, title=title, url=url, quote=support or None, model_reply=reply,
                          how="model answer, supported by the passage")
        if quote and relevant:
            return Answer(text=f'Wikipedia\'s article "{title}" says: "{quote}"', found=True, title=title, url=url,
                          quote=quote, model_reply=reply,
                          how="the model's answer was not supported by the passage; quoting the passage instead")
        return Answer(text=f"I did not find the answer in Wikipedia (the closest article, \"{title}\", does not say).",
                      found=False,
                      title=title, url=url, quote=None, model_reply=reply,
                      how="neither the model's answer nor any sentence of the passage matched the question")


def question_names(question: str) -> set[str]:
    """Stems of the capitalised words after the first (the names a question asks about)."""
    words = [re.sub(r"['’]s$", "", w) for w in re.findall(r"[A-Za-z0-9][\w'’-]*", question)]  # Victoria's
    return {stem(w.lower()) for w in words[1:] if w[0].isupper() and w.lower() not in CONTENT_STOPWORDS}


def names_article(question: str, title: str) -> bool:
    """Does the question name the article's subject ("What is X's occupation?" and article "X (politician)")?"""
    name = title_subject(title).strip()
    return bool(name) and len(name) > 2 and padded_phrase(name) in padded_phrase(question)


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
    """The line naming the article an answer came from (and its supporting sentence), or None
    when the answer names it already or has no source."""
    if not answer.title or not answer.found:
        return None
    if answer.quote and answer.quote in answer.text:
        return None  # the answer is the quote, with its article named
    cite = f'Source: Wikipedia, "{answer.title}"'
    if answer.quote:
        cite += f': "{answer.quote}"'
    return cite


def with_citation(answer: Answer) -> str:
    """The answer text followed by the article it came from and the supporting sentence."""
    cite = citation(answer)
    return f"{answer.text}\n\n{cite}" if cite else answer.text
