"""On a CUDA GPU: the diffusion pipeline on the card in float16, its memory options when the card is
small, and the size benchmark. Marked ``gpu``: ``pytest -m gpu`` (bench/gpu_check.sh) runs them; without
a CUDA GPU they skip, saying so (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tools import diffusion
from tools.diffusion import ImageGenerator

pytestmark = pytest.mark.gpu

SIZE = 64
GIB = 1024 ** 3


def test_auto_is_cuda_and_an_absent_index_is_refused():
    import torch

    assert diffusion.resolve_device("auto") == "cuda"
    assert diffusion.resolve_device("cuda:0") == "cuda:0"
    count = torch.cuda.device_count()
    with pytest.raises(diffusion.ToolError, match=f"'cuda:{count}' is not available"):
        diffusion.resolve_device(f"cuda:{count}")


def test_the_pipeline_draws_on_the_card_in_float16(tiny_model, tmp_path):
    import torch

    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    gen.load()
    for name in ("unet", "vae", "text_encoder"):
        p = next(getattr(gen.pipe, name).parameters())
        assert p.device.type == "cuda" and p.dtype == torch.float16, name
    assert gen.placement["device"] == "cuda" and gen.placement["memory_options"] == []
    assert gen.placement["free_gib"] > 0
    res = gen.generate("a kite", tmp_path / "k.png", seed=3)
    assert res.generated is True and (res.width, res.height) == (SIZE, SIZE)
    again = gen.generate("a kite", tmp_path / "k2.png", seed=3)
    from PIL import Image
    import numpy as np

    with Image.open(res.path) as a, Image.open(again.path) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the CPU generator: reproducible on the card too


@pytest.mark.parametrize("free_gib, first", [(5.2, "model_cpu_offload"), (2.5, "sequential_cpu_offload")])
def test_a_small_card_offloads_and_still_draws(tiny_model, tmp_path, monkeypatch, free_gib, first):
    """The free memory is faked small (and the components big) so the real offload paths run."""
    import torch

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * GIB), 8 * GIB))
    monkeypatch.setattr(diffusion, "component_bytes", lambda pipe: [3 * GIB, GIB // 2, GIB // 4])
    gen = ImageGenerator(str(tiny_model), steps=2, width=SIZE, height=SIZE)
    gen.load()
    assert gen.placement["memory_options"][0] == first
    assert "offload" in gen.placement_text
    assert gen.generate("a kite", tmp_path / "k.png").generated is True


def test_the_size_bench_runs_on_cuda(tmp_path, capsys):
    script = Path(__file__).resolve().parents[1] / "bench" / "bench_sizes.py"
    spec = importlib.util.spec_from_file_location("bench_sizes_gpu", script)
    bs = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bs
    spec.loader.exec_module(bs)
    assert bs.main(["--tiny", "--device", "cuda", "--repeats", "1", "--json", "--results-dir", str(tmp_path),
                    "--only", "qwen2.5-0.5b", "whisper-small", "sd-turbo"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["device"] == "cuda" and s["dtype"] == "float16" and s["machine"]["gpu"]
    for m in s["models"]:
        assert m["status"] == "ok" and m["peak_mem_kind"] == "torch.cuda.max_memory_allocated" and m["peak_mem_mb"] > 0
