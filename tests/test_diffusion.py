"""tools/diffusion.py: a real (tiny, random) diffusers pipeline, and the honest no-image card."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import diffusion
from tools.base import ImageResult
from tools.common import ToolError
from tools.card import render_card
from tools.diffusion import ImageGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py; so is tiny_model

SIZE = 64
STEPS = 3


@pytest.fixture(scope="module")
def tiny_gen(tiny_model) -> ImageGenerator:
    gen = ImageGenerator(str(tiny_model), steps=STEPS, width=SIZE, height=SIZE)
    gen.load()
    return gen


def _pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _is_card(path: str | Path) -> bool:
    """A card is mostly one flat background colour (unlike noise or a picture)."""
    px = _pixels(path).reshape(-1, 3)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    return counts.max() / len(px) > 0.6


# -- real pipeline -----------------------------------------------------------------------
def test_tiny_pipeline_generates_png_with_metadata_and_progress(tiny_gen, tiny_model, tmp_path):
    calls: list[tuple[int, int]] = []
    out = tmp_path / "nested" / "dir" / "a.png"
    res = tiny_gen.generate("a red bicycle", out, seed=7, progress=lambda i, n: calls.append((i, n)))

    assert isinstance(res, ImageResult)
    assert res.generated is True and res.notice is None
    assert res.model == str(tiny_model) and res.steps == STEPS and res.seed == 7
    assert (res.width, res.height) == (SIZE, SIZE) and res.ms > 0
    assert Path(res.path) == out and out.is_file()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (SIZE, SIZE)
        meta = im.text
    assert meta["prompt"] == "a red bicycle"
    assert meta["seed"] == "7"
    assert meta["model"] == str(tiny_model)
    assert meta["steps"] == str(STEPS)
    assert meta["askdraw:generated"] == "true"
    assert calls == [(i, STEPS) for i in range(1, STEPS + 1)]


def test_same_seed_same_pixels_different_seed_differs(tiny_gen, tmp_path):
    a = tiny_gen.generate("a lighthouse", tmp_path / "a.png", seed=1)
    b = tiny_gen.generate("a lighthouse", tmp_path / "b.png", seed=1)
    c = tiny_gen.generate("a lighthouse", tmp_path / "c.png", seed=2)
    assert a.generated and b.generated and c.generated
    assert np.array_equal(_pixels(a.path), _pixels(b.path))
    assert not np.array_equal(_pixels(a.path), _pixels(c.path))


def test_load_is_idempotent(tiny_gen):
    pipe = tiny_gen.pipe
    tiny_gen.load()
    assert tiny_gen.pipe is pipe


# -- no model / bad model / failing model --------------------------------------------------
def test_no_model_gives_labelled_card(tmp_path):
    gen = ImageGenerator(None)
    assert gen.name is None
    with pytest.raises(ToolError, match="no image model"):
        gen.load()
    res = gen.generate("a castle at dawn", tmp_path / "x" / "card.png", seed=3)
    assert res.generated is False
    assert "no image model" in res.notice.lower()
    assert "--image-model" in res.notice
    with Image.open(res.path) as im:
        assert im.size == (512, 512)
        assert im.text["askdraw:generated"] == "false"
        assert im.text["prompt"] == "a castle at dawn"
        assert im.text["reason"] == res.notice
    assert _is_card(res.path)


def test_missing_model_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    gen = ImageGenerator(str(missing), width=SIZE, height=SIZE)
    with pytest.raises(ToolError, match="does not exist"):
        gen.load()
    res = gen.generate("a dog", tmp_path / "d.png")
    assert res.generated is False
    assert "does not exist" in res.notice and str(missing) in res.notice
    assert "--image-model" in res.notice
    with Image.open(res.path) as im:
        assert im.text["askdraw:generated"] == "false"


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(ToolError, match="model_index.json"):
        ImageGenerator(str(tmp_path)).load()


def test_uncached_hub_id_fails_fast_without_download(tmp_path):
    gen = ImageGenerator("askdraw-test/definitely-not-cached")
    with pytest.raises(ToolError, match="not in the local Hugging Face cache"):
        gen.load()
    res = gen.generate("a boat", tmp_path / "b.png")
    assert res.generated is False and "hf download" in res.notice


def test_pipeline_error_midway_via_progress_gives_card(tiny_gen, tmp_path):
    def progress(i: int, n: int) -> None:
        if i == 2:
            raise RuntimeError("boom at step 2")

    res = tiny_gen.generate("a storm", tmp_path / "s.png", progress=progress)
    assert res.generated is False
    assert "boom at step 2" in res.notice and "failed while generating" in res.notice
    assert _is_card(res.path)
    # the pipeline still works afterwards
    assert tiny_gen.generate("a storm", tmp_path / "t.png").generated


def test_pipeline_error_in_unet_gives_card(tiny_model, tmp_path, monkeypatch):
    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    gen.load()

    def broken(*args, **kwargs):
        raise ValueError("unet exploded")

    monkeypatch.setattr(gen.pipe.unet, "forward", broken)
    res = gen.generate("a volcano", tmp_path / "v.png")
    assert res.generated is False and "unet exploded" in res.notice
    with Image.open(res.path) as im:
        assert im.text["askdraw:generated"] == "false"


def test_render_card_is_readable_layout_not_noise(tmp_path):
    out = render_card("a very long prompt " * 40, "some reason " * 30, tmp_path / "c.png", size=(320, 240))
    assert out.is_file() and _is_card(out)
    px = _pixels(out)
    assert px.shape == (240, 320, 3)
    assert (px.min(axis=2) < 100).mean() > 0.01  # there is dark text on it


def test_default_steps():
    assert ImageGenerator("stabilityai/sd-turbo").steps == diffusion.FEW_STEP_DEFAULT_STEPS
    assert ImageGenerator("stabilityai/sd-turbo").guidance_scale == 0.0
    assert ImageGenerator("some/sd-model").steps == diffusion.DEFAULT_STEPS
    with pytest.raises(ValueError):
        ImageGenerator(None, width=100)


# -- slow drawing: the estimate after step one, and cancelling between steps ------------------------
def test_estimate_is_said_after_the_first_step(tiny_model, tmp_path):
    """steps x the first step's measured seconds, said once, after step 1 and before step 2."""
    gen = ImageGenerator(str(tiny_model), steps=4, width=SIZE, height=SIZE, estimate_after_s=0.0)
    events: list[tuple] = []
    res = gen.generate("a red bicycle", tmp_path / "a.png", seed=1,
                       progress=lambda i, n: events.append(("step", i, n)), status=lambda t: events.append(("status", t)))
    assert res.generated is True
    said = [e for e in events if e[0] == "status"]
    assert len(said) == 1 and events.index(said[0]) == 1, events  # right after ("step", 1, 4)
    assert events[0] == ("step", 1, 4) and events[2] == ("step", 2, 4)
    assert re.fullmatch(r"about \d+ s: 4 steps x \d+\.\d s", said[0][1]), said


def test_a_fast_model_says_no_estimate_and_a_gpu_sized_one_says_so_first(tiny_model, tmp_path):
    quick = ImageGenerator(str(tiny_model), steps=3, width=SIZE, height=SIZE)  # default: only when > 10 s left
    said: list[str] = []
    assert quick.generate("a boat", tmp_path / "q.png", status=said.append).generated and said == []

    big = ImageGenerator(str(tiny_model), steps=3, width=SIZE, height=SIZE)
    big.load()
    assert 0 < big.parameters < diffusion.GPU_SIZE_PARAMETERS and not big.gpu_sized
    big.parameters = 3_500_000_000  # as SDXL: the size, not the speed, says "GPU"
    events: list[tuple] = []
    big.generate("a boat", tmp_path / "b.png", progress=lambda i, n: events.append(("step", i)),
                 status=lambda t: events.append(("status", t)))
    assert events[0][0] == "status" and "3.5 B parameters" in events[0][1] and "GPU" in events[0][1]
    assert events[1] == ("step", 1) and events[2][0] == "status" and events[2][1].startswith("about ")


def test_cancel_stops_between_steps(tiny_model, tmp_path):
    import threading

    from tools.common import Cancelled, cancellable

    gen = ImageGenerator(str(tiny_model), steps=5, width=SIZE, height=SIZE)
    cancel = threading.Event()
    steps: list[int] = []

    def progress(done: int, total: int) -> None:
        steps.append(done)
        if done == 2:
            cancel.set()  # as Ctrl-C or the web app's Stop would, mid-drawing

    out = tmp_path / "c.png"
    with cancellable(cancel), pytest.raises(Cancelled):
        gen.generate("a castle", out, progress=progress)
    assert steps == [1, 2] and not out.exists()  # no card either: a cancelled turn is not a failed picture
    again = gen.generate("a castle", out, progress=None)  # the pipeline is fine afterwards
    assert again.generated is True


def test_the_image_step_reports_the_estimate_and_is_cancelled_mid_drawing(tiny_model, tmp_path):
    """Through the graph node: the estimate reaches the progress stream and the trace; the turn's
    cancel event stops the drawing between steps and the step records 'cancelled'."""
    import threading

    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
    from langgraph.runtime import Runtime

    from agent.context import Context, Toolbox
    from agent.graph import build_graph
    from agent.settings import Settings
    from agent.trace import read_trace
    from tools.common import Cancelled

    gen = ImageGenerator(str(tiny_model), steps=4, width=SIZE, height=SIZE, estimate_after_s=0.0)
    cancel = threading.Event()
    seen: list[dict] = []

    def on_progress(event: dict) -> None:
        seen.append(event)
        if event.get("type") == "image_step" and event["done"] == 2:
            cancel.set()

    ctx = Context(tools=Toolbox(Settings(out_dir=tmp_path), image=gen), cancel=cancel, on_progress=on_progress)
    state = {"image_prompt": "a castle", "run_id": "r1", "run_dir": str(tmp_path / "r1"), "seed": 0}
    with pytest.raises(Cancelled):
        build_graph().nodes["generate_image"].invoke(state, {"configurable": {CONFIG_KEY_RUNTIME: Runtime(context=ctx)}})
    steps = [e["done"] for e in seen if e.get("type") == "image_step"]
    assert steps == [1, 2]
    estimate = [e["text"] for e in seen if e.get("type") == "status" and e["text"].startswith("drawing: about ")]
    assert len(estimate) == 1
    assert [e["text"] for e in seen if e.get("type") == "image_step"][1].endswith(f"({estimate[0][len('drawing: '):]})")
    (event,) = read_trace(tmp_path / "r1")
    assert event.step == "generate_image" and event.error == "cancelled"
    assert event.data["image_status"] == [estimate[0][len("drawing: "):]]
    assert not (tmp_path / "r1" / "image.png").exists()


@pytest.mark.parametrize("seconds, said", [(4.2, "4 s"), (89, "89 s"), (360, "6 min"), (4800, "1 h 20 min"), (7200, "2 h")])
def test_durations_read_as_a_person_says_them(seconds, said):
    assert diffusion.duration(seconds) == said


def test_estimate_text():
    assert diffusion.estimate_text(30, 12.0) == "about 6 min: 30 steps x 12 s"
    assert diffusion.estimate_text(20, 2.46) == "about 49 s: 20 steps x 2.5 s"


# -- device, dtype and GPU memory -------------------------------------------------------------------
def _components(pipe) -> dict:
    import torch

    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def test_the_pipeline_runs_on_the_resolved_device_and_dtype(tiny_model, tmp_path):
    """device=auto: every component on the device torch picks here (the CPU without a GPU), in its dtype."""
    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    assert gen.device == "auto"
    gen.load()
    device = diffusion.resolve_device("auto")
    dtype = diffusion.resolve_dtype("auto", device)
    parts = _components(gen.pipe)
    assert set(parts) >= {"unet", "vae", "text_encoder"}
    for name, module in parts.items():
        for p in module.parameters():
            assert p.device.type == device.split(":")[0] and p.dtype == dtype, name
    assert gen.placement["device"] == device and gen.placement["dtype"] == str(dtype).removeprefix("torch.")
    assert gen.generate("a kite", tmp_path / "k.png").generated


def test_a_dtype_asked_for_is_used(tiny_model, tmp_path):
    import torch

    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE, device="cpu", dtype="bf16")
    gen.load()
    assert {p.dtype for m in _components(gen.pipe).values() for p in m.parameters()} == {torch.bfloat16}
    assert gen.placement_text == "cpu bfloat16"
    assert gen.generate("a kite", tmp_path / "k.png").generated
    with pytest.raises(ToolError, match="unknown dtype 'float8'"):
        ImageGenerator(str(tiny_model), dtype="float8")


@pytest.fixture
def devices(monkeypatch):
    """Fake what torch sees: ``devices(cuda=2, mps=False)``."""
    import torch

    def see(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return see


def test_auto_is_cuda_then_mps_then_cpu(devices):
    devices(cuda=1, mps=True)
    assert diffusion.resolve_device("auto") == "cuda" and diffusion.resolve_device(None) == "cuda"
    assert diffusion.resolve_device("cuda:0") == "cuda:0" and diffusion.resolve_device("CPU") == "cpu"
    devices(cuda=0, mps=True)
    assert diffusion.resolve_device("auto") == "mps"
    devices(cuda=0, mps=False)
    assert diffusion.resolve_device("auto") == "cpu"
    import torch

    assert diffusion.resolve_dtype("auto", "cuda:1") == torch.float16
    assert diffusion.resolve_dtype("auto", "mps") == torch.float16
    assert diffusion.resolve_dtype("auto", "cpu") == torch.float32
    assert diffusion.resolve_dtype("float32", "cuda") == torch.float32


@pytest.mark.parametrize("cuda, mps, asked, said", [
    (0, False, "cuda", "device 'cuda' is not available: torch .* sees no CUDA GPU"),
    (1, False, "cuda:1", r"device 'cuda:1' is not available: torch sees 1 CUDA GPU \(cuda:0\)$"),
    (2, False, "cuda:2", r"torch sees 2 CUDA GPUs \(cuda:0 to cuda:1\)$"),
    (1, False, "mps", "device 'mps' is not available: torch sees no Apple MPS device"),
])
def test_an_absent_device_is_a_one_line_error(devices, cuda, mps, asked, said):
    devices(cuda=cuda, mps=mps)
    with pytest.raises(ToolError, match=said) as exc:
        diffusion.resolve_device(asked)
    assert "\n" not in str(exc.value)


def test_an_absent_device_gives_the_card_with_the_reason(tiny_model, tmp_path, devices):
    devices(cuda=0)
    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE, device="cuda")
    with pytest.raises(ToolError, match="'cuda' is not available"):
        gen.load()
    res = gen.generate("a kite", tmp_path / "k.png")
    assert res.generated is False and "'cuda' is not available" in res.notice and "--device cpu" in res.notice
    assert _is_card(res.path)


def test_an_unknown_device_is_refused_at_once():
    with pytest.raises(ToolError, match=r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"):
        ImageGenerator("some/model", device="gpu")
    with pytest.raises(ToolError, match="unknown device"):
        diffusion.check_device("cuda:x")


def test_out_of_memory_while_drawing_says_model_device_and_what_to_try(tiny_model, tmp_path, monkeypatch):
    import torch

    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    gen.load()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    freed: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(True))
    monkeypatch.setattr(gen.pipe.unet, "forward", oom)
    # as a pipeline placed on a small card would be (the fake: the tiny one runs on the CPU)
    gen.placement = {"device": "cuda:0", "dtype": "float16", "memory_options": ["model_cpu_offload"],
                     "free_gib": 3.2, "why": ""}
    res = gen.generate("a volcano", tmp_path / "v.png")
    assert res.generated is False and _is_card(res.path)
    notice = res.notice
    assert f"image model '{tiny_model}' ran out of memory on cuda:0 drawing {SIZE}x{SIZE}" in notice
    assert "model cpu offload" in notice and "3.2 GiB free" in notice and "Tried to allocate 2.00 GiB" in notice
    assert "--image-size" in notice and "--device cpu" in notice and "\n" not in notice
    assert freed == [True]


GIB = 1024 ** 3


@pytest.mark.parametrize("free_gib, options", [
    (24, []),                                                            # SD 1.5 in float16 on a big card
    (4.5, ["attention_slicing", "vae_tiling"]),                          # fits, little to spare
    (3.8, ["model_cpu_offload", "attention_slicing", "vae_tiling"]),     # the weights do not fit
    (3.0, ["sequential_cpu_offload", "attention_slicing", "vae_tiling"]),  # not even the UNet does
])
def test_memory_options_follow_the_free_memory(free_gib, options):
    weights, unet = 2.0 * GIB, 1.6 * GIB  # SD 1.5 in float16: UNet 1.6 GiB, text encoder and VAE 0.4 GiB
    chosen, why = diffusion.plan_memory(weights, unet, free_gib * GIB)
    assert chosen == options and f"{free_gib:.1f} GiB free" in why


def test_a_bigger_picture_or_float32_needs_more_working_memory():
    weights, unet = 2.0 * GIB, 1.6 * GIB
    assert diffusion.plan_memory(weights, unet, 10 * GIB)[0] == []
    assert diffusion.plan_memory(weights, unet, 10 * GIB, pixels=1024 * 1024)[0] == ["attention_slicing", "vae_tiling"]
    assert diffusion.plan_memory(weights, unet, 6 * GIB)[0] == []
    assert diffusion.plan_memory(weights, unet, 6 * GIB, dtype_bytes=4)[0] == ["attention_slicing", "vae_tiling"]


class _FakePipe:
    """Records the placement calls a diffusers pipeline gets (the real ones need a CUDA card)."""

    def __init__(self) -> None:
        import torch

        self.calls: list[tuple] = []
        self.vae = self
        self.components = {"unet": torch.nn.Linear(2, 2), "vae": torch.nn.Linear(2, 2), "tokenizer": object()}

    def to(self, device):
        self.calls.append(("to", str(device)))
        return self

    def enable_model_cpu_offload(self, device=None):
        self.calls.append(("model_cpu_offload", str(device)))

    def enable_sequential_cpu_offload(self, device=None):
        self.calls.append(("sequential_cpu_offload", str(device)))

    def enable_attention_slicing(self):
        self.calls.append(("attention_slicing",))

    def enable_tiling(self):
        self.calls.append(("vae_tiling",))


@pytest.mark.parametrize("free_gib, calls, text", [
    (24, [("to", "cuda:1")], "cuda:1 float16 (weights 2.0 GiB and working memory fit in 24.0 GiB free)"),
    (3.8, [("model_cpu_offload", "cuda:1"), ("attention_slicing",), ("vae_tiling",)],
     "cuda:1 float16, model CPU offload, attention slicing, VAE tiling (weights 2.0 GiB and working memory "
     "exceed 3.8 GiB free)"),
])
def test_placement_on_cuda_applies_the_plan_and_records_it(free_gib, calls, text, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gib * GIB), 24 * GIB))
    monkeypatch.setattr(diffusion, "component_bytes", lambda pipe: [int(1.6 * GIB), int(0.4 * GIB)])
    gen = ImageGenerator("some/model")
    pipe = _FakePipe()
    gen.placement = gen._place(pipe, "cuda:1", torch.float16)
    assert pipe.calls == calls
    assert gen.placement["free_gib"] == free_gib and gen.placement["total_gib"] == 24
    assert gen.placement_text == text


def test_a_gpu_sized_pipeline_on_a_gpu_is_not_announced_as_slow(tiny_model):
    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    gen.load()
    gen.parameters = 3_500_000_000
    assert gen.gpu_sized and gen.slow_here
    gen.placement = dict(gen.placement, device="cuda")
    assert gen.gpu_sized and not gen.slow_here


def test_component_bytes_counts_each_torch_module(tiny_gen):
    sizes = diffusion.component_bytes(tiny_gen.pipe)
    assert len(sizes) == 3 and sum(sizes) == 4 * tiny_gen.parameters  # float32
