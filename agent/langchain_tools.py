"""The agent's tools as langchain-core tools, for other agents (a ReAct loop, smolagents via
LangChain, ...): ``langchain_tools(Agent().tools)`` or ``Agent().langchain_tools()``.

They are built from a :class:`~agent.context.Toolbox`, so they use the same settings and the
same loaded models as the agent (no second configuration path); each model loads on first use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from langchain_core.tools import BaseTool, tool

from agent.context import Toolbox
from tools.answer import AnswerWriter, with_citation
from tools.base import ImageResult, Passage
from tools.common import ToolError, cache_dir
from tools.image_prompt import PromptRewriter, request_subject


def format_passages(query: str, passages: list[Passage]) -> str:
    if not passages:
        return f"No Wikipedia page found for '{query}'; try a different query."
    return "\n\n".join(f"[{i}] {p.title} ({p.url})\n{p.text}" for i, p in enumerate(passages, 1))


def describe_image(result: ImageResult) -> str:
    """One line: what was (or was not) drawn, and where the PNG is."""
    if result.generated:
        return (f"Generated an image with {result.model} (seed {result.seed}, {result.steps} steps, "
                f"{result.width}x{result.height}, {result.ms / 1000:.1f} s): {result.path}")
    return f"NO IMAGE GENERATED — {result.notice} A labelled placeholder card (not a picture) was saved at {result.path}"


def _image_path(toolbox: Toolbox, prompt: str, seed: int) -> Path:
    s = toolbox.settings
    key = "\x00".join([str(s.image_model), prompt, str(seed), str(s.image_steps), str(s.image_size)])
    return cache_dir() / "images" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.png"


def langchain_tools(toolbox: Toolbox) -> list[BaseTool]:
    """``transcribe_audio``, ``search_wikipedia``, ``write_answer``, ``rewrite_image_prompt`` and
    ``generate_image``, on ``toolbox``'s models."""
    return [*_reading_tools(toolbox), *_writing_tools(toolbox)]


def _reading_tools(toolbox: Toolbox) -> list[BaseTool]:
    @tool
    def transcribe_audio(path: str) -> str:
        """Transcribe a spoken English audio recording to text (offline Whisper speech recognition).

        Use this when the user's question or input is an audio file. Accepts wav, flac,
        ogg/vorbis, opus and mp3 files of any sample rate, up to 10 minutes.

        Args:
            path: path to the audio file on the local disk.
        """
        return toolbox.asr.transcribe(path)

    @tool
    def search_wikipedia(query: str) -> str:
        """Search Wikipedia for factual background on a topic, person, place, work or event.

        Use a short keyword query (e.g. "Mona Lisa painter" or "Ray Charles birthplace").
        Returns up to three passages, each with its article title and URL, or a message saying
        that no page was found.
        """
        try:
            passages = toolbox.wiki.search(query, k=3)
        except ToolError as exc:
            return f"Wikipedia search failed: {exc}"
        return format_passages(query, passages)

    return [transcribe_audio, search_wikipedia]


def _writing_tools(toolbox: Toolbox) -> list[BaseTool]:
    @tool
    def write_answer(question: str, context: str = "", title: str = "") -> str:
        """Write a short text answer to a question with the local LLM.

        Args:
            question: the user's question.
            context: optional passage (e.g. from Wikipedia) the answer must be based on.
            title: the title of the article the context comes from, if any.
        """
        writer = AnswerWriter(toolbox.llm, max_new_tokens=toolbox.settings.max_answer_tokens)
        if context.strip():
            answer = writer.grounded(question, [{"title": title or "context", "url": "", "text": context}])
            return with_citation(answer)
        return writer.direct(question).text

    @tool
    def rewrite_image_prompt(request: str) -> str:
        """Rewrite a drawing request into a prompt for a text-to-image model.

        Keeps every object, number, colour and position of the request, adds a style, and stays
        within the CLIP text encoder's 77-token window.

        Args:
            request: what the person wants to see, e.g. "show me two cats on a red sofa".
        """
        return PromptRewriter(toolbox.llm).rewrite(request_subject(request)).prompt

    @tool
    def generate_image(prompt: str, seed: int = 0) -> str:
        """Draw a picture from a detailed text-to-image prompt with the configured diffusion model.

        Returns one line saying whether an image was generated and the path of the PNG. If no
        image model is available, no picture is drawn: the PNG is a card saying so.
        """
        result = toolbox.image.generate(prompt, _image_path(toolbox, prompt, seed), seed=seed)
        return describe_image(result)

    return [write_answer, rewrite_image_prompt, generate_image]
