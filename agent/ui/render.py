"""One rendering of a :class:`~agent.agent.Result`: its facts (:class:`Facts`: route and why,
sources, Wikipedia's picture of the top source, image status, timings, notices) worked out once by :func:`facts`, then laid out as
plain lines (``askdraw ask``), a Rich panel (``askdraw chat``) or markdown (the web page).

Also what a finished step tells the user while a turn runs (:func:`step_news`), for the chat's
progress lines and the page's status line alike.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.trace import format_event, read_trace, step_times
from agent.ui.terminal import printable
from tools.text import one_line

NO_MODEL = "no image model is set; {} draws pictures"  # what the labelled card says when no model is set


def clip(text: Any, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (with an ellipsis)."""
    return one_line(text or "", limit)


def _norm(question: Any) -> str:
    return " ".join(str(question or "").lower().rstrip("?.! ").split())


def _pair(source: Any) -> tuple[str, str]:
    if isinstance(source, dict):
        return str(source.get("title") or ""), str(source.get("url") or "")
    return str(getattr(source, "title", "") or ""), str(getattr(source, "url", "") or "")


@dataclass
class Facts:
    """What a Result says, worked out once; the views below only lay it out."""

    outcome: str  # "answered", "failed" (an error and no answer) or "cancelled"
    answer: str | None
    error: str | None
    route: str | None
    route_reason: str | None
    search_query: str | None
    heard: str | None  # the transcript of a spoken question
    understood: str | None  # the standalone question, when it differs from the one asked
    sources: list[tuple[str, str]]  # (title, url)
    image_path: str | None
    image_generated: bool
    image_model: str | None
    no_image_model: bool  # the card was drawn because no image model is set
    no_image_reason: str
    timings_ms: dict[str, float]
    notices: list[str] = field(default_factory=list)
    other_notices: list[str] = field(default_factory=list)  # all but the missing picture's
    trace_path: str | None = None
    run_id: str = ""
    source_image: Any = None  # Wikipedia's own picture of the top source (tools.source_image.SourceImage)

    @property
    def none_found(self) -> bool:
        """A Wikipedia search that found no source."""
        return not self.sources and self.route == "search"

    @property
    def total_s(self) -> float:
        return sum(self.timings_ms.values()) / 1000

    @property
    def steps(self) -> str:
        return step_times(self.timings_ms)


def facts(result: Any) -> Facts:
    """The :class:`Facts` of ``result`` (an :class:`~agent.agent.Result`)."""
    standalone = getattr(result, "standalone_question", None)
    if result.error == "cancelled":
        outcome = "cancelled"
    else:
        outcome = "failed" if result.error and not result.answer else "answered"
    return Facts(
        outcome=outcome, answer=result.answer, error=result.error, route=result.route,
        route_reason=result.route_reason, search_query=getattr(result, "search_query", None),
        heard=result.transcript,
        understood=standalone if standalone and _norm(standalone) != _norm(result.question) else None,
        sources=[_pair(s) for s in getattr(result, "sources", None) or []],
        image_path=result.image_path, image_generated=result.image_generated, image_model=result.image_model,
        no_image_model=result.no_image_kind == "no_model", no_image_reason=result.no_image_reason or "",
        timings_ms=dict(result.timings_ms or {}), notices=list(result.notices),
        other_notices=list(result.other_notices), trace_path=result.trace_path, run_id=result.run_id,
        source_image=getattr(result, "source_image", None))


def picture_label(f: Facts) -> str | None:
    """What the article's picture is, in words (None: there is none): Wikipedia's, not drawn."""
    pic = f.source_image
    return "Wikipedia's picture of the top source, not generated" if pic else None


def picture_credit(f: Facts) -> str | None:
    """The picture's credit line and where to see its author and licence (None: no picture)."""
    pic = f.source_image
    return (pic.credit + (f" - {pic.url}" if pic.url else "")) if pic else None


# -- what a finished step says --------------------------------------------------------------------
def step_news(step: Any) -> tuple[str, str] | None:
    """What a finished step (a TraceEvent) tells the user: ``(kind, text)`` with kind ``error``,
    ``heard``, ``found`` (search results, the article's picture or why there is none) or ``answer``
    (the answer's why); None when it says nothing."""
    if step.error and step.error != "cancelled":
        return "error", f"{step.step}: {step.error}"
    if step.step == "transcribe" and step.output:
        return "heard", f'heard: "{step.output}"'
    if step.step == "search_wikipedia" and step.output:
        return "found", f"found: {step.output}" if step.output != "no results" else "found nothing"
    if step.step == "source_image" and step.output:
        if step.output == "no picture":
            return "found", f"no picture from the article: {clip(step.reason, 160)}"
        return "found", f"found the article's picture: {clip(step.data.get('file') or step.output, 120)}"
    if step.step == "answer" and step.reason:
        return "answer", f"answer: {step.reason}"
    return None


# -- plain lines (askdraw ask) --------------------------------------------------------------------
def _labelled(rows: list[tuple[str, Any]]) -> list[str]:
    return [f"{label:<12}{value}" for label, value in rows if value]


def plain_lines(f: Facts) -> list[str]:
    """The result as ``askdraw ask`` prints it: a labelled line per fact (the notices follow on stderr)."""
    lines = _labelled([("Transcript:", f.heard), ("Route:", f.route and f"{f.route} - {f.route_reason}"),
                       ("Searched:", f.search_query)])
    if f.answer:
        lines.append("Answer:")
        lines += [f"  {line}" if line else "" for line in f.answer.splitlines()]
    if f.sources:
        lines.append("Sources:")
        lines += [f"  {i}. {title} - {url}" for i, (title, url) in enumerate(f.sources, 1)]
    what = f"generated with {f.image_model}" if f.image_generated else "NOT generated: a labelled card, see note"
    pic = f.source_image
    return lines + _labelled([("Picture:", pic and f"{pic.path} ({picture_label(f)})"),
                              ("Credit:", picture_credit(f)),
                              ("Image:", f.image_path and f"{f.image_path} ({what})"),
                              ("Trace:", f.trace_path and f"{f.trace_path}  (askdraw trace {f.run_id})"),
                              ("Time:", f.timings_ms and f"{f.total_s:.2f}s ({f.steps})")])


# -- a Rich panel (askdraw chat) ------------------------------------------------------------------
def _grid(min_width: int | None = None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True, min_width=min_width)
    grid.add_column(overflow="fold")
    return grid


def short_image_note(f: Facts) -> str | None:
    """The one line that says no picture was drawn (None when one was, or there is no image at all):
    short when no image model is set (the same every turn, so a session says it once), else the
    reason this picture failed."""
    if f.image_generated or not f.image_path:
        return None
    if f.no_image_model:
        return "No image was generated: no --image-model is set, so a labelled card stands in"
    return f"No image was generated: {clip(f.no_image_reason, 160)}" if f.no_image_reason else None


def _image_text(f: Facts) -> Text:
    if f.image_generated:
        what = Text(f"generated with {printable(f.image_model)}", style="green")
    else:
        why = "no image model" if f.no_image_model else clip(f.no_image_reason, 160)
        what = Text("NOT generated: a labelled card" + (f" ({printable(why)})" if why else ""), style="bold yellow")
    return Text.assemble(what, " ", printable(f.image_path))


def keep_line_breaks(text: str) -> str:
    """Markdown source whose single line breaks stay line breaks (a hard break, two spaces, at the
    end of every line outside a fenced code block): an answer's lines are meant as lines."""
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append(line)
        elif fenced or not line.strip():
            out.append(line)
        else:
            out.append(line.rstrip() + "  ")
    return "\n".join(out).rstrip()


def answer_markdown(answer: str) -> Markdown:
    """An answer's markdown (lists, bold, code) rendered for the terminal, its line breaks kept."""
    return Markdown(keep_line_breaks(printable(answer)), hyperlinks=False)


def answer_panel(f: Facts, elapsed: float) -> Panel:
    """An answered turn as the chat shows it on a terminal: what was heard or understood, the
    answer (markdown rendered), then the sources, the image's status and the time (``elapsed``
    seconds in all)."""
    head = _grid()
    if f.heard:
        head.add_row("Heard", printable(f.heard))
    if f.understood:
        head.add_row("Understood", printable(f.understood))
    rows = _grid(min_width=10)
    for label, value in _tail_rows(f, elapsed):
        rows.add_row(label, value)
    body: list[Any] = [head, Text("")] if head.row_count else []
    body += [answer_markdown(f.answer) if f.answer else Text("(no answer)"), Text(""), rows]
    return Panel(Group(*body), title=Text(printable(f"answer ({f.route or 'none'})")), title_align="left",
                 subtitle=Text(printable(f"run {f.run_id}")), subtitle_align="right", expand=True)


def _tail_rows(f: Facts, elapsed: float) -> list[tuple[str, Text | str]]:
    rows: list[tuple[str, Text | str]] = []
    for i, (title, url) in enumerate(f.sources, 1):
        rows.append(("Sources" if i == 1 else "", printable(f"{i}. {title}" + (f" - {url}" if url else ""))))
    if f.none_found:
        rows.append(("Sources", "none found"))
    if f.source_image:
        rows.append(("Picture", Text.assemble(Text(printable(picture_label(f)), style="cyan"), " ",
                                              printable(f.source_image.path))))
        rows.append(("Credit", printable(picture_credit(f))))
    if f.image_path:
        rows.append(("Image", _image_text(f)))
    rows.append(("Time", f"{elapsed:.1f}s total" + (f" ({f.steps})" if f.steps else "")))
    return rows


def answer_lines(f: Facts, elapsed: float) -> list[str]:
    """The same turn as plain lines, for output that is not a terminal (``echo ... | askdraw chat``):
    no box, no padding, no trailing spaces; the answer's text as it was written."""
    lines = [f"answer ({f.route or 'none'}), run {f.run_id}"]
    lines += _labelled([("Heard", f.heard), ("Understood", f.understood)])
    lines += [line.rstrip() for line in (f.answer or "(no answer)").splitlines()]
    lines.append("")
    for label, value in _tail_rows(f, elapsed):
        text = value.plain if isinstance(value, Text) else str(value)
        lines += [f"{label:<12}{text}".rstrip()]
    return [printable(line) for line in lines]


# -- markdown (the web page) ----------------------------------------------------------------------
def md_escape(text: Any) -> str:
    """Text shown inside markdown: no markup, no HTML."""
    out = html.escape(str(text or ""), quote=False)
    for ch in "\\`*_[]<>#|":
        out = out.replace(ch, "\\" + ch)
    return out


def sources_markdown(f: Facts) -> str:
    if not f.sources:
        return "**Sources:** none found" if f.none_found else "**Sources:** -"
    lines = ["**Sources:**"]
    for i, (title, url) in enumerate(f.sources, 1):
        label = md_escape(title or url).replace("\\[", "(").replace("\\]", ")")
        lines.append(f"{i}. [{label}]({url.replace(')', '%29').replace(' ', '%20')})" if url else f"{i}. {label}")
    return "\n".join(lines)


def route_markdown(f: Facts | None) -> str:
    if f is None or not f.route:
        return "**Route:** -"
    text = f"**Route:** `{f.route}`"
    if f.route_reason:
        text += f" - {md_escape(f.route_reason)}"
    if f.search_query:
        text += f"  \n**Searched:** {md_escape(f.search_query)}"
    return text


def image_markdown(f: Facts) -> str:
    """What the image is: generated with a model, or the labelled card and why."""
    if not f.image_path:
        return ""
    if f.image_generated:
        return f"Image generated with {f.image_model}."
    why = NO_MODEL.format("`askdraw serve --image-model ...`") if f.no_image_model else md_escape(f.no_image_reason)
    return "**NO IMAGE GENERATED**: the picture is a labelled card" + (f" ({why})." if why else ".")


def picture_markdown(f: Facts | None) -> str:
    """The caption under the article's picture on the web page ("" when there is none): whose
    picture it is, its credit, and a link to where its author and licence can be read."""
    pic = f.source_image if f is not None else None
    if not pic:
        return ""
    text = f"**Wikipedia's picture**, not a generated image: {md_escape(pic.credit)}"
    if pic.url:
        where = "the file's page (author, licence)" if pic.origin == "live" else "the article"
        text += f"  \nSee [{where}]({pic.url.replace(')', '%29').replace(' ', '%20')})."
    return text


def notices_markdown(f: Facts | None = None, error: str | None = None) -> str:
    """Errors first (bold), then the image's status, then every other notice."""
    lines: list[str] = []
    if error:
        lines.append(f"**Error:** {md_escape(error)}")
    if f is not None:
        if f.outcome == "cancelled":
            lines.append("**Cancelled.**")
        elif f.error:
            lines.append(f"**{'Error' if f.outcome == 'failed' else 'Warning'}:** {md_escape(f.error)}")
        if image_markdown(f):
            lines.append(image_markdown(f))
        lines += [f"Note: {md_escape(notice)}" for notice in f.other_notices]
    return "\n\n".join(f"- {line}" for line in lines)


def trace_markdown(f: Facts | None = None, live: list[str] | None = None) -> str:
    """The turn's steps (from its trace file when written, else the events seen so far) and timings."""
    body: list[str] = []
    if f is not None and f.trace_path:
        try:
            body = [format_event(e) for e in read_trace(Path(f.trace_path).parent)]
        except (OSError, ValueError):
            body = []
    if not body:
        body = list(live or [])
    text = "```text\n" + ("\n".join(body) if body else "(no steps yet)") + "\n```"
    if f is not None:
        if f.timings_ms:
            text += f"\n\n**Time:** {f.total_s:.2f}s ({f.steps})"
        if f.trace_path:
            text += f"  \n**Run:** `{f.run_id}` - trace at `{f.trace_path}`"
    return text


__all__ = ["Facts", "facts", "step_news", "plain_lines", "answer_panel", "answer_lines", "answer_markdown",
           "short_image_note", "keep_line_breaks", "md_escape", "sources_markdown",
           "route_markdown", "image_markdown", "picture_markdown", "picture_label", "picture_credit",
           "notices_markdown", "trace_markdown", "clip", "NO_MODEL"]
