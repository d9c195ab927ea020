"""Follow-up questions in a conversation: rewrite "And what do they eat?" into a standalone
question ("What do sea turtles eat?") before routing and searching.

The LLM rewrites it; the rewrite is used only if it keeps the follow-up's own words, names the
earlier topic, and leaves no unresolved pronoun. Otherwise the pronoun is replaced by the
earlier turn's topic (its Wikipedia article's title, or the thing drawn), and the trace says so.
"""

from __future__ import annotations

import re
from typing import Any

from tools.text import content_words, split_sentences, stems
from tools.common import Cancelled, load_prompt

_PRONOUN = r"they|them|their|theirs|it|its|he|him|his|she|her|hers|this|that|these|those|there"
_PRONOUNS = re.compile(rf"\b({_PRONOUN})\b", re.IGNORECASE)
_LEADING = re.compile(r"^\s*(and|but|also|so|then|ok|okay)\b[,\s]*", re.IGNORECASE)
_POSSESSIVE = {"their", "theirs", "its", "his", "hers"}


def needs_context(question: str) -> bool:
    """A short question leaning on something said before: it starts with 'and'/'but'... or
    refers back with a pronoun."""
    if _LEADING.match(question) or re.match(r"^\s*(what|how) about\b", question, re.IGNORECASE):
        return True
    return bool(_PRONOUNS.search(question)) and len(content_words(question)) <= 8


def _substitute(question: str, topic: str) -> str:
    """Replace the first back-reference with the topic (possessive pronouns with "topic's")."""
    text = _LEADING.sub("", question.strip())

    def repl(match: re.Match) -> str:
        word = match.group(0).lower()
        return f"{topic}'s" if word in _POSSESSIVE else topic

    text, n = _PRONOUNS.subn(repl, text, count=1)
    if n == 0:  # "What about X?" / "And in winter?": add the topic explicitly
        text = f"{text.rstrip('?. ')} (about {topic})?"
    return text[:1].upper() + text[1:]


def standalone_question(question: str, history: list[dict[str, Any]], llm: Any) -> tuple[str, str | None]:
    """(standalone question, how it was made); ``how`` is None when no rewrite was needed."""
    if not history or not needs_context(question):
        return question, None
    last = history[-1]
    topic = last.get("topic") or last.get("question", "")
    messages = [{"role": "system", "content": load_prompt("followup_system.txt")}]
    for block in load_prompt("followup_examples.txt").split("\n---\n"):
        *ask, answer = block.strip().split("\n")
        messages += [{"role": "user", "content": "\n".join(ask)}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": f"Previous question: {last.get('question', '')}\nFollow-up: {question}"})
    try:
        reply = llm.chat(messages, max_new_tokens=40)
    except Cancelled:
        raise
    except Exception as exc:  # the rule below still gives a usable question
        reply, error = "", f"{type(exc).__name__}: {exc}"
    else:
        error = None
    rewrite = next(iter(split_sentences(reply.strip().splitlines()[0] if reply.strip() else "")), "").strip()
    own = stems(_PRONOUNS.sub(" ", _LEADING.sub("", question)))
    if (rewrite and not _PRONOUNS.search(rewrite) and stems(topic) & stems(rewrite)
            and len(own & stems(rewrite)) >= max(1, len(own) // 2)):
        return rewrite, f"rewritten by the LLM with the earlier topic '{topic}'"
    why = f"the LLM's rewrite '{rewrite}' was not usable" if rewrite else (error or "the LLM gave no rewrite")
    return _substitute(question, topic), f"{why}; referred to the earlier topic '{topic}'"


def _as_asked(title: str, question: str) -> str:
    """The article title as the question worded it ("Turtle" asked as "sea turtles" -> "turtles"),
    so a rewritten follow-up reads naturally; the title itself when the question does not use it."""
    wanted = stems(title)
    words = re.findall(r"[\w'-]+", question)
    hits = [i for i, w in enumerate(words) if stems(w) & wanted]
    if not hits or not wanted <= stems(" ".join(words[i] for i in hits)):
        return title
    return " ".join(words[hits[0] : hits[-1] + 1])


def topic_of_turn(state: dict[str, Any]) -> str:
    """What a finished turn was about, for later follow-ups."""
    from tools.image_prompt import request_subject

    question = state.get("standalone_question") or state.get("transcript") or state.get("question") or ""
    if state.get("route") == "search" and state.get("sources"):
        if state.get("answer_found") is not False:
            return _as_asked(state["sources"][0]["title"], question)
    if state.get("route") == "draw":
        return request_subject(question)
    names = re.findall(r"\b[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)*", question)[1:] if question else []
    if names:
        return names[0]
    words = [w for w in content_words(question) if w not in {"long", "many", "much", "live", "make", "made"}]
    return " ".join(words[:3]) or question
