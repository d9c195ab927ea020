"""Text-to-image with diffusers, and an honest fallback when no image model is available.

Any diffusers text-to-image pipeline works: a local diffusers folder (with ``model_index.json``)
or a hub id that is already in the Hugging Face cache (``hf download stabilityai/sd-turbo``).
askdraw ships no image weights and never downloads at run time unless asked
(``allow_download=True``), so by default no image model is configured.

When there is no model, it fails to load, or the pipeline fails mid-way, :meth:`ImageGenerator.generate`
does not raise: it writes a clearly labelled "NO IMAGE GENERATED" card (:func:`tools.card.render_card`)
and returns ``generated=False`` with a notice saying why and how to add a model. Noise or a
stand-in is never passed off as a picture; every PNG carries ``askdraw:generated`` metadata.

Default steps: 2 (with guidance 0) for few-step models whose name says so (turbo, LCM,
lightning, hyper, schnell, flash), else 20 with the pipeline's own guidance default.

Slow drawing is announced and can be stopped: a pipeline of GPU size (:data:`GPU_SIZE_PARAMETERS`,
e.g. SDXL or FLUX) on this CPU says so before it starts, and after the first denoising step every
pipeline whose remaining steps would take longer than ``estimate_after_s`` reports the estimate
(``status("about 6 min: 30 steps x 12 s")``: steps x the measured seconds of the first step). A
cancelled turn (Ctrl-C, the web app's Stop: :func:`tools.common.cancellable`) stops between steps
with :class:`tools.common.Cancelled`.

Device and memory: ``device`` is ``auto`` (CUDA, then Apple MPS, then the CPU), ``cpu``, ``cuda``,
``cuda:N`` or ``mps``; asking for one that is absent is a one-line :class:`ToolError`
(:func:`resolve_device`). The dtype follows the device (float16 on CUDA and MPS, float32 on the
CPU) unless ``dtype`` says otherwise. On CUDA the free memory decides how the pipeline is placed
(:func:`plan_memory`): all on the card; on the card with attention slicing and VAE tiling when it is
tight; model CPU offload (``accelerate``: one component on the card at a time) when the weights
and working memory exceed the free memory; sequential CPU offload when even the largest component
does not fit. :attr:`ImageGenerator.placement` records the choice and why, for the trace. A CUDA
out-of-memory error while drawing becomes the card's notice, naming the model, the device and what
to try.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.base import ImageResult, NoImageKind
from tools.card import card_result, save_png
from tools.common import Cancelled, ToolError, current_cancel_event, load_once
from tools.device import check_spec, dtype_spec, is_out_of_memory, resolve, resolve_dtype
from tools.endpoint import Endpoint
from tools.model_files import local_folder
from tools.text import exception_line

DEFAULT_HUB_MODEL = "stabilityai/sd-turbo"  # a suggestion for users with hub access; never loaded by default

FEW_STEP_MARKERS = ("turbo", "lcm", "lightning", "hyper", "schnell", "flash")
FEW_STEP_DEFAULT_STEPS = 2
DEFAULT_STEPS = 20

# A pipeline with at least this many parameters (all its torch modules) is sized for a GPU: SD 1.5 and
# SD 2.1 / sd-turbo have about 1.1-1.3 B, SDXL about 3.5 B, SD3 medium about 7 B (with its T5), FLUX about 17 B.
GPU_SIZE_PARAMETERS = 2_000_000_000
# Say how long the drawing will take when its remaining steps will take longer than this (seconds).
ESTIMATE_AFTER_S = 10.0

HOW_TO_ADD = (
    "To draw pictures, pass --image-model PATH_OR_HUB_ID (or set ASKDRAW_IMAGE_MODEL): a local "
    f"diffusers folder, or a hub id already downloaded, e.g. {DEFAULT_HUB_MODEL} after "
    f"`hf download {DEFAULT_HUB_MODEL}`."
)


def _quiet_diffusers() -> None:
    """No tqdm bars (progress is reported through callbacks) and no advisory chatter."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from diffusers.utils import logging as d_logging
    from transformers.utils import logging as t_logging

    d_logging.disable_progress_bar()
    d_logging.set_verbosity_error()
    t_logging.disable_progress_bar()


def _dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """diffusers >= 0.42 takes ``dtype=`` (``torch_dtype=`` is deprecated); older ones only ``torch_dtype=``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _is_few_step(model: str | None) -> bool:
    return bool(model) and any(m in model.lower() for m in FEW_STEP_MARKERS)


def duration(seconds: float) -> str:
    """``8 s``, ``3 min``, ``1 h 20 min``: how long, rounded as a person would say it."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def estimate_text(steps: int, seconds_per_step: float) -> str:
    """The estimate a user reads: ``about 6 min: 30 steps x 12 s``."""
    per = f"{seconds_per_step:.1f} s" if seconds_per_step < 10 else f"{round(seconds_per_step)} s"
    return f"about {duration(steps * seconds_per_step)}: {steps} steps x {per}"


def parameter_count(pipe: Any) -> int:
    """Parameters of a pipeline's torch modules (UNet / transformer, text encoders, VAE)."""
    total = 0
    for component in getattr(pipe, "components", {}).values():
        parameters = getattr(component, "parameters", None)
        if callable(parameters):
            try:
                total += sum(p.numel() for p in parameters())
            except TypeError:  # not a torch module after all
                continue
    return total


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return exception_line(exc, limit, own=(ToolError,))


# -- device, dtype and GPU memory -------------------------------------------------------------------
# One device setting for every model (tools/device.py); the names stay importable from here.
check_device = check_spec
resolve_device = resolve
_is_out_of_memory = is_out_of_memory

GiB = 1024 ** 3
# Working memory of one 512x512 picture in float16 (UNet activations, VAE decode), grown with the
# pixel count and the dtype's size; kept free beside the weights, with MARGIN for the allocator.
WORK_BYTES_512 = 1.5 * GiB
MARGIN_BYTES = 0.5 * GiB


def plan_memory(weight_bytes: int, largest_bytes: int, free_bytes: int, *, pixels: int = 512 * 512,
                dtype_bytes: int = 2) -> tuple[list[str], str]:
    """How to place a pipeline on a CUDA card with ``free_bytes`` free: the memory options (in the
    order they are applied) and why, in words. ``weight_bytes`` are all the pipeline's parameters,
    ``largest_bytes`` its largest component's (what model CPU offload keeps on the card at once).

    - all on the card: the weights, twice the working memory and the margin fit: no option;
    - tight (one working memory fits, two do not): ``attention_slicing`` and ``vae_tiling``;
    - the weights do not fit: ``model_cpu_offload`` (each component moves to the card when it runs);
    - not even the largest component fits: ``sequential_cpu_offload`` (layer by layer; slowest).
    """
    work = WORK_BYTES_512 * pixels / (512 * 512) * dtype_bytes / 2
    gib = lambda n: f"{n / GiB:.1f} GiB"  # noqa: E731
    have = f"{gib(free_bytes)} free"
    if weight_bytes + 2 * work + MARGIN_BYTES <= free_bytes:
        return [], f"weights {gib(weight_bytes)} and working memory fit in {have}"
    if weight_bytes + work + MARGIN_BYTES <= free_bytes:
        return ["attention_slicing", "vae_tiling"], f"weights {gib(weight_bytes)} fit in {have}, with little to spare"
    small = ["attention_slicing", "vae_tiling"]
    if largest_bytes + work + MARGIN_BYTES <= free_bytes:
        return ["model_cpu_offload", *small], f"weights {gib(weight_bytes)} and working memory exceed {have}"
    return (["sequential_cpu_offload", *small],
            f"even the largest component ({gib(largest_bytes)}) and working memory exceed {have}")


def component_bytes(pipe: Any) -> list[int]:
    """Parameter bytes of each torch module of a pipeline."""
    sizes = []
    for component in getattr(pipe, "components", {}).values():
        parameters = getattr(component, "parameters", None)
        if callable(parameters):
            try:
                sizes.append(sum(p.numel() * p.element_size() for p in parameters()))
            except TypeError:
                continue
    return sizes


class ImageGenerator:
    """A diffusers text-to-image pipeline on ``device`` (default ``auto``), loaded lazily; falls back
    to a labelled card."""

    def __init__(
        self,
        model: str | None = None,
        *,
        steps: int | None = None,
        width: int = 512,
        height: int = 512,
        guidance_scale: float | None = None,
        allow_download: bool = False,
        estimate_after_s: float = ESTIMATE_AFTER_S,
        device: str | None = "auto",
        dtype: str | None = "auto",
    ) -> None:
        model = (model or "").strip() or None
        self.device = check_device(device)  # as asked; resolved (and checked to exist) by load()
        self.dtype = dtype_spec(dtype)
        for label, value in (("width", width), ("height", height)):
            if value < 8 or value % 8:
                raise ValueError(f"image {label} must be a positive multiple of 8, got {value}")
        few = _is_few_step(model)
        self.model = model
        self.name: str | None = model
        self.steps = int(steps) if steps is not None else (FEW_STEP_DEFAULT_STEPS if few else DEFAULT_STEPS)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        self.width = width
        self.height = height
        self.guidance_scale = guidance_scale if guidance_scale is not None else (0.0 if few else None)
        self.allow_download = allow_download
        self.estimate_after_s = estimate_after_s
        self.parameters: int | None = None  # of the loaded pipeline (GPU_SIZE_PARAMETERS)
        # Where the loaded pipeline runs and why (for the trace): device, dtype, memory options, reason.
        self.placement: dict[str, Any] | None = None
        self.pipe: Any = None
        self.load_seconds: float | None = None
        self._load_error: ToolError | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------
    def _resolve(self) -> tuple[str, bool]:
        """(what to pass to from_pretrained, is_local_folder); ToolError if it cannot work."""
        if self.model is None:
            raise ToolError(f"no image model is configured. {HOW_TO_ADD}")
        path = local_folder(self.model)
        if path is None:
            return self.model, False
        if path.exists():
            if not path.is_dir():
                raise ToolError(
                    f"image model '{self.model}' is a file, not a diffusers pipeline folder "
                    f"(single-file checkpoints are not supported). {HOW_TO_ADD}"
                )
            if not (path / "model_index.json").is_file():
                raise ToolError(
                    f"image model folder '{self.model}' is not a diffusers pipeline "
                    f"(no model_index.json). {HOW_TO_ADD}"
                )
            return str(path), True
        raise ToolError(f"image model folder '{self.model}' does not exist. {HOW_TO_ADD}")

    @property
    def loaded(self) -> bool:
        return self.pipe is not None

    @load_once
    def load(self) -> None:
        """Load the pipeline once (thread-safe). Raises ToolError with a how-to-fix message."""
        if self._load_error is not None:  # do not retry a failed load on every call
            raise self._load_error
        try:
            self.pipe = self._load()
        except ToolError as exc:
            self._load_error = exc
            raise
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a user-facing error
            self._load_error = ToolError(
                f"could not load image model '{self.model}': {_one_line(exc)}. {HOW_TO_ADD}"
            )
            raise self._load_error from exc

    def _load(self) -> Any:
        source, local = self._resolve()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        from diffusers import AutoPipelineForText2Image

        _quiet_diffusers()
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                source,
                local_files_only=local or not self.allow_download,
                **_dtype_kwarg(dtype),
            )
        except OSError as exc:
            if local:
                raise
            if self.allow_download:
                where = f"it could not be downloaded ({_one_line(exc, 160)})"
            else:
                where = (
                    "there is no local folder of that name, it is not in the local Hugging Face "
                    "cache, and downloads are off"
                )
            raise ToolError(f"image model '{self.model}' is unavailable: {where}. {HOW_TO_ADD}") from exc
        self.parameters = parameter_count(pipe)
        self.placement = self._place(pipe, device, dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _place(self, pipe: Any, device: str, dtype: Any) -> dict[str, Any]:
        """Move ``pipe`` to ``device``; on CUDA with the memory options :func:`plan_memory` picks from
        the card's free memory. Returns what was done, for :attr:`placement`."""
        import torch

        sizes = component_bytes(pipe)
        placement: dict[str, Any] = {"device": device, "dtype": str(dtype).removeprefix("torch."),
                                     "weights_gib": round(sum(sizes) / GiB, 2), "memory_options": [], "why": ""}
        if not device.startswith("cuda"):
            pipe.to(device)
            return placement
        target = torch.device(device)
        free, total = torch.cuda.mem_get_info(target)
        options, why = plan_memory(sum(sizes), max(sizes, default=0), free, pixels=self.width * self.height,
                                   dtype_bytes=torch.empty((), dtype=dtype).element_size())
        placement.update(free_gib=round(free / GiB, 2), total_gib=round(total / GiB, 2), why=why)
        if "sequential_cpu_offload" in options:
            pipe.enable_sequential_cpu_offload(device=target)
        elif "model_cpu_offload" in options:
            pipe.enable_model_cpu_offload(device=target)
        else:
            pipe.to(target)
        done = [o for o in options if o.endswith("cpu_offload")]
        if "attention_slicing" in options and callable(getattr(pipe, "enable_attention_slicing", None)):
            pipe.enable_attention_slicing()
            done.append("attention_slicing")
        vae = getattr(pipe, "vae", None)
        if "vae_tiling" in options and callable(getattr(vae, "enable_tiling", None)):
            vae.enable_tiling()
            done.append("vae_tiling")
        placement["memory_options"] = done
        return placement

    @property
    def placement_text(self) -> str | None:
        """One line for the trace: ``cuda float16, model CPU offload, attention slicing (weights ...)``."""
        p = self.placement
        if p is None:
            return None
        options = ", ".join(o.replace("_", " ").replace("cpu", "CPU").replace("vae", "VAE") for o in p["memory_options"])
        return f"{p['device']} {p['dtype']}" + (f", {options}" if options else "") + (f" ({p['why']})" if p["why"] else "")

    @property
    def gpu_sized(self) -> bool:
        """Is the loaded pipeline sized for a GPU (slow on a CPU)?"""
        return (self.parameters or 0) >= GPU_SIZE_PARAMETERS

    @property
    def slow_here(self) -> bool:
        """A GPU-sized pipeline that runs on the CPU: said before it starts, estimated after step one."""
        return self.gpu_sized and (self.placement or {}).get("device", "cpu") == "cpu"

    # -- generation ----------------------------------------------------------------------
    def _card(self, prompt: str, out_path: Path, seed: int, t0: float, reason: str,
              missing: NoImageKind = "failed") -> ImageResult:
        return card_result(self, prompt, out_path, seed, t0, reason, missing)

    def generate(
        self,
        prompt: str,
        out_path: str | Path,
        *,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
        status: Callable[[str], None] | None = None,
    ) -> ImageResult:
        """Draw ``prompt`` to ``out_path`` (PNG). Never raises for model problems: returns a
        labelled card with ``generated=False`` and a ``notice`` instead. ``progress(done, total)``
        after each step; ``status(text)`` says how long it will take (see the module's docstring).
        Raises :class:`Cancelled` when the turn is cancelled between steps."""
        t0 = time.perf_counter()
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if self.model is None:
            return self._card(prompt, out_path, seed, t0,
                              f"No image model is configured, so no picture was drawn. {HOW_TO_ADD}", "no_model")
        try:
            self.load()
        except ToolError as exc:
            return self._card(prompt, out_path, seed, t0, str(exc))

        if status is not None and self.slow_here:
            status(f"{self.model} has {self.parameters / 1e9:.1f} B parameters, a size for a GPU: on this CPU "
                   f"each of its {self.steps} steps is slow; the first step's time gives the estimate "
                   "(Ctrl-C or Stop cancels)")
        try:
            image = self._run(prompt, seed, progress, status)
        except Cancelled:
            raise
        except ToolError as exc:  # out of memory: what to try
            return self._card(prompt, out_path, seed, t0, str(exc))
        except Exception as exc:  # noqa: BLE001 - report, never pass off a broken result
            return self._card(
                prompt, out_path, seed, t0,
                f"image model '{self.model}' failed while generating "
                f"({_one_line(exc)}).",
            )
        if image is None:
            return self._card(
                prompt, out_path, seed, t0,
                f"the safety checker of '{self.model}' blocked the image.", "blocked",
            )
        save_png(image, out_path, {
            "prompt": prompt, "seed": str(seed), "model": str(self.model), "steps": str(self.steps),
            "askdraw:generated": "true",
        })
        return ImageResult(
            path=str(out_path), generated=True, model=self.model, prompt=prompt, seed=seed,
            steps=self.steps, width=image.width, height=image.height,
            ms=(time.perf_counter() - t0) * 1000,
        )

    def _out_of_memory(self, exc: BaseException) -> str:
        """The notice for an out-of-memory error while drawing; frees what the failed run cached."""
        import torch

        p = self.placement or {}
        device = p.get("device", self.device)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        used = ", ".join(o.replace("_", " ") for o in p.get("memory_options", [])) or "no memory options"
        free = f", {p['free_gib']} GiB free at load" if "free_gib" in p else ""
        return (f"image model '{self.model}' ran out of memory on {device} drawing {self.width}x{self.height} "
                f"({p.get('dtype', '?')}, {used}{free}): {_one_line(exc, 120)}. Try a smaller --image-size, "
                "closing other programs that use the GPU, or --device cpu.")

    def _run(self, prompt: str, seed: int, progress: Callable[[int, int], None] | None,
             status: Callable[[str], None] | None = None) -> Any:
        import torch

        pipe = self.pipe
        params = inspect.signature(pipe.__call__).parameters
        kwargs: dict[str, Any] = {
            "prompt": prompt,
            "num_inference_steps": self.steps,
            "width": self.width,
            "height": self.height,
            "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": "pil",
        }
        if self.guidance_scale is not None and "guidance_scale" in params:
            kwargs["guidance_scale"] = self.guidance_scale
        cancel = current_cancel_event()
        started = [0.0]
        if "callback_on_step_end" in params:
            def on_step_end(p: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
                total = getattr(p, "_num_timesteps", None) or self.steps
                first = time.perf_counter() - started[0]  # prompt encoding + the first step
                if progress is not None:
                    progress(step + 1, total)
                if step == 0 and status is not None and total > 1:
                    if self.slow_here or (total - 1) * first >= self.estimate_after_s:
                        status(estimate_text(total, first))
                if cancel is not None and cancel.is_set() and step + 1 < total:
                    raise Cancelled("cancelled")  # between steps: the pipeline stops here
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        with self._run_lock:  # a pipeline (its scheduler) is not safe to run concurrently
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            started[0] = time.perf_counter()
            try:
                out = pipe(**kwargs)
            except Exception as exc:
                if not _is_out_of_memory(exc):
                    raise
                raise ToolError(self._out_of_memory(exc)) from exc
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw and any(nsfw):
            return None
        image = out.images[0]
        if progress is not None and "callback_on_step_end" not in params:
            progress(self.steps, self.steps)
        return image


class EndpointImageGenerator:
    """Images from an OpenAI-compatible ``/v1/images/generations`` server (a GPU box serving a
    diffusion model for many users), with the same contract as :class:`ImageGenerator`:
    :meth:`generate` never raises for server problems; it writes the labelled card and says why.
    ``model`` None lets the server use its default model. The API has no seed or step count:
    the server decides those (``steps`` is reported as 0)."""

    def __init__(self, base_url: str, model: str | None = None, *, width: int = 512, height: int = 512,
                 api_key_env: str | None = None, timeout: float | None = None, retries: int | None = None) -> None:
        self.endpoint = Endpoint.for_tool("image", base_url, api_key_env=api_key_env, timeout=timeout,
                                          retries=retries)
        self.server_model = (model or "").strip() or None
        self.model = f"{self.server_model or 'default model'} @ {self.endpoint.base_url}"
        self.name = self.model
        self.steps = 0
        self.width, self.height = width, height
        self.load_seconds: float | None = None
        self.loaded = True  # nothing to load ahead: each image is one request

    def load(self) -> None:
        """Nothing to do: the server is contacted by each request."""

    def _card(self, prompt: str, out_path: Path, seed: int, t0: float, reason: str,
              missing: NoImageKind = "failed") -> ImageResult:
        return card_result(self, prompt, out_path, seed, t0, reason, missing)

    def _request(self, prompt: str) -> Any:
        import base64
        import io

        from PIL import Image

        kwargs: dict[str, Any] = {"prompt": prompt, "n": 1, "size": f"{self.width}x{self.height}",
                                  "response_format": "b64_json"}
        if self.server_model:
            kwargs["model"] = self.server_model
        try:
            reply = self.endpoint.client().images.generate(**kwargs)
        except Exception as exc:  # noqa: BLE001 - one line naming the endpoint
            raise self.endpoint.error(exc) from exc
        try:
            item = reply.data[0]
        except (AttributeError, IndexError, TypeError):
            raise self.endpoint.malformed(f"no data[0] in {str(reply)[:80]!r}") from None
        raw: bytes | None = None
        if getattr(item, "b64_json", None):
            try:
                raw = base64.b64decode(item.b64_json, validate=True)
            except ValueError as exc:
                raise self.endpoint.malformed(f"b64_json is not base64 ({exc})") from None
        elif getattr(item, "url", None):
            import httpx

            try:
                response = httpx.get(item.url, timeout=self.endpoint.timeout)
                response.raise_for_status()
            except httpx.HTTPError as exc:
                raise ToolError(f"{self.endpoint.label}: could not fetch the image at {item.url[:80]}: {exc}") from exc
            raw = response.content
        if not raw:
            raise self.endpoint.malformed("the reply holds no image (neither b64_json nor url)")
        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except Exception as exc:  # noqa: BLE001 - not an image at all
            raise self.endpoint.malformed(f"the image data is not a picture ({_one_line(exc, 80)})") from None
        return image.convert("RGB")

    def generate(self, prompt: str, out_path: str | Path, *, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None,
                 status: Callable[[str], None] | None = None) -> ImageResult:
        """One request; ``status`` is unused (the server knows its own speed)."""
        t0 = time.perf_counter()
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            image = self._request(prompt)
        except ToolError as exc:
            return self._card(prompt, out_path, seed, t0, str(exc))
        if progress is not None:
            progress(1, 1)
        save_png(image, out_path, {"prompt": prompt, "model": self.model, "askdraw:generated": "true"})
        return ImageResult(path=str(out_path), generated=True, model=self.model, prompt=prompt, seed=seed,
                           steps=0, width=image.width, height=image.height, ms=(time.perf_counter() - t0) * 1000)


__all__ = [
    "DEFAULT_HUB_MODEL", "ESTIMATE_AFTER_S", "EndpointImageGenerator", "GPU_SIZE_PARAMETERS", "ImageGenerator",
    "ImageResult", "check_device", "duration", "estimate_text", "parameter_count", "plan_memory", "resolve_device",
    "resolve_dtype",
]
