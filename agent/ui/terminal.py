"""Text from data made safe for a terminal: :func:`printable` (and :func:`printable_json`).

Everything the CLI and the chat print that comes from data -- file names, transcripts, answers,
streamed tokens, sources, notices, errors, trace fields, past questions -- goes through
:func:`printable` first, so a file name or a trace line cannot colour, clear or retitle the
terminal, plant an OSC-8 link, or reorder what is shown with bidi overrides.

What becomes a visible escape (``\\x1b``, ``\\x9b``, ``\\u202e``, ``\\udcff``):
C0 controls except newline and tab (ESC, BEL, CR, backspace, ...), DEL, C1 controls (0x80-0x9f,
0x9b is a one-byte CSI), the bidi embedding/override/isolate characters (U+202A-U+202E,
U+2066-U+2069), and lone surrogates (undecodable bytes of a file name, which cannot be written
to a UTF-8 terminal at all). Ordinary Unicode is kept as it is: accents, CJK, emoji, and
right-to-left letters (Arabic and Hebrew text stays readable).

Sanitise the data before it is handed to Rich, never Rich's output: Rich writes escape codes of
its own for its styles.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE_RE = re.compile(f"[{_UNSAFE}]")
_UNSAFE_ONELINE_RE = re.compile(f"[\n{_UNSAFE}]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: Any, *, oneline: bool = False) -> str:
    """``text`` (any value: ``str()`` of it) with every character that could drive the terminal
    written as a visible escape (see the module docstring). ``oneline=True``: newlines too, for
    what must stay one line (an error message naming a file)."""
    return (_UNSAFE_ONELINE_RE if oneline else _UNSAFE_RE).sub(_visible, str(text))


_JSON_UNSAFE_RE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable_json(text: str) -> str:
    """JSON text with the characters JSON leaves raw but a terminal acts on (DEL, C1, bidi
    overrides, lone surrogates) written as ``\\uXXXX`` escapes: the same JSON value, safe to print.
    (JSON itself already escapes the C0 controls, ESC included.)"""
    return _JSON_UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def wrap_lines(text: str, width: int, hang: int = 2) -> str:
    """``text`` with each line longer than ``width`` wrapped at word boundaries (a terminal would
    cut it mid-word); the continuation lines keep the line's indentation plus ``hang`` spaces.
    A word longer than a line (a URL) is kept whole."""
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * min(len(line) - len(line.lstrip(" ")) + hang, max(width // 2, 0))
        out += textwrap.wrap(line, width=max(width, 20), subsequent_indent=indent, break_long_words=False,
                             break_on_hyphens=False) or [line]
    return "\n".join(out)


__all__ = ["printable", "printable_json", "wrap_lines"]
