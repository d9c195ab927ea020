"""The live backend: Wikipedia searched online through the ``wikipedia`` PyPI package.

The package calls ``requests.get`` without a timeout; building or using a :class:`LiveWikipedia`
replaces the ``requests`` module inside ``wikipedia.wikipedia`` with a shim that adds the
backend's timeout (offline use leaves the package untouched).
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from typing import Any

import requests  # a dependency of `wikipedia`
import wikipedia as wikipedia_api

from tools.base import Passage
from tools.common import ToolError
from tools.text import get_tokenizer
from tools.wikipedia.passages import split_passages, wikipedia_url

log = logging.getLogger(__name__)

_REQUEST_TIMEOUT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "askdraw_wikipedia_timeout", default=None)
_LIVE_LOCK = threading.RLock()  # the `wikipedia` package keeps its language in a global


class _RequestsWithTimeout:
    """Stands in for the ``requests`` module inside ``wikipedia.wikipedia`` (which calls
    ``requests.get`` without a timeout) and adds the caller's timeout to every ``get``."""

    _askdraw_shim = True

    def __init__(self, real: Any) -> None:
        self._real = real

    def get(self, *args: Any, **kwargs: Any) -> Any:
        timeout = _REQUEST_TIMEOUT.get()
        if timeout is not None:
            kwargs.setdefault("timeout", timeout)
        response = self._real.get(*args, **kwargs)
        # The package calls ``r.json()`` whatever the status: an HTTP error page would surface as
        # a puzzling JSON error. Inside LiveWikipedia.search, raise requests.HTTPError instead.
        status = getattr(response, "status_code", None)
        if timeout is not None and isinstance(status, int) and status >= 400:
            response.raise_for_status()
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _install_timeout_shim() -> None:
    """Put :class:`_RequestsWithTimeout` in place of ``wikipedia.wikipedia.requests`` (once)."""
    inner = getattr(wikipedia_api, "wikipedia", None)
    current = getattr(inner, "requests", None)
    if current is not None and not getattr(current, "_askdraw_shim", False):
        inner.requests = _RequestsWithTimeout(current)


_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.RequestException,
    wikipedia_api.exceptions.HTTPTimeoutError,
    TimeoutError,
    ConnectionError,
)

# Answers the `wikipedia` package cannot make sense of (JSON of another
# shape, ...): not a network failure, but the search cannot go on either.
_BAD_ANSWER_ERRORS: tuple[type[BaseException], ...] = (
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    AttributeError,
    AssertionError,  # the package asserts on redirect shapes
)

#: The MediaWiki API the live backend asks; ``{lang}`` is the language code. LiveWikipedia's
#: ``api_url`` argument overrides it (a mirror, or a local test server).
LIVE_API_URL = "https://{lang}.wikipedia.org/w/api.php"

_SKIP_SECTIONS = {"see also", "references", "external links", "further reading", "notes",
                  "bibliography", "sources", "citations", "footnotes"}


def _content_chunks(content: str) -> list[str]:
    """Passages of a page's plain-text content (``== Heading ==`` markers), dropping
    reference-like sections. The first chunk is the lead."""
    sections = re.split(r"\n\s*={2,}\s*(.*?)\s*={2,}\s*\n", "\n" + content)
    chunks = split_passages(sections[0])
    for heading, body in zip(sections[1::2], sections[2::2]):
        if heading.strip().lower() in _SKIP_SECTIONS or not body.strip():
            continue
        chunks.extend(split_passages(body))
    return chunks

class LiveWikipedia:
    """Search Wikipedia online through the ``wikipedia`` package.

    ``search``: ``wikipedia.search`` for titles, then ``wikipedia.page(title, auto_suggest=False)``
    for up to ``max_pages`` of them (a disambiguation page is replaced by its first options that
    load; missing pages are skipped). Each page gives its best-matching passage (the lead wins
    ties), then further passages if ``k`` asks for more. Every HTTP request has ``timeout``
    seconds. Failures raise :class:`ToolError`: ``"Wikipedia is unreachable: ..."`` (no
    connection, or no answer within ``timeout``), ``"Wikipedia answered HTTP 500 ..."`` (an HTTP
    error status), ``"Wikipedia returned an error: ..."`` (the API's own ``{"error": ...}``),
    ``"Wikipedia sent a malformed answer: ..."`` (not JSON, or JSON the ``wikipedia`` package
    cannot read).

    ``api_url``: the MediaWiki ``api.php`` endpoint to ask (default :data:`LIVE_API_URL` for
    ``lang``, i.e. ``https://en.wikipedia.org/w/api.php``); tests point it at a local server.
    """

    def __init__(self, lang: str = "en", timeout: float = 8.0, max_pages: int = 3,
                 api_url: str | None = None) -> None:
        self.lang = lang
        self.timeout = float(timeout)
        self.max_pages = max(1, int(max_pages))
        self.api_url = api_url or LIVE_API_URL.format(lang=lang)
        self.name = f"live:{lang}"
        with _LIVE_LOCK:
            _install_timeout_shim()

    def _fetch_page(self, title: str, seen: set[str]) -> Any | None:
        """A WikipediaPage for ``title``, resolving disambiguation; None when nothing loads."""
        candidates = [title]
        tried = 0
        while candidates and tried < 4:
            name = candidates.pop(0)
            if name.lower() in seen:
                continue
            seen.add(name.lower())
            tried += 1
            try:
                page = wikipedia_api.page(name, auto_suggest=False)
                _ = page.content  # fetch now, so errors surface here
                return page
            except wikipedia_api.exceptions.DisambiguationError as exc:
                options = [o for o in getattr(exc, "options", []) or []
                           if o and "disambiguation" not in o.lower()]
                candidates = options[:3] + candidates
            except wikipedia_api.exceptions.PageError:
                continue
            except _NETWORK_ERRORS:
                raise
            except (wikipedia_api.exceptions.WikipediaException, KeyError, ValueError) as exc:
                log.debug("skipping Wikipedia page %r: %s", name, exc)
                continue
        return None

    def search(self, query: str, k: int = 3) -> list[Passage]:
        query = (query or "").strip()
        if not query or k <= 0:
            return []
        token = _REQUEST_TIMEOUT.set(self.timeout)
        try:
            with _LIVE_LOCK:
                _install_timeout_shim()
                if getattr(wikipedia_api.wikipedia, "API_URL", None) != self.api_url:
                    wikipedia_api.set_lang(self.lang)  # also clears the package's caches
                    wikipedia_api.wikipedia.API_URL = self.api_url
                return self._search(query, k)
        except requests.exceptions.HTTPError as exc:
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            what = f"HTTP {status} ({getattr(response, 'reason', '') or 'error'})" if status else self._reason(exc)
            raise ToolError(f"Wikipedia answered {what}") from exc
        except requests.exceptions.InvalidJSONError as exc:  # before _NETWORK_ERRORS: it is one
            raise ToolError(f"Wikipedia sent a malformed answer: not JSON ({self._short(exc)})") from exc
        except _NETWORK_ERRORS as exc:
            raise ToolError(f"Wikipedia is unreachable: {self._reason(exc)}") from exc
        except wikipedia_api.exceptions.WikipediaException as exc:  # the API's {"error": ...}
            error = " ".join(str(getattr(exc, "error", "") or "").split())[:200]
            raise ToolError(f"Wikipedia returned an error: {error or type(exc).__name__}") from exc
        except _BAD_ANSWER_ERRORS as exc:
            raise ToolError(f"Wikipedia sent a malformed answer: {self._short(exc)}") from exc
        finally:
            _REQUEST_TIMEOUT.reset(token)

    @staticmethod
    def _short(exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        if isinstance(exc, KeyError):
            text = f"no {text} field"
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, (requests.exceptions.Timeout, TimeoutError,
                            wikipedia_api.exceptions.HTTPTimeoutError)):
            return f"no answer within {self.timeout:g} s ({type(exc).__name__})"
        if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError)):
            text = str(exc)
            m = re.search(r"Failed to resolve '([^']+)'", text)
            if m:
                return f"cannot resolve {m.group(1)} (no internet connection?)"
            m = re.search(r"host='([^']+)'", text)
            return f"cannot connect to {m.group(1) if m else f'{self.lang}.wikipedia.org'} ({type(exc).__name__})"
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

    def _search(self, query: str, k: int) -> list[Passage]:
        titles = wikipedia_api.search(query, results=self.max_pages + 2) or []
        if isinstance(titles, tuple):  # (results, suggestion) form
            titles = titles[0] or []
        q_terms = set(get_tokenizer()(query))
        deadline = time.monotonic() + 3 * self.timeout
        seen: set[str] = set()
        per_page: list[list[Passage]] = []
        for title in titles:
            if len(per_page) >= self.max_pages or (per_page and time.monotonic() > deadline):
                break
            page = self._fetch_page(title, seen)
            if page is None:
                continue
            passages = self._page_passages(page, title, q_terms, k, base=1.0 / (1 + len(per_page)))
            if passages:
                per_page.append(passages)
        # Best passage of each page first (in search order), then second-best ones, ...
        out: list[Passage] = []
        for level in range(k):
            for passages in per_page:
                if level < len(passages) and len(out) < k:
                    out.append(passages[level])
        return out

    def _page_passages(self, page: Any, title: str, q_terms: set[str], k: int, base: float) -> list[Passage]:
        """The ``k`` passages of a page that share most index terms with the query (the lead
        gets a small bonus), scored half by the page's search rank (``base``), half by overlap."""
        page_title = getattr(page, "title", None) or title
        url = getattr(page, "url", None) or wikipedia_url(page_title, self.lang)
        chunks = _content_chunks(page.content or "") or split_passages(getattr(page, "summary", "") or "")
        if not chunks:
            return []
        tokenizer = get_tokenizer()
        title_terms = set(tokenizer(page_title))
        scored = []
        for pos, chunk in enumerate(chunks):
            terms = set(tokenizer(chunk)) | title_terms
            overlap = len(q_terms & terms) / len(q_terms) if q_terms else 0.0
            bonus = 0.15 if pos == 0 else 0.0
            scored.append((overlap + bonus, -pos, chunk))
        scored.sort(reverse=True)
        return [Passage(title=page_title, url=url, text=chunk, score=round(0.5 * base + 0.5 * min(1.0, s), 4))
                for s, _, chunk in scored[:k]]
