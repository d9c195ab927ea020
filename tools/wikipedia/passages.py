"""Article text to passages, and article titles to Wikipedia URLs."""

from __future__ import annotations

import re
from urllib.parse import quote

from tools.text import sentence_spans

MAX_PASSAGE_WORDS = 150
MIN_PASSAGE_WORDS = 40


def wikipedia_url(title: str, lang: str = "en") -> str:
    """``https://en.wikipedia.org/wiki/Title_With_Underscores`` (non-ASCII percent-encoded)."""
    slug = quote(title.strip().replace(" ", "_"), safe="()_,'!:;.*@$-")
    return f"https://{lang}.wikipedia.org/wiki/{slug}"


def _cut_paragraph(para: str, max_words: int) -> list[str]:
    """A long single-spaced paragraph cut at sentence ends (:func:`tools.text.sentence_spans`)
    into pieces of at most ``max_words`` words (a sentence longer than that is cut between
    words). Pieces are slices of ``para``, so its text is kept exactly. Only paragraphs longer
    than ``max_words`` come here: the splitter's cost is paid only where a cut is needed."""
    units: list[str] = []
    start: int | None = None
    end, count = 0, 0
    for a, b in sentence_spans(para):
        words = para[a:b].split()
        if len(words) > max_words:  # one enormous sentence
            if start is not None:
                units.append(para[start:end])
                start, count = None, 0
            while len(words) > max_words:
                units.append(" ".join(words[:max_words]))
                words = words[max_words:]
            tail = " ".join(words)  # para is single-spaced: the tail is para[b - len(tail):b]
            start, end, count = b - len(tail), b, len(words)
            continue
        if start is not None and count + len(words) > max_words:
            units.append(para[start:end])
            start, count = None, 0
        if start is None:
            start = a
        end, count = b, count + len(words)
    if start is not None:
        units.append(para[start:end])
    return [unit.strip() for unit in units if unit.strip()]


def _merge_short(units: list[str], max_words: int, min_words: int) -> list[str]:
    """Short neighbours merged while they fit (a heading with its paragraph, runs of list items)."""
    passages: list[str] = []
    for unit in units:
        n = len(unit.split())
        if passages:
            prev_n = len(passages[-1].split())
            if (prev_n < min_words or n < min_words // 2) and prev_n + n <= max_words:
                sep = "\n" if prev_n < 12 else " "
                passages[-1] = passages[-1] + sep + unit
                continue
        passages.append(unit)
    return passages


def split_passages(text: str, max_words: int = MAX_PASSAGE_WORDS,
                   min_words: int = MIN_PASSAGE_WORDS) -> list[str]:
    """Split ``text`` into paragraph-ish passages of at most ``max_words`` words.

    Paragraphs (separated by newlines) stay whole when short enough; long ones are cut at
    sentence ends (a sentence longer than ``max_words`` is cut between words); consecutive short
    pieces (headings, list items, short paragraphs) are merged while they fit.
    """
    units: list[str] = []
    for para in re.split(r"\n\s*\n|\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para.split(" ")) <= max_words:
            units.append(para)
        else:
            units.extend(_cut_paragraph(para, max_words))
    return _merge_short(units, max_words, min_words)
