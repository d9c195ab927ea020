"""The top source's own picture: the lead image of a Wikipedia article, fetched from where the
article came from and saved in the run folder. It is Wikipedia's picture, never a generated one.

* A Kiwix ``.zim`` corpus (:class:`ZimPictures`): the article's first content image (an ``<img>``
  of at least :data:`MIN_SIDE` pixels, outside navigation boxes, message boxes, icons and
  reference lists), read from the ZIM file itself. A ZIM file records no author or licence: the
  credit names the article and the ZIM file, and ``url`` is the article's page.
* Live Wikipedia (:class:`LivePictures`): the MediaWiki ``pageimages`` API names the article's
  lead image (free images only, as Wikipedia's page previews use), ``imageinfo`` gives its
  thumbnail URL, file page, author and licence (``extmetadata``), and the thumbnail is
  downloaded.
* Any other corpus (the starter leads, JSONL/JSON files) has no pictures: :func:`picture_source`
  returns None and nothing is fetched.

Every failure (no such article, no image in it, a network error, bytes that are not an image)
raises :class:`NoPicture`, whose message says why in one line; a caller shows the answer anyway.

>>> pictures = picture_source(backend)            # None: this corpus has no pictures
>>> picture = pictures.lead_image("Ray Charles", run_dir)
>>> picture.path, picture.credit
"""

from __future__ import annotations

import html
import io
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel

from tools.common import ToolError, atomic_write
from tools.text import one_line

MIN_SIDE = 100  # pixels: smaller pictures are icons, flags in tables, rating stars
MAX_BYTES = 20 * 1024 * 1024  # a lead image bigger than this is not downloaded
THUMB_WIDTH = 640  # the live thumbnail's width (Wikipedia renders it)
USER_AGENT = "askdraw/0.1 (local question-answering agent; lead-image fetch)"  # Wikimedia asks for one
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
FILE_STEM = "source_image"  # the saved picture is <run folder>/source_image.<ext>


class SourceImage(BaseModel):
    """The top source's own picture, as ``Result.source_image`` names it.

    ``path``: the picture saved in the run folder. ``title``: the article it illustrates.
    ``url``: where to see it with its author and licence (live: its file page; ZIM: the article's
    page, as a ZIM file keeps no file pages). ``credit``: one line naming Wikipedia, the article,
    the file, and the author and licence when known. ``file``: the image's file name.
    ``origin``: ``"zim"`` or ``"live"``. ``author`` / ``licence``: from the file page (live only).
    """

    path: str
    title: str
    url: str
    credit: str
    file: str
    origin: Literal["zim", "live"]
    author: str | None = None
    licence: str | None = None
    width: int = 0
    height: int = 0


class NoPicture(ToolError):
    """The article's picture could not be had; the message says why (one line)."""


@runtime_checkable
class PictureSource(Protocol):
    """Where a backend's articles get their pictures: ``lead_image(title, out_dir)`` saves the
    article's lead image in ``out_dir`` and describes it, or raises :class:`NoPicture`."""

    def lead_image(self, title: str, out_dir: str | Path) -> SourceImage: ...


def picture_source(backend: Any) -> PictureSource | None:
    """The pictures of a Wikipedia backend's articles: a backend that has its own
    ``lead_image`` (a custom one), a ZIM corpus, or live Wikipedia; None for corpora without
    pictures (the starter leads, JSONL/JSON files)."""
    if isinstance(backend, PictureSource):
        return backend
    from tools.wikipedia.live import LiveWikipedia
    from tools.wikipedia.offline import OfflineWikipedia

    if isinstance(backend, OfflineWikipedia) and backend.kind == "zim":
        return ZimPictures(backend.path)
    if isinstance(backend, LiveWikipedia):
        return LivePictures(api_url=backend.api_url, timeout=backend.timeout)
    return None


def save_picture(data: bytes, out_dir: str | Path, what: str) -> tuple[Path, int, int]:
    """Check that ``data`` is a whole JPEG/PNG/GIF/WebP picture and write it (as it is) to
    ``out_dir/source_image.<ext>``; returns (path, width, height). ``what`` names the picture in
    the :class:`NoPicture` raised for bytes that are not one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind, (width, height) = image.format, image.size
            image.load()  # decodes every byte: a cut-off file fails here, not in the viewer
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise NoPicture(f"{what} is not a readable picture ({one_line(exc, 120) or type(exc).__name__})") from exc
    if kind not in FORMATS:
        raise NoPicture(f"{what} is a {kind} picture; only JPEG, PNG, GIF and WebP are kept")
    path = Path(out_dir) / f"{FILE_STEM}{FORMATS[kind]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
    except OSError as exc:
        raise NoPicture(f"{path} could not be written ({exc.strerror or exc})") from exc
    return path, width, height


# -- ZIM files ------------------------------------------------------------------------------------
class _LeadImage(HTMLParser):
    """The ``src`` of an article's first content image: an ``<img>`` whose shown size is at least
    :data:`MIN_SIDE` on both sides, not an audio/video icon, and outside navigation boxes,
    message boxes, hatnotes and references; the article's reference sections end the search."""

    SKIP_CLASSES = ("navbox", "mbox", "ambox", "tmbox", "ombox", "metadata", "noprint", "hatnote",
                    "sistersitebox", "reference", "mw-editsection", "portal", "stub", "vertical-navbox")
    END_SECTIONS = {"references", "external links", "see also", "notes", "further reading", "bibliography",
                    "sources", "citations", "footnotes", "notes and references"}
    VOID = {"br", "img", "meta", "link", "hr", "input", "wbr", "area", "base", "col", "embed", "source", "track"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] | None = None
        self._skip: list[str] = []  # open tags of skipped containers (innermost last)
        self._depth = 0
        self._heading: list[str] | None = None  # text of the heading being read

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.found is not None:
            return
        a = {k: v or "" for k, v in attrs}
        if tag in ("h2", "h3") and not self._skip:
            self._heading = []
        if tag == "img":
            if not self._skip and self._content_image(a):
                self.found = a
            return
        if tag in self.VOID:
            return
        if self._skip:
            if tag == self._skip[-1]:
                self._depth += 1
            return
        classes = a.get("class", "").split()
        if tag in ("script", "style", "nav", "footer") or any(c.startswith(self.SKIP_CLASSES) for c in classes):
            self._skip, self._depth = [tag], 1

    def handle_endtag(self, tag: str) -> None:
        if self._skip and tag == self._skip[-1]:
            self._depth -= 1
            if self._depth <= 0:
                self._skip = []
        if tag in ("h2", "h3") and self._heading is not None:
            if " ".join("".join(self._heading).split()).lower().strip(" :") in self.END_SECTIONS:
                self.found = self.found or {}  # the references: no content image after them
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)

    @staticmethod
    def _content_image(a: dict[str, str]) -> bool:
        if not a.get("src") or a.get("data-file-type") in ("audio", "video"):
            return False

        def side(*keys: str) -> int | None:
            for key in keys:
                m = re.match(r"\s*(\d+)", a.get(key, ""))
                if m:
                    return int(m.group(1))
            return None

        width, height = side("width", "data-file-width"), side("height", "data-file-height")
        return (width is None or width >= MIN_SIDE) and (height is None or height >= MIN_SIDE)


def lead_image_src(markup: str) -> str | None:
    """The ``src`` of the first content image of an article's HTML (None: it has none)."""
    parser = _LeadImage()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # noqa: BLE001 - malformed markup: what was read counts
        pass
    return (parser.found or {}).get("src") or None


class ZimPictures:
    """The lead images of the articles of a Kiwix ZIM file (see the module's doc)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._archive: Any = None

    @property
    def archive(self) -> Any:
        if self._archive is None:
            from tools.wikipedia.corpora import _open_zim

            self._archive = _open_zim(self.path)
        return self._archive

    def _article(self, title: str) -> Any:
        """The entry of article ``title`` (redirects followed), or None."""
        archive = self.archive
        entry = None
        try:
            entry = archive.get_entry_by_title(title)
        except (KeyError, RuntimeError):
            under = title.replace(" ", "_")
            for path in (f"A/{under}", f"A/{under}.html", f"A/{under}.htm", under):
                if archive.has_entry_by_path(path):
                    entry = archive.get_entry_by_path(path)
                    break
        for _ in range(5):
            if entry is None or not entry.is_redirect:
                break
            entry = entry.get_redirect_entry()
        return None if entry is None or entry.is_redirect else entry

    def lead_image(self, title: str, out_dir: str | Path) -> SourceImage:
        try:
            return self._lead_image(title, out_dir)
        except NoPicture:
            raise
        except ToolError as exc:
            raise NoPicture(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - libzim's errors: no picture, the turn goes on
            raise NoPicture(f"cannot read the picture from {self.path.name}: {type(exc).__name__}: "
                            f"{one_line(exc, 160)}") from exc

    def _lead_image(self, title: str, out_dir: str | Path) -> SourceImage:
        from tools.wikipedia.corpora import _zim_info
        from tools.wikipedia.passages import wikipedia_url

        entry = self._article(title)
        if entry is None:
            raise NoPicture(f'{self.path.name} has no article "{title}"')
        markup = bytes(entry.get_item().content).decode("utf-8", "replace")
        src = lead_image_src(markup)
        if src is None:
            raise NoPicture(f'the article "{title}" in {self.path.name} has no picture')
        parts = urlsplit(src)
        if parts.scheme or parts.netloc:
            raise NoPicture(f'the picture of "{title}" is not inside {self.path.name} ({one_line(src, 80)})')
        image_path = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), unquote(parts.path)))
        archive = self.archive
        if not archive.has_entry_by_path(image_path):
            raise NoPicture(f'the picture of "{title}" ({image_path}) is missing from {self.path.name}')
        item = archive.get_entry_by_path(image_path).get_item()
        if item.size > MAX_BYTES:
            raise NoPicture(f'the picture of "{title}" is {item.size // 1_000_000} MB, over the limit')
        file = posixpath.basename(image_path)
        saved, width, height = save_picture(bytes(item.content), out_dir, f'the picture of "{title}" ({file})')
        lang, is_wikipedia, _ = _zim_info(archive)
        url = wikipedia_url(title, lang) if is_wikipedia else f"zim://{quote(self.path.name)}/{quote(entry.path)}"
        date = _zim_date(archive)
        credit = (f'Wikipedia\'s picture from the article "{title}" ({file}; Kiwix ZIM file {self.path.name}'
                  f'{", " + date if date else ""}); the ZIM file names no author or licence: see the article')
        return SourceImage(path=str(saved), title=title, url=url, credit=credit, file=file, origin="zim",
                           width=width, height=height)


def _zim_date(archive: Any) -> str:
    try:
        return bytes(archive.get_metadata("Date")).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001 - no Date metadata
        return ""


# -- live Wikipedia -------------------------------------------------------------------------------
def _plain(markup: Any) -> str:
    """extmetadata values are HTML snippets: their text, on one line."""
    return one_line(html.unescape(re.sub(r"<[^>]+>", " ", str(markup or ""))))


class LivePictures:
    """The lead images of live Wikipedia articles (see the module's doc). ``api_url``: the
    MediaWiki ``api.php`` to ask (tests point it at a local server); ``timeout``: seconds per
    request."""

    def __init__(self, api_url: str = "https://en.wikipedia.org/w/api.php", timeout: float = 8.0) -> None:
        self.api_url = api_url
        self.timeout = float(timeout)

    def _get(self, url: str, params: dict[str, Any] | None = None) -> Any:
        import requests

        try:
            response = requests.get(url, params=params, timeout=self.timeout, headers={"User-Agent": USER_AGENT},
                                    stream=params is None)
            response.raise_for_status()
        except requests.exceptions.Timeout as exc:
            raise NoPicture(f"Wikipedia sent no picture within {self.timeout:g} s") from exc
        except requests.exceptions.HTTPError as exc:
            status = getattr(exc.response, "status_code", "?")
            raise NoPicture(f"Wikipedia answered HTTP {status} when asked for the picture") from exc
        except requests.exceptions.RequestException as exc:
            raise NoPicture(f"Wikipedia is unreachable for the picture ({type(exc).__name__})") from exc
        return response

    def _query(self, **params: Any) -> dict[str, Any]:
        response = self._get(self.api_url, {"action": "query", "format": "json", "formatversion": 2,
                                            "redirects": 1, **params})
        try:
            data = response.json()
        except ValueError as exc:
            raise NoPicture("Wikipedia's answer about the picture is not JSON") from exc
        if not isinstance(data, dict) or "error" in data:
            info = data.get("error", {}).get("info", "") if isinstance(data, dict) else ""
            raise NoPicture(f"Wikipedia returned an error about the picture: {one_line(info, 120) or 'no details'}")
        pages = (data.get("query") or {}).get("pages") or []
        if isinstance(pages, dict):  # formatversion=1 answers
            pages = list(pages.values())
        return pages[0] if pages and isinstance(pages[0], dict) else {}

    def _download(self, url: str) -> bytes:
        response = self._get(url)
        data = bytearray()
        for chunk in response.iter_content(64 * 1024):
            data += chunk
            if len(data) > MAX_BYTES:
                response.close()
                raise NoPicture(f"the picture is over {MAX_BYTES // 1_000_000} MB")
        return bytes(data)

    def lead_image(self, title: str, out_dir: str | Path) -> SourceImage:
        try:
            return self._lead_image(title, out_dir)
        except NoPicture:
            raise
        except Exception as exc:  # noqa: BLE001 - an answer of another shape: no picture, the turn goes on
            raise NoPicture(f"Wikipedia's answer about the picture could not be read ({type(exc).__name__}: "
                            f"{one_line(exc, 120)})") from exc

    def _lead_image(self, title: str, out_dir: str | Path) -> SourceImage:
        page = self._query(prop="pageimages", titles=title, piprop="name")
        if page.get("missing") is not None and page.get("missing") is not False:
            raise NoPicture(f'Wikipedia has no article "{title}"')
        name = page.get("pageimage")
        if not name:
            raise NoPicture(f'the article "{title}" has no lead picture on Wikipedia')
        article = page.get("title") or title
        info_page = self._query(prop="imageinfo", titles=f"File:{name}", iiprop="url|size|extmetadata",
                                iiurlwidth=THUMB_WIDTH, iiextmetadatafilter="Artist|LicenseShortName|Credit")
        infos = info_page.get("imageinfo") or []
        if not infos:
            raise NoPicture(f'Wikipedia has no file information for "{name}"')
        info = infos[0]
        image_url = info.get("thumburl") or info.get("url")
        if not image_url:
            raise NoPicture(f'Wikipedia gave no address for the picture "{name}"')
        meta = info.get("extmetadata") or {}
        author = _plain((meta.get("Artist") or {}).get("value")) or None
        licence = _plain((meta.get("LicenseShortName") or {}).get("value")) or None
        file = info_page.get("title") or f"File:{name}"
        file_page = info.get("descriptionurl") or ""
        saved, width, height = save_picture(self._download(image_url), out_dir, f'the picture "{name}"')
        credit = f'Wikipedia\'s picture from the article "{article}" ({file}'
        credit += f"; {author}" if author else "; author not given"
        credit += f", {licence})" if licence else ", licence not given)"
        return SourceImage(path=str(saved), title=article, url=file_page, credit=one_line(credit, 300), file=file,
                           origin="live", author=author, licence=licence, width=width, height=height)


__all__ = ["SourceImage", "NoPicture", "PictureSource", "picture_source", "ZimPictures", "LivePictures",
           "lead_image_src", "save_picture", "MIN_SIDE"]
