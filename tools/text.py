"""Text helpers shared by the tools and the agent: words, stopwords, stems, sentences, titles.

Two vocabularies live here on purpose, and differ:

* **Index terms** (:class:`TextTokenizer`, :data:`INDEX_STOPWORDS`, :func:`plural_stem`): what
  BM25 indexes and what the live backend matches paragraphs on. Accent-folded Unicode words of
  2+ characters, English function words dropped, Snowball-stemmed (or plural-stemmed without
  PyStemmer). Changing them changes the offline index (bump ``INDEX_VERSION``).
* **Content words** (:func:`content_words`, :data:`CONTENT_STOPWORDS`, :func:`stem`): what the
  answer checks and the follow-up logic compare. ASCII words, a shorter stopword list that also
  drops request words ("tell", "please", "name", ...), and a light suffix stripper.

One sentence splitter serves the whole project: :func:`split_sentences` (answers, replies, and
long Wikipedia paragraphs cut into passages), built on ``pysbd`` (rule-based, maintained, knows
English abbreviations: "St. Louis", "Dr. No", "U.S.", "J. R. R. Tolkien") with a few
Wikipedia abbreviations added ("c. 1503", "b. 1685", "fl. 1200"). ``bench/eval_splitter.py``
measures it against the hand regex it replaced.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata

# --------------------------------------------------------------------------------------------
# Index terms (BM25, live paragraph choice)

_INDEX_TOKEN = re.compile(r"(?u)\b\w\w+\b")

#: English function words dropped from index terms (question words included: the corpus never
#: answers "what").
INDEX_STOPWORDS = frozenset("""
a about above after again against all am an and any are aren as at be because been before being
below between both but by can cannot could couldn did didn do does doesn doing don down during
each few for from further had hadn has hasn have haven having he her here hers herself him himself
his how i if in into is isn it its itself just let ll me more most mustn my myself no nor not now
of off on once only or other ought our ours ourselves out over own re same shan she should
shouldn so some such than that the their theirs them themselves then there these they this those
through to too under until up ve very was wasn we were weren what when where which while who whom
whose why will with won would wouldn you your yours yourself yourselves also s t d m o y
""".split())


def fold(text: str) -> str:
    """Lower-cased and accent-folded ("Pelé" -> "pele")."""
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def plural_stem(word: str) -> str:
    """Harman's S-stemmer (plurals only): the index stemmer when PyStemmer is not installed."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


class TextTokenizer:
    """Index terms of a text: fold, split on words (2+ chars), drop stopwords, stem."""

    def __init__(self) -> None:
        try:
            import Stemmer  # PyStemmer (Snowball)

            self._stemmer = Stemmer.Stemmer("english")
            self._stem_words = self._stemmer.stemWords
            self.signature = "snowball-english"
        except ImportError:
            self._stemmer = None
            self._stem_words = lambda words: [plural_stem(w) for w in words]
            self.signature = "s-stemmer"
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def words(self, text: str) -> list[str]:
        """The index words of ``text`` before stemming (folded, 2+ chars, no stopwords)."""
        return [w for w in _INDEX_TOKEN.findall(fold(text)) if w not in INDEX_STOPWORDS]

    def __call__(self, text: str) -> list[str]:
        return self.stem_words(self.words(text))

    def stem_words(self, words: list[str]) -> list[str]:
        """The index terms of already-split :meth:`words`."""
        cache = self._cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            with self._lock:  # PyStemmer objects are not thread-safe
                stems = self._stem_words(missing)
            cache.update(zip(missing, stems))
            if len(cache) > 2_000_000:
                cache.clear()
        return [cache.get(w) or self._stem_words([w])[0] for w in words]


_TOKENIZER: TextTokenizer | None = None


def get_tokenizer() -> TextTokenizer:
    """The process-wide :class:`TextTokenizer` (its stem cache is shared)."""
    global _TOKENIZER
    if _TOKENIZER is None:
        _TOKENIZER = TextTokenizer()
    return _TOKENIZER


# --------------------------------------------------------------------------------------------
# Content words (answers, follow-ups, image prompts)

_WORD = re.compile(r"[A-Za-z0-9]+")

#: Words that carry no content in a question or request (function words, question words and
#: request words such as "tell", "please", "name").
CONTENT_STOPWORDS = frozenset(
    "a an the of in on at to for from by with and or is are was were be been being do does did what who whom "
    "whose which when where why how that this these those it its as into about than then there their they "
    "he she his her him you your i me my we our us can could would should will shall may might tell please "
    "give name list".split()
)


def content_words(text: str) -> list[str]:
    """Lower-cased ASCII words of ``text`` (2+ chars), without :data:`CONTENT_STOPWORDS`."""
    return [w for w in (m.group(0).lower() for m in _WORD.finditer(text)) if w not in CONTENT_STOPWORDS and len(w) > 1]


def stem(word: str) -> str:
    """A light suffix stripper, enough to match 'ended'/'end', 'painted'/'painting',
    'turtles'/'turtle' and 'boxes'/'box'."""
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")) and len(word) > 4:
        return word[:-2]
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    """The stems of the content words of ``text``."""
    return {stem(w) for w in content_words(text)}


# --------------------------------------------------------------------------------------------
# Sentences and repetition

#: Abbreviations Wikipedia writes before a number ("c. 1503", "ca. 1200", "fl. 1350",
#: "b. 1685", "d. 1750") that pysbd's English list lacks: a stop after one of them, followed by
#: a number, ends no sentence.
WIKI_NUMBER_ABBREVIATIONS = ("c", "ca", "fl", "b", "d")

# pysbd marks a stop that ends no sentence with "∯" and turns it back into "." in its output; the
# stops of WIKI_NUMBER_ABBREVIATIONS are marked the same way before it runs (one regex pass,
# much cheaper than adding them to pysbd's per-abbreviation scan).
_WIKI_ABBR_STOP = re.compile(r"(?<![\w.])(%s)\.(?=\s\d)" % "|".join(WIKI_NUMBER_ABBREVIATIONS))
_PYSBD_STOP = "\u222f"  # ∯
_ANY_STOP = re.compile(r"[.!?\u3002\uff0e\uff01\uff1f]")
_PYSBD_LANGUAGE: object | None = None


def _pysbd_sentences(text: str) -> list[str]:
    """pysbd's sentences of ``text``. Its ``Processor`` is called directly: ``Segmenter.segment``
    would also locate each sentence in the text with one new regex per sentence (a third of the
    time) and keeps the text on the shared segmenter (not thread-safe)."""
    global _PYSBD_LANGUAGE
    from pysbd.processor import Processor

    if _PYSBD_LANGUAGE is None:
        from pysbd.languages import Language

        _PYSBD_LANGUAGE = Language.get_language_code("en")
    return Processor(_WIKI_ABBR_STOP.sub(r"\1" + _PYSBD_STOP, text), _PYSBD_LANGUAGE).process() or []


def _align(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of each piece in ``text``, matching non-space characters in order (the
    pieces are ``text`` cut up, give or take whitespace)."""
    spans: list[tuple[int, int]] = []
    pos, size = 0, len(text)
    for piece in pieces:
        need = sum(not ch.isspace() for ch in piece)
        if not need:
            continue
        while pos < size and text[pos].isspace():
            pos += 1
        start = pos
        while pos < size and need:
            need -= not text[pos].isspace()
            pos += 1
        spans.append((start, pos))
    return spans


@functools.lru_cache(maxsize=2048)
def _split_collapsed(text: str) -> tuple[tuple[int, int], ...]:
    """Sentence spans of single-spaced ``text`` (slices of it, so every character is kept)."""
    if not _ANY_STOP.search(text):  # no stop at all: one sentence, without the segmenter's cost
        return ((0, len(text)),)
    return tuple(_align(text, _pysbd_sentences(text)))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, whitespace collapsed. pysbd (rule-based, with English
    abbreviations) decides, so the stop of "St. Louis", "Dr. No", "c. 1503", "Martin Luther
    King Jr. was" or "the U.S. Army" ends no sentence. The project's one sentence splitter
    (answers, replies, passages); results are cached (passages are split again and again)."""
    text = " ".join(text.split())
    return [text[a:b] for a, b in _split_collapsed(text)] if text else []


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` offsets in ``text`` itself of each sentence of :func:`split_sentences`,
    so a caller can cut ``text`` keeping its spacing ("Glass.[citation needed]" stays as it is
    although a sentence ends after "Glass.")."""
    return _align(text, split_sentences(text))


def loops(text: str, times: int = 3) -> bool:
    """Does some run of three words occur ``times`` times or more? Small models often loop
    ("big fun, fun, fun, ..."); such text is not a description or an answer."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return any(grams.count(g) >= times for g in set(grams))


# --------------------------------------------------------------------------------------------
# Titles

_QUALIFIER = re.compile(r"\s*\([^)]*\)$")


def title_subject(title: str) -> str:
    """An article title without its trailing qualifier: "Mercury (planet)" -> "Mercury"."""
    return _QUALIFIER.sub("", title)


def folded_phrase(text: str) -> str:
    """Folded words joined by single spaces, for accent-blind phrase-in-text checks."""
    return " ".join(re.findall(r"\w+", fold(text)))


def padded_phrase(text: str) -> str:
    """Lower-cased words (a possessive "'s " dropped) between single spaces, so that
    ``padded_phrase(name) in padded_phrase(question)`` matches whole words only."""
    return " " + " ".join(re.findall(r"\w+", text.lower().replace("'s ", " "))) + " "


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` on one line (runs of whitespace made one space), cut to ``limit`` characters
    with an ellipsis: for traces, status lines and messages."""
    text = " ".join(str(text if text is not None else "").split())
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def exception_line(exc: BaseException, limit: int | None = None, *, own: tuple[type, ...] = ()) -> str:
    """An exception as one line: its message as it is for ``own`` error types (written for the
    user), prefixed with its type for others (a library's ``KeyError: 'x'`` says little alone)."""
    text = one_line(exc) or type(exc).__name__
    if not isinstance(exc, own):
        text = f"{type(exc).__name__}: {text}"
    return one_line(text, limit)


__all__ = ["exception_line", "one_line", "CONTENT_STOPWORDS", "INDEX_STOPWORDS", "TextTokenizer", "content_words",
           "fold", "folded_phrase", "get_tokenizer", "loops", "padded_phrase", "plural_stem", "sentence_spans", "split_sentences", "WIKI_NUMBER_ABBREVIATIONS",
           "stem", "stems", "title_subject"]
