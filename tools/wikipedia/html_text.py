"""Article HTML (Kiwix ZIM entries) to plain text, one paragraph per line."""

from __future__ import annotations

from html.parser import HTMLParser


class _HTMLText(HTMLParser):
    """Article HTML -> paragraphs of plain text (stdlib parser; skips scripts, tables,
    reference lists, footnote marks, navigation, and everything after 'References'-like headings)."""

    BLOCKS = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre",
              "div", "section", "br", "tr", "ul", "ol", "dl", "figcaption", "caption"}
    SKIP = {"script", "style", "head", "table", "sup", "noscript", "math", "figure", "nav",
            "footer", "svg", "button", "audio", "video", "object", "iframe", "title"}
    SKIP_CLASSES = {"reference", "references", "mw-references", "reflist", "navbox", "hatnote",
                    "mw-editsection", "noprint", "metadata", "mw-ref", "thumb", "infobox",
                    "toc", "mw-empty-elt", "sistersitebox"}
    VOID = {"br", "img", "meta", "link", "hr", "input", "wbr", "area", "base", "col", "embed",
            "source", "track", "param"}
    END_SECTIONS = {"references", "external links", "see also", "notes", "further reading",
                    "bibliography", "sources", "citations", "footnotes", "notes and references"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.canonical = ""
        self._buf: list[str] = []
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._heading: str | None = None
        self._done = False

    def _flush(self) -> None:
        text = " ".join("".join(self._buf).split())
        self._buf = []
        if not text:
            return
        if text.startswith("This article is issued from"):  # Kiwix licence footer
            return
        if self._heading is not None:
            if text.lower().strip(" :") in self.END_SECTIONS:
                self._done = True
                return
        self.blocks.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "link":
            d = dict(attrs)
            if (d.get("rel") or "").lower() == "canonical" and d.get("href"):
                self.canonical = d["href"] or ""
        if self._done or tag in self.VOID and tag != "br":
            return
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.SKIP or classes & self.SKIP_CLASSES:
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag in self.BLOCKS:
            self._flush()
            if tag in {"h1", "h2", "h3", "h4", "h5", "h6"}:
                self._heading = tag

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth <= 0:
                    self._skip_tag = None
            return
        if self._done:
            return
        if tag in self.BLOCKS:
            self._flush()
            if tag == self._heading:
                self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skip_tag is None and not self._done:
            self._buf.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_text(markup: str, title: str | None = None) -> tuple[str, str]:
    """(plain text with one paragraph per line, canonical URL or '') of an article's HTML."""
    parser = _HTMLText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - malformed markup: keep what was parsed
        pass
    blocks = parser.blocks
    if title and blocks and blocks[0].strip() == title.strip():
        blocks = blocks[1:]
    return "\n".join(blocks), parser.canonical

