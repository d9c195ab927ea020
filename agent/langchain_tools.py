"""The agent's tools as LangChain ``StructuredTool``s, for other agents (LangGraph's prebuilt
ReAct agent, a ``ToolNode``, any tool-calling loop): ``Agent().tools.as_langchain_tools()``
(``Agent().langchain_tools()`` and ``langchain_tools(toolbox)`` are the same list).

They are built from a :class:`~agent.context.Toolbox`, so they use the same settings and the
same loaded models as the agent (no second configuration path); each model loads on first use.

Each tool has an explicit pydantic argument schema (what a tool-calling model is shown) and
handles its own errors: arguments that fail the schema, and a :class:`~tools.common.ToolError`
while running (an audio file not found, an endpoint that does not answer), come back as the
tool's result, an error ``ToolMessage`` with a one-line reason the model can act on, whatever
the caller's ``handle_tool_errors``. Cancellation and programming errors still raise.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field, StringConstraints, ValidationError

from agent.context import Toolbox
from tools.answer import AnswerWriter, with_citation
from tools.base import ImageResult, Passage
from tools.common import ToolError, cache_dir
from tools.image_prompt import PromptRewriter, request_subject

# A string with something in it besides whitespace (the value the tool gets is stripped).
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
MAX_SEED = 2**32 - 1


class TranscribeArgs(BaseModel):
    path: Text = Field(description="Path of the audio file on the local disk (wav, flac, ogg/vorbis, opus or mp3).")


class SearchArgs(BaseModel):
    query: Annotated[Text, StringConstraints(max_length=300)] = Field(
        description='A short keyword query, e.g. "Mona Lisa painter" or "Ray Charles birthplace".')


class WriteAnswerArgs(BaseModel):
    question: Text = Field(description="The user's question, as a full sentence.")
    context: str = Field(default="", description="A passage (e.g. from search_wikipedia) the answer must be "
                                                 "based on; leave empty to answer from the model's own knowledge.")
    title: str = Field(default="", description="The title of the article the context comes from, if any.")


class RewriteImagePromptArgs(BaseModel):
    request: Text = Field(description='What the person wants to see, e.g. "show me two cats on a red sofa".')


class GenerateImageArgs(BaseModel):
    prompt: Text = Field(description="A detailed text-to-image prompt (see rewrite_image_prompt); the image "
                                     "model reads about its first 77 tokens.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED,
                      description="Random seed: the same prompt and seed draw the same picture.")


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


def _invalid_arguments(name: str) -> Callable[[Any], str]:
    def message(exc: ValidationError) -> str:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        return f"Invalid arguments for {name}: {problems}. Call {name} again with corrected arguments."

    return message


def _make_tool(func: Callable[..., Any], args_schema: type[BaseModel], description: str, **kwargs: Any) -> BaseTool:
    """A StructuredTool whose errors are its result: a ToolError while running becomes a
    ToolException (handled: its message is the result), a schema failure a message naming the
    argument."""
    name = func.__name__

    @functools.wraps(func)
    def run(**arguments: Any) -> Any:
        try:
            return func(**arguments)
        except ToolError as exc:
            raise ToolException(f"{name} failed: {exc}") from exc

    return StructuredTool.from_function(run, name=name, description=description, args_schema=args_schema,
                                        handle_tool_error=True, handle_validation_error=_invalid_arguments(name),
                                        **kwargs)


def langchain_tools(toolbox: Toolbox) -> list[BaseTool]:
    """``transcribe_audio``, ``search_wikipedia``, ``write_answer``, ``rewrite_image_prompt`` and
    ``generate_image``, on ``toolbox``'s models."""
    return [*_reading_tools(toolbox), *_writing_tools(toolbox)]


def _reading_tools(toolbox: Toolbox) -> list[BaseTool]:
    def transcribe_audio(path: str) -> str:
        return toolbox.asr.transcribe(path)

    def search_wikipedia(query: str) -> str:
        try:
            passages = toolbox.wiki.search(query, k=3)
        except ToolError as exc:
            return f"Wikipedia search failed: {exc}"
        return format_passages(query, passages)

    return [
        _make_tool(transcribe_audio, TranscribeArgs,
                   "Transcribe a spoken English audio recording to text (offline Whisper speech recognition). "
                   "Use this when the user's question or input is an audio file. Accepts files of any sample "
                   "rate, up to 10 minutes."),
        _make_tool(search_wikipedia, SearchArgs,
                   "Search Wikipedia for factual background on a topic, person, place, work or event. Returns up "
                   "to three passages, each as '[n] Title (URL)' then its text, or a message saying that no "
                   "page was found (then try a different query)."),
    ]


def _writing_tools(toolbox: Toolbox) -> list[BaseTool]:
    def write_answer(question: str, context: str = "", title: str = "") -> str:
        writer = AnswerWriter(toolbox.llm, max_new_tokens=toolbox.settings.max_answer_tokens)
        if context.strip():
            answer = writer.grounded(question, [{"title": title or "context", "url": "", "text": context}])
            return with_citation(answer)
        return writer.direct(question).text

    def rewrite_image_prompt(request: str) -> str:
        return PromptRewriter(toolbox.llm).rewrite(request_subject(request)).prompt

    def generate_image(prompt: str, seed: int = 0) -> tuple[str, dict[str, Any]]:
        result = toolbox.image.generate(prompt, _image_path(toolbox, prompt, seed), seed=seed)
        return describe_image(result), result.model_dump()

    return [
        _make_tool(write_answer, WriteAnswerArgs,
                   "Write a short text answer to a question with the local LLM. With a context passage the "
                   "answer is based on it and ends with the supporting sentence; without one it comes from "
                   "the model's own knowledge."),
        _make_tool(rewrite_image_prompt, RewriteImagePromptArgs,
                   "Rewrite a drawing request into a prompt for a text-to-image model. Keeps every object, "
                   "number, colour and position of the request, adds a style, and stays within the CLIP text "
                   "encoder's 77-token window."),
        _make_tool(generate_image, GenerateImageArgs,
                   "Draw a picture from a detailed text-to-image prompt with the configured diffusion model. "
                   "Returns one line saying whether an image was generated and the path of the PNG (the "
                   "ToolMessage's artifact holds the same as fields: path, generated, model, seed, ...). If no "
                   "image model is available, no picture is drawn: the PNG is a card saying so.",
                   response_format="content_and_artifact"),
    ]
