"""Image-prompt rewriting: turn a request (or a question and its answer) into a prompt for a
text-to-image model.

The LLM writes the prompt; the result is checked before use: it must keep every number and
nearly every content word of the source, and stay inside the CLIP text encoder's 77-token window.
When the model's rewrite fails the check, the cleaned source itself is used, and that is reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass

from tools.base import ChatModel
from tools.common import load_prompt
from tools.text import content_words, loops, split_sentences, title_subject

CLIP_MAX_TOKENS = 77
MAX_WORDS = 45
STYLE_SUFFIX = "detailed illustration"
# A scene that already names its medium or style gets no STYLE_SUFFIX ("a photo of a bench").
_STYLED = re.compile(r"\b(?:photo(?:graph)?s?|paintings?|sketch(?:es)?|drawings?|illustrations?|watercolou?rs?|"
                     r"cartoons?|anime|render(?:ing)?|pixel art|digital art|photorealistic)\b", re.IGNORECASE)

# A drawing request is framing around a scene: "Could you please draw me a picture of <scene> for me?".
# The framing says *that* a picture is wanted, not *what* is in it, so it is peeled off, layer by
# layer, from both ends until nothing more comes off. The layers form a small grammar:
#   lead      := interjection ("hey", "okay so", "please") | modal ("can/could/would you", "would you
#                mind", "I was wondering if you could") | wish ("I'd like/love/want/need (to see/get)",
#                "can I see/get", "let me/let's see") | verb ("show/draw/paint/sketch/make/generate/
#                ... (me) (out)") | "picture this:"
#   medium    := article + generic picture noun ("picture/image/drawing/illustration/rendering/...")
#                + connector ("of", "showing", "depicting", "that shows", "with ... in it")
#   look-like := "what (would/does) <scene> (would/might) look(s) like" | "how would <scene> look"
#   tail      := "please", "thanks", "for me/us", "for my <purpose>", "and draw it", ", can you draw it?"
# A medium that carries a style ("a photo of", "an oil painting of", "a sketch of") is part of the
# scene and stays. bench/eval_draw_prompts.py measures the grammar on request forms x GenEval and
# DrawBench scenes.
_VERBS = (r"whip up|put together|throw together|come up with|cook up|dream up|mock up|"
          r"show|draw|paint|sketch|doodle|illustrate|render|generate|create|make|produce|design|give|get|"
          r"send|do|depict|visuali[sz]e|imagine|picture|see")
_GERUNDS = (r"showing(?: me| us)?|drawing|painting|sketching|doodling|illustrating|rendering|generating|creating|"
            r"making|producing|designing|depicting|visuali[sz]ing|imagining")
_MEDIUM_NOUNS = (r"picture|pic|image|drawing|illustration|rendering|render|visuali[sz]ation|depiction|artwork|"
                 r"graphic|visual|something")
_LEAD = [
    r"(?:hey|hi|hello|ok|okay|so|well|um+|uh+|oh|now|alright|right|ple+a+s+e*|kindly|yo|hmm+|like|maybe|perhaps|"
    r"basically|just|"
    r"assistant|bot|ai|computer)\b[,!.]?\s+",
    r"(?:i'd|i would|i'll|i will|we'd) (?:really |so )?(?:appreciate it|be (?:so |really )?(?:grateful|happy|glad)) "
    r"if (?:you|u) (?:could|can|would)(?: please)?\s+",
    r"(?:it would|it'd|that would|that'd) be (?:so |really )?(?:great|nice|cool|awesome|lovely) if (?:you|u) "
    r"(?:could|can|would)(?: please)?\s+",
    r"what (?:i'm|i am|im|i) (?:thinking|imagining|picturing|after|looking for|going for|want|need)(?: of| about)? is\s+",
    r"(?:would|will|are|were) (?:you|u) (?:be )?able to\s+",
    r"(?:next (?:one|up|request|please)|here'?s (?:the |my )?next one|another one|new one)\s*[:,.-]+\s*",
    r"(?:an? )?(?:quick|rough|simple|little)\s+(?=(?:\w+\s+)?(?:sketch|doodle|drawing|painting|watercolou?r)\b)",
    r"(?:picture|imagine|visuali[sz]e) this\s*[:,.!-]*\s+",
    r"(?:would|do|will) you mind (?:" + _GERUNDS + r")(?: (?:me|us))?(?: (?:out|up))?\s+",
    r"(?:can|could|would|will|wo?n't) (?:you|u|ya)(?: (?:please|pleas|pls|plz|possibly|maybe|just|kindly))*\s+",
    r"(?:i'd|i would|id|we'd|we would) like to (?:request|ask for|order|get|have)\s+",
    r"(?:for|it's for|this is for) (?:my|our|a|an|the) [\w' -]{1,40}?,\s+",
    r"(?:for|it's for|this is for) (?:my|our|a|an|the) [\w' -]{1,30}? (?=(?:i|we) (?:need|want|would like|'d like))",
    r"(?:i was|i'm|i am|im) wondering if (?:you|u) (?:could|can|would)(?: please)?\s+",
    r"(?:is it possible|are you able|would it be possible) (?:for you )?to\s+",
    r"(?:i'd|i would|id|i|i'll|i will|we'd|we) (?:really |just |also )?(?:like|love|want|need|wanna|would like)"
    r"(?: (?:you|u) to| to (?:see|get|have|look at)| to)?\s+",
    r"(?:can|could|may) (?:i|we) (?:please )?(?:see|get|have)\s+",
    r"(?:let me|let's|lets|let us) (?:see|have|get|do|make|try)\s+",
    r"(?:(?:please|now|just|go ahead and|quickly|kindly)\s+)*(?:" + _VERBS + r")(?: (?:me|us|for me|for us))?(?: (?:out|up))?"
    r"\s+(?!of\b)",
    r"(?:i (?:wonder|am curious|'m curious)|i'm curious|im curious|i'd like to know|i want to know|"
    r"i(?:'d| would) love to know|tell me)\s+(?=what |how )",
]
_LEAD_RE = re.compile(r"^(?:" + "|".join(_LEAD) + r")", re.IGNORECASE)
_MEDIUM_RE = re.compile(
    r"^(?:(?:an?|the|some|one|another|me an?)\s+)?(?:(?:quick|little|nice|simple|small|new|cool)\s+)?"
    r"(?:" + _MEDIUM_NOUNS + r")s?\s+(?P<conn>of|showing|depicting|featuring|that (?:shows|depicts)|which shows|"
    r"where you can see|where|with|like)\s+", re.IGNORECASE)
_AFTER_LOOK = r"(?P<after>\s+.+)?"  # what follows "look like" qualifies the scene ("... underwater")
_LOOK_RE = [
    re.compile(r"^what (?:would|will|does|do|did|might|could|may|should) (?P<x>.+?) (?:have )?(?:actually |really )?"
               r"look(?:s|ed)? like" + _AFTER_LOOK + "$", re.IGNORECASE),
    re.compile(r"^what (?P<x>.+?) (?:(?:would|will|might|could|may|does|do|should|did)(?: have)? )?(?:actually |really )?"
               r"look(?:s|ed)? like" + _AFTER_LOOK + "$", re.IGNORECASE),
    re.compile(r"^how (?:would|will|does|do|might|could|may) (?P<x>.+?) (?:actually |really )?look" + _AFTER_LOOK
               + "$", re.IGNORECASE),
    re.compile(r"^how (?P<x>.+?) (?:would|will|might|could|may|does|do) look" + _AFTER_LOOK + "$", re.IGNORECASE),
]
_TAIL_RE = re.compile(
    r"(?:\s*[-–—:]\s*(?:draw|paint|sketch|show|make|render) (?:it|that|this|one|them)(?: (?:for me|please))?|"
    r"[,;]?\s+for (?:a|an|my|our|the) (?:presentation|slides?|class|lesson|project|poster|blog(?: post)?|card|website|"
    r"school|report|homework|kids|students|party|newsletter|meeting)|"
    r"[,;]?\s+(?:it'?s|it is|this is|that's) for (?:my|our|a|an|the|his|her|their) [\w']+(?: [\w']+)?|"
    r"[,;]?\s+(?:please|pls|plz|(?:and )?(?:thanks|thank you)(?: so much| very much| a (?:bunch|lot|ton|million))?|"
    r"thx|ty|for me|for us|"
    r"if you can|if you could|if possible|now|right now|real quick|quickly|(?:for|to show) (?:my|our) \w+(?: \w+)?|"
    r"ple+a+s+e*|\w+ said (?:you|u) (?:could|can)|lol|haha+|okay|ok|yeah(?: that)?|(?:would|will|could|can) (?:you|u)|"
    r"show me|you know|much appreciated|(?:like )?as an? (?:picture|image|drawing)|(?:would|will) be (?:so |really )?(?:cool|nice|awesome|fun|great|lovely) to see|"
    r"like an? (?:kid|child|toddler|little kid|\d+[- ]year[- ]old) "
    r"(?:would|might)(?: (?:draw|do|make) (?:it|that|one))?|"
    r"(?:can|could|would|will) (?:you|u) (?:please )?(?:show|draw|paint|sketch|make|render|generate|create) (?:me|us)|"
    r"(?:(?:and|then)\s+)?(?:can|could|would|will) (?:you|u) (?:please )?(?:draw|paint|sketch|show|make|render|"
    r"generate|create|illustrate|picture) (?:it|that|this|one|them|me one)(?: for me| please)?|"
    r"(?:and|then) (?:please )?(?:draw|paint|sketch|show|make|render|generate|create|illustrate|picture)"
    r" (?:it|that|this|one|them)(?: for me| please)?|"
    r"(?:and|,) make it look (?:nice|good|great|cool|pretty)))+$", re.IGNORECASE)
_TRIM = " \t,;:!?.-—–"


_VERB_WORDS = tuple(w for w in _VERBS.split("|") if len(w) >= 4 and "[" not in w) + ("visualize", "visualise")


def _near(word: str, target: str) -> bool:
    """Is ``word`` one typo (or mishearing) from ``target``: one letter changed, added, dropped,
    or two neighbours swapped ("skecth", "drwa", "pant")?"""
    if word == target or abs(len(word) - len(target)) > 1:
        return word == target
    if len(word) == len(target):
        diff = [i for i, (a, b) in enumerate(zip(word, target)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and word[diff[0]] == target[diff[1]] and word[diff[1]] == target[diff[0]])
    short, long_ = sorted((word, target), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def _fix_verb(text: str) -> str:
    """A misspelt or misheard request verb in first place ("Skecth a car") read as the verb it is
    one typo from, when a determiner follows it; the scene's own words are never touched."""
    match = re.match(r"^([A-Za-z]{4,})(?=\s+(?:me\s+)?(?:a|an|the|some|two|three|four|five|my|your)\b)", text)
    if not match or match.group(1).lower() in _VERB_WORDS:
        return text
    near = next((v for v in _VERB_WORDS if _near(match.group(1).lower(), v)), None)
    return near + text[match.end():] if near else text


def _peel(text: str, medium_done: bool) -> tuple[str, bool]:
    """One pass of the request grammar over ``text``: a lead, a medium, a look-like frame and a
    tail, each removed when present. Only one medium is framing: in "a picture of an illustration
    of a fox" the second one is the scene's. Returns the text and whether a medium was removed."""
    text = text.strip(_TRIM)
    text = _TAIL_RE.sub("", text).strip(_TRIM)
    text = _LEAD_RE.sub("", text, count=1).strip(_TRIM)
    text = _SEE_RE.sub("", text, count=1).strip(_TRIM)
    colon = _COLON_RE.match(text)
    if colon:  # "I need an image: a red bicycle", "Illustrate the following scene: ..."
        text = text[colon.end():].strip(_TRIM)
    text = _fix_verb(text)
    medium = None if medium_done else _MEDIUM_RE.match(text)
    if medium:
        rest = text[medium.end():]
        if medium.group("conn").lower() != "with":
            text, medium_done = rest, True
        elif re.search(r"\s+in (?:it|there)$", rest, re.IGNORECASE):  # "a picture with a dog in it"
            text, medium_done = re.sub(r"\s+in (?:it|there)$", "", rest, flags=re.IGNORECASE), True
    for frame in _LOOK_RE:
        match = frame.match(text)
        if match:
            text = match.group("x") + (match.group("after") or "")  # "... look like in winter"
            break
    into = _INTO_STYLE.match(text.strip(_TRIM))
    if into:
        text = f"{into.group('x')}, {into.group('style')}"
    return text.strip(_TRIM), medium_done


_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve dozen".split())
_TOKENISH = re.compile(r"[A-Za-z]+|\d|[^\sA-Za-z\d]")


#: "Turn X into a pixel art image": the scene, in that style.
_INTO_STYLE = re.compile(
    r"^(?:turn|make|convert|transform|redo|do|draw|render|paint)\s+(?P<x>.+?)\s+(?:into|as|in)\s+(?:an?\s+)?"
    r"(?P<style>(?:pixel art|watercolou?r|cartoon|anime|oil painting|pencil sketch|sketch|crayon drawing|"
    r"comic(?: book)?|3d render|low[- ]poly|claymation|stained glass|mosaic|vector art|line art)(?: style)?)"
    r"(?:\s+(?:image|picture|version|drawing|style|one))?$", re.IGNORECASE)
#: A sentence of the message that is context, not the scene ("I'm trying to explain it to my students.").
_CONTEXT_SENTENCE = re.compile(r"^(?:i'm|i am|im|i'll|i'd|i|my|we|we're|our|she'd|he'd|they'd|she'll|he'll|they'll|"
                               r"she's|he's|they're|it's|kids|students|"
                               r"thanks|thank you|it's for|this is for|that's for)\b", re.IGNORECASE)


#: Spoken fillers, which no scene has ("um", "uh", "er").
_FILLERS = re.compile(r"(?:^|(?<=[\s,]))(?:u+m+|u+h+|e+r+m*|hmm+|mm+)\b[,.]?\s*", re.IGNORECASE)
#: A false start: what comes before it was taken back ("can you, wait, yeah can you draw ...").
_RESTART = re.compile(r"^.*?(?:\bwait\b[,.]?\s*(?:yeah|no|ok|okay)?|\bno,?\s+sorry\b|\bsorry\b\s*[-—–,]|\bi mean\b|"
                      r"\bactually\b,)[,.]?\s*(?=\S)", re.IGNORECASE)
#: A sentence that only talks to the assistant or about the request ("Now draw it.", "Is that
#: possible with this app?", "Thank you very much for help.", "Hi!").
_TALK = re.compile(r"^(?:(?:now |just |please |so )*(?:draw|paint|sketch|make|render|show|do)(?: me)? (?:it|that|this|one|them)\b|"
                   r"(?:draw|paint|sketch|render)\b\W*$|"
                   r"(?:can|could|would|will) (?:you|u) (?:make|do|manage) (?:that|it|this)\b|"
                   r"(?:is|would) (?:that|this|it) (?:be )?(?:possible|ok|okay|doable)\b|"
                   r"(?:hi|hello|hey|good (?:morning|afternoon|evening)|thanks|thank you|much appreciated|cheers)\b[^.?!]{0,40}$|"
                   r"same (?:style|as before|settings)\b[^.?!]{0,40}$)",
                   re.IGNORECASE)
#: "... my son wants to see a bird", "I need an image: a red bicycle", "The image should show a cup".
_SEE_RE = re.compile(r"^.*?\b(?:wants?|wanna|would like|'d like|'d love|would love|asked) to see\s+(?=\S)", re.IGNORECASE)
_COLON_RE = re.compile(r"^(?P<head>[^:]{1,80}?(?:\b(?:need|want|draw|paint|illustrate|sketch|render|make|create|"
                       r"image|picture|scene|art|drawing|illustration|idea|request)\b)[^:]{0,40}):\s+(?=\S)", re.IGNORECASE)
_SHOULD_SHOW = re.compile(r"^(?:the|this|that|my) (?:image|picture|drawing|illustration|one) (?:should|must|needs to|has to|"
                          r"can|could) (?:show|have|include|depict|feature|contain)\s+", re.IGNORECASE)


def _request_sentence(text: str) -> str:
    """The sentence(s) of a message that hold the scene, without sentences of context or talk
    around it ("For my card, could you make four dogs? She'd love it." -> the first; "Imagine a
    traffic light. Now draw it." -> the first; "Please make an image. The image should show a
    cup." -> the second)."""
    text = _FILLERS.sub("", text)
    text = _RESTART.sub("", text) or text
    text = re.sub(r"\b(?:a|an|the),?\s+(?=(?:a|an|the)\b)", "", text, flags=re.IGNORECASE)  # "a, a picture" after "um"
    parts = [p.strip() for p in re.split(r"(?<=[.?!])\s+(?=[A-Za-z])", text) if p.strip()]
    if len(parts) < 2:
        return text
    # a sentence that asks with no scene of its own ("Please make an image.") gives way to the one
    # that says what should be in it
    bare = [i for i, p in enumerate(parts) if _peel_all(p).lower() in ("", "an image", "a picture", "one",
                                                                                   "an illustration", "a drawing")]
    parts = [p for i, p in enumerate(parts) if i not in bare] or parts
    parts = [_SHOULD_SHOW.sub("", p) for p in parts]
    talk = [p for p in parts if _TALK.match(p.strip(" .?!"))]
    parts = [p for p in parts if p not in talk] or parts
    asking = [i for i, p in enumerate(parts) if _LEAD_RE.match(p) or _MEDIUM_RE.match(p) or _SEE_RE.match(p)
              or _ASKS.search(p)]
    # only a short personal sentence is context; the scene's own sentences ("The FBI is at bat, ...") stay
    kept = [_from_request(p) if i in asking else p for i, p in enumerate(parts)
            if i in asking or not (_CONTEXT_SENTENCE.match(p) and len(p.split()) <= 16)]
    return " ".join(kept) or text


#: A request anywhere in a sentence ("We're launching next week - can you design a poster ...").
_ASKS = re.compile(r"(?:^|[—–,;:]\s*|\s-\s|\b(?:says|said|asks|asked|wants)\s+)(?P<ask>(?:(?:so|now|please)\s+)?"
                   r"(?:(?:can|could|would|will) (?:you|u)\b|(?:please\s+)?(?:draw|paint|sketch|illustrate|render|generate|"
                   r"design|create|make|show)\b))", re.IGNORECASE)


def _from_request(sentence: str) -> str:
    """The sentence from its request on, without the context clause before it ("We're launching
    next week - can you design ..." -> "can you design ...")."""
    m = _ASKS.search(sentence)
    if not m or m.start("ask") == 0:
        return sentence
    return sentence[m.start("ask"):].lstrip(" —–,;:-")


def _peel_all(text: str) -> str:
    """One sentence with every layer of framing peeled off ("" when nothing would be left)."""
    current, medium_done = _fix_verb(text.strip(_TRIM)), False
    for _ in range(8):  # each pass removes at least one layer; a request has only a few
        peeled, medium_done = _peel(current, medium_done)
        if peeled == current or not peeled:
            break
        current = peeled
    return current


def request_subject(text: str) -> str:
    """What a drawing request asks to see, its framing peeled off and every word of the scene
    kept: 'Could you draw me a picture of two red apples, please?' -> 'two red apples';
    'What would a house made of ice look like?' -> 'a house made of ice'. A layer that would
    leave nothing is not removed ('Draw me a picture' -> 'a picture')."""
    text = _request_sentence(" ".join(text.split()).replace("\u2019", "'"))
    return _peel_all(text) or text.strip(_TRIM)


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
        elif set(has_boilerplate(prompt)) - set(has_boilerplate(source)):
            ok, why = False, f"the model's rewrite has {', '.join(has_boilerplate(prompt))}, not a scene"
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
        styled = source if _STYLED.search(source) else f"{source}, {STYLE_SUFFIX}"  # "a photo of ..." has one
        prompt = _limit_words(styled, self.max_words)
        while approx_clip_tokens(prompt) > CLIP_MAX_TOKENS and len(prompt.split()) > 5:
            prompt = _limit_words(prompt, len(prompt.split()) - 3)
        return ImagePrompt(prompt=prompt, source=source, rewritten=False, note=note, model_reply=model_reply)


# ---------------------------------------------------------------------------------------------
# Search and answer routes: the picture is the subject and what the answer says about it, as a
# scene ("the Mona Lisa, a half-length portrait painting by the Italian artist Leonardo da Vinci"),
# never the question, the citation's boilerplate, quote marks or bracketed reference numbers.

SCENE_MAX_WORDS = 30
_PARENS = re.compile(r"\s*[(\[{][^()\[\]{}]*[)\]}]")  # "(born 1452)", "[1]", "[citation needed]"
_QUOTES = re.compile(r"[\"“”„«»]|(?<![A-Za-z])['‘’]|['‘’](?![A-Za-z])")  # not the apostrophe in "Vinci's"
_BOILERPLATE = re.compile(r"\b(?:wikipedia|article|according to|closest sentence|citation)\b", re.IGNORECASE)
_COPULA = re.compile(r"^(?P<head>.{1,80}?)\s+(?:is|was|are|were|has been|had been)\s+(?P<rest>.+)$")
_PRONOUN = re.compile(r"^(?:it|he|she|they|this|these|its?)$", re.IGNORECASE)
# Sentences that show the model at work, not the subject: "To solve this, you multiply ...".
_WORKING = re.compile(
    r"\b(?:i|i'm|i'd|i'll|me|my|you|your|we|let's|us|sure|sorry|step|first|solve|calculate|answer|question|"
    r"multiply|divide|add|subtract|result|equals|def|return|print)\b|[=+×÷*/#`{}<>]|\d\s*-\s*\d", re.IGNORECASE)
_QUESTION_FRAME = re.compile(
    r"^(?:(?:can|could|would|will) you\s+)?(?:please\s+)?(?:"
    r"(?:what|who|whom|where|when|why|which|how(?: (?:much|many|tall|big|old|long|far|fast|heavy|deep|high))?)"
    r"(?:'s|'re|s| (?:is|are|was|were|do|does|did|can|could|would|will|should|has|have|had))?"
    r"|tell me (?:about|what|who)|describe|explain|define|is|are|was|were|do|does|did|if|should|shall|can|could|"
    r"would|will|may|might|must)\s+", re.IGNORECASE)
# A request for text names its object after the verb: "Write a Python function that ...".
_TEXT_VERB = re.compile(
    r"^(?:write|compose|tell|give|list|suggest|recommend|rewrite|translate|explain|describe|define|summari[sz]e|"
    r"convert|count|calculate|compute|say|shorten|"
    r"name|help me(?: to)?(?: with)?|teach me(?: how to)?|remind me(?: of)?)(?: (?:me|us))?\s+", re.IGNORECASE)
_INNER_AUX = re.compile(r"^(?P<n>.+?)\s+(?:has|have|had|do|does|did|can|could|will|would)\s+"
                        r"(?P<s>.+)$", re.IGNORECASE)


def clean_text(text: str) -> str:
    """``text`` without parentheses and bracketed references, quote marks or citation words."""
    text = _PARENS.sub("", _PARENS.sub("", text))  # twice: a bracket inside parentheses
    text = _QUOTES.sub("", text)
    text = re.sub(r"\s+([,.;:])", r"\1", " ".join(text.split()))
    return text.strip(" ,;:.!?")


def question_topic(question: str) -> str:
    """What a question is about, without its question words: 'What is 23 times 4?' -> '23 times 4',
    'How do I bake bread?' -> 'bake bread', 'Tell me a joke about penguins' -> 'penguins'."""
    sentences = split_sentences(" ".join(question.split())) or [question]
    questions = [s for s in sentences if s.rstrip().endswith("?")] or sentences[:1]
    asked = max(reversed(questions), key=lambda s: len(content_words(s)))  # "Hi there! How's your day going?"
    asked = re.sub(r",\s*(?:so\s+)?(?:how|what|who|where|when|why|which)\b.*$", "", asked,
                   flags=re.IGNORECASE)  # "If I have 3 apples ..., how many are left?" -> the condition
    text = request_subject(asked)  # "what does a platypus look like" -> "a platypus"
    about = re.search(r"\babout\s+(.+)$", text, re.IGNORECASE)  # "write a poem about autumn" -> "autumn"
    if about:
        text = about.group(1)
    else:
        framed = _QUESTION_FRAME.sub("", _TEXT_VERB.sub("", text, count=1), count=1)
        wh = re.match(r"(?:what|which|how|who|whom|where|when|why)\b", text, re.IGNORECASE)
        inner = _INNER_AUX.match(framed) if wh and framed != text else None
        if inner and len(inner.group("s").split()) > 1:  # "many Grammys has Beyonce won" -> "Beyonce, Grammys"
            framed = f"{inner.group('s').rsplit(' ', 1)[0]}, {re.sub(r'^(?:many|much) ', '', inner.group('n'))}"
        text = framed
    text = re.sub(r"^(?:(?:i|you|we|one|my|your|our|i'm|im|i am|you're|we're)\s+)+", "", text, flags=re.IGNORECASE)
    text = clean_text(text)
    return text if content_words(text) else clean_text(question)  # "Hello there!" stays itself


def _shorten(text: str, limit: int = SCENE_MAX_WORDS) -> str:
    """At most ``limit`` words, cut at a clause boundary when there is one."""
    text = re.split(r";|\s+[-–—]\s+", text)[0].strip(" ,")
    words = text.split()
    if len(words) <= limit:
        return text
    cut = " ".join(words[:limit])
    comma = cut.rfind(",")
    return (cut[:comma] if comma > len(cut) // 2 else cut).strip(" ,")


def _names_subject(head: str, subject: str) -> bool:
    wanted = set(content_words(subject))
    return bool(_PRONOUN.match(head.strip())) or (bool(wanted) and wanted <= set(content_words(head)))


def describe(sentence: str, subject: str) -> tuple[str, str] | None:
    """(subject phrase, description) for a sentence that says what the subject is: 'The Mona Lisa
    is a half-length portrait ...' -> ('The Mona Lisa', 'a half-length portrait ...'). A pronoun
    subject ('It was painted ...') gives the predicate. None when the sentence is about something
    else."""
    match = _COPULA.match(clean_text(sentence))
    if not match or not _names_subject(match.group("head"), subject):
        return None
    head = match.group("head")
    phrase = head if not _PRONOUN.match(head) and len(head.split()) <= len(subject.split()) + 2 else subject
    return phrase, _shorten(match.group("rest"))


def _lower_article(text: str) -> str:
    """'The Mona Lisa' -> 'the Mona Lisa' inside a scene (names keep their capitals)."""
    first = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if first in ("A", "An", "The", "It", "Its", "This", "These", "Some") else text


def _sentences(passages: Sequence[Any], title: str | None) -> list[str]:
    """The sentences of the passages, those of the article ``title`` first."""
    def field(p: Any, name: str) -> str:
        return str(p.get(name, "") if isinstance(p, dict) else getattr(p, name, ""))
    ordered = sorted(passages, key=lambda p: field(p, "title") != title)
    return [s for p in ordered for s in split_sentences(field(p, "text"))]


def source_for_answer(question: str, answer: str, title: str | None = None,
                      passages: Sequence[Any] = ()) -> str:
    """The scene to picture for a question answered in text: its subject (the article's title on
    the search route, else the question's topic) and what the answer says about it, visually.

    Search route: the article sentence that says what the subject is, as an apposition, then the
    short answer when that sentence does not already hold it ('the Mona Lisa, a half-length
    portrait painting by the Italian artist Leonardo da Vinci'). Answer route: the first sentence
    of the reply that describes the topic and does not show the model working ('To solve this,
    multiply ...', 'I think ...'). Never the question, the citation or quote marks."""
    answer = "" if _BOILERPLATE.search(answer) else answer  # a "not found in Wikipedia" reply says nothing
    subject = title_subject(title).strip() if title else question_topic(question)
    phrase, parts = subject, []
    if title:
        sentences = [clean_text(s) for s in _sentences(passages, title)]
        lead = next((d for d in (describe(s, subject) for s in sentences) if d), None)
        if lead:
            phrase, parts = lead[0], [lead[1]]
        short = clean_text(answer)
        if short and not set(content_words(short)) <= set(content_words(" ".join([phrase, *parts]))):
            saying = next((s for s in sentences if short.lower() in s.lower()), "")
            said = describe(saying, subject) if saying else None
            parts.append(said[1] if said else _shorten(short))
    else:
        for raw in split_sentences(answer):
            sentence = clean_text(raw)
            if not sentence or _WORKING.search(sentence) or raw.rstrip().endswith("?"):
                continue
            if len(set(content_words(sentence)) - set(content_words(f"{subject} {question}"))) < 2:
                continue  # an echo of the question ("Hello!") or an exclamation ("Awesome!")
            said = describe(sentence, subject)
            if said:
                phrase, parts = said[0], [said[1]]
            elif set(content_words(subject)) <= set(content_words(sentence)):
                phrase, parts = "", [_shorten(sentence)]  # "Turtles eat snakes, fish ..." names it already
            else:
                parts = [_shorten(sentence)]
            break
    scene = ", ".join(_lower_article(p) for p in [phrase, *parts] if p)
    return _limit_words(scene, MAX_WORDS - 3)


def has_boilerplate(prompt: str, question: str = "") -> list[str]:
    """What in an image prompt is not a scene: citation words, quote marks, bracketed numbers, the
    question's text (the whole question, or its first three words: the question's framing, "what
    is the", "can you tell"). Empty when the prompt is clean."""
    found = []
    if _BOILERPLATE.search(prompt):
        found.append("citation words")
    if re.search(r"[\"“”«»]|(?<![A-Za-z])['‘]", prompt):
        found.append("quote marks")
    if re.search(r"\[\d+\]", prompt):
        found.append("reference numbers")
    asked = re.findall(r"[a-z0-9]+", question.lower())
    have = " " + " ".join(re.findall(r"[a-z0-9]+", prompt.lower())) + " "
    if len(asked) >= 3 and any(f" {' '.join(words)} " in have for words in (asked, asked[:3])):
        found.append("the question")
    return found


__all__: Sequence[str] = ["PromptRewriter", "ImagePrompt", "request_subject", "keeps_source", "source_for_answer",
                          "has_boilerplate"]
