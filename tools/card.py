"""The PNG files askdraw writes: pictures with their text metadata (:func:`save_png`), and the
plainly labelled "NO IMAGE GENERATED" card drawn when there is no picture (:func:`render_card`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tools.base import ImageResult, NoImageKind
from tools.common import atomic_file

__all__ = ["card_result", "render_card", "save_png"]

_BACKGROUND, _INK, _HEADER_INK, _MUTED = (245, 245, 240), (30, 30, 30), (170, 20, 20), (90, 90, 90)
_HEADER = "NO IMAGE GENERATED"


def save_png(image: Any, out_path: Path, meta: dict[str, str]) -> None:
    """Save with PNG text chunks, atomically (whole or not at all, even on a full disk)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in meta.items():
        info.add_text(key, value)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as fh:
        image.save(fh, format="PNG", pnginfo=info)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:  # older Pillow: fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw: Any, text: str, font: Any, max_width: float) -> list[str]:
    """Greedy word wrap by rendered width; over-long words are split by characters."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split():
            while draw.textlength(word, font=font) > max_width and len(word) > 1:
                cut = len(word)
                while cut > 1 and draw.textlength(word[:cut], font=font) > max_width:
                    cut -= 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            candidate = f"{line} {word}".strip()
            if draw.textlength(candidate, font=font) <= max_width:
                line = candidate
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return lines


class _Card:
    """Draws the card's parts top to bottom; ``y`` is where the next line goes."""

    def __init__(self, draw: Any, width: int, height: int):
        self.draw, self.width = draw, width
        self.unit = max(min(width, height), 128)
        self.margin = self.unit // 16
        self.text_w = width - 2 * self.margin
        self.y = self.margin
        self.bottom = height - self.margin
        body_size = max(self.unit // 26, 10)
        self.body_font = _font(body_size)
        self.line_h = int(body_size * 1.35)
        border = max(self.unit // 128, 2)
        draw.rectangle([border // 2, border // 2, width - 1 - border // 2, height - 1 - border // 2],
                       outline=_HEADER_INK, width=border)

    def header(self) -> None:
        """The header, shrunk until it fits the width."""
        hsize = max(self.unit // 12, 12)
        font = _font(hsize)
        while self.draw.textlength(_HEADER, font=font) > self.text_w and hsize > 8:
            hsize -= 1
            font = _font(hsize)
        self.draw.text((self.margin, self.y), _HEADER, font=font, fill=_HEADER_INK)
        self.y += int(hsize * 1.6)

    def block(self, text: str, fill: tuple[int, int, int], max_lines: int | None = None) -> None:
        """Wrapped text, cut off with "…" where it does not fit (the room left, ``max_lines``)."""
        lines = _wrap(self.draw, text, self.body_font, self.text_w)
        room = max((self.bottom - self.y) // self.line_h, 0)
        limit = min(room, max_lines) if max_lines is not None else room
        if len(lines) > limit:
            lines = lines[:limit]
            if lines:
                lines[-1] = lines[-1].rstrip()[: max(len(lines[-1]) - 1, 0)] + "…"
        for line in lines:
            self.draw.text((self.margin, self.y), line, font=self.body_font, fill=fill)
            self.y += self.line_h

    def body(self, reason: str, prompt: str) -> None:
        """The reason, a separator, then the prompt. The reason may use the room the prompt does
        not need, but always leaves the prompt (label + at least 3 lines) visible."""
        room = (self.bottom - self.y) // self.line_h - 1  # minus the separator
        prompt_need = min(len(_wrap(self.draw, prompt, self.body_font, self.text_w)), 3) + 1
        self.block(reason, _INK, max_lines=max(room - prompt_need, 1))
        self.y += self.line_h // 2
        self.draw.line([self.margin, self.y, self.width - self.margin, self.y], fill=_MUTED, width=1)
        self.y += self.line_h // 2
        self.block("Image prompt:", _MUTED)
        self.block(prompt, _INK)


def render_card(
    prompt: str, reason: str, out_path: str | Path, *, size: tuple[int, int] = (512, 512)
) -> Path:
    """Write a plainly labelled "NO IMAGE GENERATED" card (reason + the image prompt) as a PNG.

    PNG text metadata: ``prompt``, ``reason`` and ``askdraw:generated`` = ``"false"``.
    """
    from PIL import Image, ImageDraw

    width, height = size
    out_path = Path(out_path)
    img = Image.new("RGB", (width, height), _BACKGROUND)
    card = _Card(ImageDraw.Draw(img), width, height)
    card.header()
    card.body(reason, prompt)
    save_png(img, out_path, {"prompt": prompt, "reason": reason, "askdraw:generated": "false"})
    return out_path


def card_result(gen: Any, prompt: str, out_path: Path, seed: int, t0: float, reason: str,
                missing: NoImageKind) -> ImageResult:
    """Draw the labelled "NO IMAGE GENERATED" card for ``gen`` and say why nothing was drawn."""
    notice = reason if missing == "no_model" else f"No picture was drawn: {reason}"
    render_card(prompt, notice, out_path, size=(gen.width, gen.height))
    return ImageResult(path=str(out_path), generated=False, model=gen.model, prompt=prompt, seed=seed,
                       steps=0, width=gen.width, height=gen.height, ms=(time.perf_counter() - t0) * 1000,
                       notice=notice, reason=reason, missing=missing)
