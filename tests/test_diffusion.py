"""tools/diffusion.py: a real (tiny, random) diffusers pipeline, and the honest no-image card."""

from __future__ import annotations

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
