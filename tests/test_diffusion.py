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
