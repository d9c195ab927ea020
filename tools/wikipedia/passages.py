"""Article text to passages, and article titles to Wikipedia URLs."""

from __future__ import annotations

import re
from urllib.parse import quote

from tools.text import PASSAGE_SENTENCE_END

MAX_PASSAGE_WORDS = 150
MIN_PASSAGE_WORDS = 40


def wikipedia_url(title: str, lang: str = "en") -> str:
    """``https://en.wikipedia.org/wiki/Title_With_Underscores`` (non-ASCII percent-encoded)."""
    slug = quote(title.strip().replace(" ", "_"), safe="()_,'!:;.*@$-")
    return f"https://{lang}.wikipedia.org/wiki/{slug}"


def _cut_paragraph(para: str, max_words: int) -> list[str]:
    """A long paragraph cut at sentence ends into pieces of at most ``max_words`` words (a
    sentence longer than that is cut between words)."""
    units: list[str] = []
    current: list[str] = []
    for sentence in PASSAGE_SENTENCE_END.split(para):
        sw = sentence.split()
        while len(sw) > max_words:  # one enormous sentence
            if current:
                units.append(" ".join(current))
                current = []
            units.append(" ".join(sw[:max_words]))
            sw = sw[max_words:]
        if current and len(current) + len(sw) > max_words:
            units.append(" ".join(current))
            current = []
        current.extend(sw)
    if current:
        units.append(" ".join(current))
    return units


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
