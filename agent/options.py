"""The command line's settings options, declared once for ``ask``, ``chat`` and ``serve``.

Each option is a :class:`~agent.settings.Settings` field; its help is the field's description and
its environment variable is the field's. An option that is not given stays ``None`` and is not
passed on, so ``Settings`` reads the environment for it (``ASKDRAW_WIKI``, ``ASKDRAW_OUT_DIR``, ...)
and then its default: one source of configuration, in one order (option > environment > default).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from agent.settings import Settings

# field -> (option declarations, value type). Help text comes from the field's description.
SETTINGS_OPTIONS: dict[str, tuple[tuple[str, ...], type]] = {
    "out_dir": (("--out",), Path),
    "seed": (("--seed",), int),
    "wiki": (("--wiki",), str),
    "llm": (("--llm",), str),
    "llm_runtime": (("--llm-runtime",), str),
    "asr": (("--asr",), str),
    "device": (("--device",), str),
    "dtype": (("--dtype",), str),
    "asr_runtime": (("--asr-runtime",), str),
    "image_model": (("--image-model",), str),
    "image_steps": (("--image-steps",), int),
    "image_size": (("--image-size",), int),
    "route": (("--route",), str),
    "decide": (("--decide",), str),
    "image": (("--image/--no-image",), bool),
    "llm_endpoint": (("--llm-endpoint",), str),
    "llm_model": (("--llm-model",), str),
    "asr_endpoint": (("--asr-endpoint",), str),
    "asr_model": (("--asr-model",), str),
    "image_endpoint": (("--image-endpoint",), str),
}


def env_name(field: str) -> str:
    return f"{Settings.model_config['env_prefix']}{field.upper()}"


def option_name(field: str) -> str:
    """``--wiki`` for a field that has an option, else its environment variable."""
    if field in SETTINGS_OPTIONS:
        return SETTINGS_OPTIONS[field][0][0].split("/")[0]
    return env_name(field)


def _parameter(field: str) -> inspect.Parameter:
    decls, kind = SETTINGS_OPTIONS[field]
    description = Settings.model_fields[field].description or ""
    option = typer.Option(*decls, help=f"{description} \\[env: {env_name(field)}]", show_default=False,
                          rich_help_panel="Settings")
    return inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[kind], option])


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command(..., overrides: dict)`` every settings option: ``overrides`` holds the ones
    given on the command line (for :class:`Settings`; the others come from the environment)."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "overrides"]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {field: kwargs.pop(field) for field in SETTINGS_OPTIONS}
        return command(**kwargs, overrides={k: v for k, v in given.items() if v is not None})

    params = own + [_parameter(field) for field in SETTINGS_OPTIONS]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must see the new signature, not the command's own
    return wrapper
