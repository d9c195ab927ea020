"""Image-prompt rewriting: turn a request (or a question and its answer) into a prompt for a
text-to-image model.

The LLM writes the prompt; the result is checked before use: it must keep every number and
nearly every content word of the source, and stay inside the CLIP text encoder's 77-token window.
When the model's rewrite fails the check, the cleaned source itself is used, and that is reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tools.base import ChatModel
from tools.common import load_prompt
from tools.text import content_words, loops, split_sentences

CLIP_MAX_TOKENS = 77
MAX_WORDS = 45
STYLE_SUFFIX = "detailed illustration"

# Leading phrases that ask for a picture ("show me", "please draw", "I'd like to see an image of").
# They say *that* a picture is wanted, not *what* is in it, so they are removed from the prompt.
_ASK = re.compile(
    r"^\s*(?:(?:please|kindly|hey|ok|okay)[,\s]+)*"
    r"(?:(?:can|could|would|will) you(?: please)?\s+|i(?:'d| would) like (?:you )?to\s+|i want (?:you )?to\s+|let me\s+)?"
    r"(?:show(?: me)?|see|draw(?: me)?|paint(?: me)?|illustrate|sketch|picture|render|generate|create|make(?: me)?|"
    r"give me|imagine)\s+"
    r"(?:(?:an?|the|some)\s+)?(?:(?:picture|image|drawing|illustration|painting|photo|sketch|render|rendering)s?\s+(?:of\s+)?(?:(?:an?|the|some)\s+)?)?",
    re.IGNORECASE,
)
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve dozen".split())
_TOKENISH = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


def request_subject(text: str) -> str:
    """What a drawing request asks to see: 'Show me a cat eating fish' -> 'a cat eating fish'."""
    text = " ".join(text.split()).rstrip(" ?!.")
    stripped = _ASK.sub("", text, count=1).strip()
    return stripped or text


def approx_clip_tokens(text: str) -> int:
    """An upper-leaning estimate of CLIP BPE tokens (+2 for start/end): long words split in two."""
    return 2 + sum(1 + (len(t) > 8) for t in _TOKENISH.findall(text))


def _numbers(text: str) -> set[str]:
    words = {w.lower() for w in re.findall(r"[A-Za-z]+|\d+", text)}
    return {w for w in words if w.isdigit() or w in _NUMBER_WORDS}


def keeps_source(source: str, prompt: str, min_share: float = 0.8) -> tuple[bool, str]:
    """Does ``prompt`` keep every number and at least ``min_share`` of the content words of
    ``source``? Returns (ok, reason)."""
    missing_numbers = _numbers(source) - _numbers(prompt)
    if missing_numbers:
        return False, f"dropped the count(s) {', '.join(sorted(missing_numbers))}"
    wanted = set(content_words(source))
    have = set(content_words(prompt))
    # A plural in one and a singular in the other still counts as kept.
    kept = {w for w in wanted if w in have or w.rstrip("s") in {h.rstrip("s") for h in have}}
    if wanted and len(kept) / len(wanted) < min_share:
        return False, f"dropped {', '.join(sorted(wanted - kept)[:6])}"
    return True, "kept every count and the objects of the request"


_CHATTY = re.compile(r"\b(i|i'm|i'll|i've|me|my|you|your|let's|sure|here is|here's)\b", re.IGNORECASE)


def _clean_reply(reply: str) -> str:
    """The description in the model's reply: its first line and sentence, without a label."""
    line = next((ln for ln in reply.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(prompt|description|image prompt)\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
    line = next(iter(split_sentences(line.strip().strip('"'))), "")  # "a poster of Dr. No" stays whole
    return re.sub(r"(?<=[a-z])[.!?]+$", "", line.strip().strip('"')).strip().strip('"').strip()


def _limit_words(text: str, limit: int) -> str:
    words = text.split()
    return " ".join(words[:limit]).rstrip(",;")


@dataclass
class ImagePrompt:
    prompt: str
    source: str
    rewritten: bool  # False: the model's rewrite failed the check and the source is used
    note: str
    model_reply: str = ""


class PromptRewriter:
    def __init__(self, llm: ChatModel, *, max_words: int = MAX_WORDS) -> None:
        self.llm = llm
        self.max_words = max_words

    def _messages(self, source: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": load_prompt("image_prompt_system.txt")}]
        for block in load_prompt("image_prompt_examples.txt").split("\n---\n"):
            request, prompt = block.strip().split("\n", 1)
            messages += [{"role": "user", "content": request}, {"role": "assistant", "content": prompt.strip()}]
        messages.append({"role": "user", "content": source})
        return messages

    def settled(self, reply: str, source: str) -> bool:
        """Is the outcome of a (partial) model reply already fixed, so generation can stop?
        Only the first sentence of the first line is used, cut to ``max_words``; and a reply
        that already chats, loops or is too long will be rejected whatever follows. Judged on
        complete words only, so stopping here gives the same prompt as generating to the end."""
        lines = reply.lstrip().split("\n", 1)
        if len(lines) > 1:
            return True  # the first line is complete
        if len(split_sentences(lines[0])) > 1:
            return True  # its first sentence is complete (the next one has begun)
        words = lines[0].split()[:-1]  # the last word may still grow
        if len(words) >= self.max_words:
            return True
        text = " ".join(words)
        return bool((_CHATTY.search(text) and not _CHATTY.search(source)) or (loops(text) and not loops(source))
                    or approx_clip_tokens(text) > CLIP_MAX_TOKENS)

    def rewrite(self, source: str, *, min_share: float = 0.8) -> ImagePrompt:
        """Rewrite ``source``; the rewrite must keep every number and ``min_share`` of its content
        words (a drawing request: nearly all; an answer's topic: the main ones)."""
        source = " ".join(source.split())
        reply = self.llm.chat(self._messages(source), max_new_tokens=64,
                              stop=lambda text: self.settled(text, source))
        prompt = _limit_words(_clean_reply(reply), self.max_words)
        if not prompt:
            ok, why = False, "the model returned nothing"
        elif _CHATTY.search(prompt) and not _CHATTY.search(source):
            ok, why = False, "the model chatted instead of describing a picture"
        elif loops(prompt) and not loops(source):
            ok, why = False, "the model's rewrite repeats itself"
        else:
            ok, why = keeps_source(source, prompt, min_share)
        if ok and approx_clip_tokens(prompt) > CLIP_MAX_TOKENS:
            ok, why = False, "too long for the 77-token text encoder"
        if ok:
            return ImagePrompt(prompt=prompt, source=source, rewritten=True, note=why, model_reply=reply)
        return self.plain(source, f"model rewrite not used ({why}); prompt built from the request itself", reply)

    def plain(self, source: str, note: str, model_reply: str = "") -> ImagePrompt:
        """The prompt built from ``source`` itself, without the model (a style added, cut to fit)."""
        source = " ".join(source.split())
        prompt = _limit_words(f"{source}, {STYLE_SUFFIX}", self.max_words)
        while approx_clip_tokens(prompt) > CLIP_MAX_TOKENS and len(prompt.split()) > 5:
            prompt = _limit_words(prompt, len(prompt.split()) - 3)
        return ImagePrompt(prompt=prompt, source=source, rewritten=False, note=note, model_reply=model_reply)


def source_for_answer(question: str, answer: str, title: str | None = None) -> str:
    """What to illustrate for a question that was answered in text: its topic and answer."""
    first = next(iter(split_sentences(answer)), answer)
    topic = title or question.rstrip("?")
    return f"{topic}. {first}"[:400] if first else topic[:400]


__all__: Sequence[str] = ["PromptRewriter", "ImagePrompt", "request_subject", "keeps_source"]
