"""bench/bench_sizes.py on tiny configs of the same model classes: the JSON's shape, the fixed token
counts, the results file, and that a model over --max-seconds or over the memory is skipped with the
reason recorded. A few seconds: the models are toys, one timed run each."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_sizes.py"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def bs():
    spec = importlib.util.spec_from_file_location("bench_sizes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(bs, capsys, tmp_path, *args: str) -> dict:
    """The bench's JSON summary (stdout, and the file it wrote); its stderr under ``"_stderr"``."""
    assert bs.main(["--tiny", "--device", "cpu", "--repeats", "1", "--json", "--results-dir", str(tmp_path), *args]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    only = args[args.index("--only") + 1:] if "--only" in args else []
    only = only[:next((i for i, a in enumerate(only) if a.startswith("--")), len(only))]
    saved = tmp_path / ("sizes_cpu_tiny" + "".join(f"_{n}" for n in only) + ".json")
    assert json.loads(saved.read_text()) == summary
    assert bs.main(["--markdown", str(saved)]) == 0  # the table of a saved run
    table = capsys.readouterr().out
    assert table.count("\n| ") == len(summary["models"]) + 1 and "load average" in table
    return summary | {"_stderr": err}


def test_every_kind_reports_its_timings_and_peak_memory(bs, capsys, tmp_path):
    s = _run(bs, capsys, tmp_path, "--only", "qwen2.5-0.5b", "whisper-small", "sd-turbo")
    assert s["device"] == "cpu" and s["dtype"] == "float32" and s["tiny"] is True and s["repeats"] == 1
    assert s["machine"]["threads"] >= 1 and s["load_average_before"] is not None
    llm, asr, image = s["models"]
    assert [m["name"] for m in s["models"]] == ["qwen2.5-0.5b", "whisper-small", "sd-turbo"]
    for m in s["models"]:
        assert m["status"] == "ok" and m["parameters"] > 0 and m["peak_mem_mb"] > 0
        assert m["estimate_s"] >= 0 and m["build_s"] >= 0
        assert m["peak_mem_kind"].startswith("peak RSS")

    assert llm["kind"] == "llm" and llm["new_tokens"] == bs.LLM_NEW_TOKENS  # no early stop
    assert 0 < llm["first_token_s"] < llm["wall_s"] and llm["decode_tok_s"] > 0 and llm["overall_tok_s"] > 0

    assert asr["kind"] == "asr" and asr["new_tokens"] == bs.ASR_NEW_TOKENS and asr["audio_s"] == 30.0
    assert asr["encoder_s"] > 0 and asr["decode_s"] > 0
    assert asr["rtf"] == pytest.approx(asr["total_s"] / 30.0, rel=0.01)

    assert image["kind"] == "image" and set(image["per_steps"]) == {"1", "4"}
    assert image["per_steps"]["4"]["image_s"] > image["unet_step_s"] > 0
    assert image["unet_calls_per_step"] == 1 and image["unet_batch"] == 1  # sd-turbo: no guidance
    assert image["vae_decode_s"] > 0 and image["text_encoder_s"] > 0


def test_guidance_doubles_the_unet_batch_not_the_calls(bs, capsys, tmp_path):
    (sd15,) = _run(bs, capsys, tmp_path, "--only", "sd-1.5")["models"]
    assert sd15["status"] == "ok" and sd15["guidance_scale"] == 7.5
    assert sd15["unet_calls_per_step"] == 1 and sd15["unet_batch"] == 2


def test_a_model_over_max_seconds_is_skipped_with_the_reason(bs, capsys, tmp_path):
    s = _run(bs, capsys, tmp_path, "--only", "qwen2.5-0.5b", "whisper-small", "--max-seconds", "0")
    for m in s["models"]:
        assert m["status"] == "skipped" and "--max-seconds 0" in m["reason"] and m["estimate_s"] > 0
        assert "first_token_s" not in m and "encoder_s" not in m
    assert s["_stderr"].count("--max-seconds 0") == 2  # said on stderr as it happens


def test_a_model_over_the_available_memory_is_skipped_before_building(bs, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bs, "available_bytes", lambda device: 1024)
    (m,) = _run(bs, capsys, tmp_path, "--only", "sd-turbo")["models"]
    assert m["status"] == "skipped" and "GiB available on cpu" in m["reason"] and "build_s" not in m


def test_real_configs_have_the_published_sizes(bs):
    """Built on the meta device only (no memory): the parameter counts of the published models."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperForConditionalGeneration

    def count(model_cls, config_cls, cfg) -> float:
        return bs.parameter_count(bs.on_meta(lambda: model_cls(config_cls(**cfg)))) / 1e9

    assert count(Qwen2ForCausalLM, Qwen2Config, bs.QWEN25_05B) == pytest.approx(0.494, abs=0.002)  # "0.49B"
    assert count(Qwen2ForCausalLM, Qwen2Config, bs.QWEN25_15B) == pytest.approx(1.54, abs=0.01)  # "1.54B"
    assert count(WhisperForConditionalGeneration, WhisperConfig, bs.WHISPER_SMALL) == pytest.approx(0.242, abs=0.002)
    assert count(WhisperForConditionalGeneration, WhisperConfig, bs.WHISPER_TURBO) == pytest.approx(0.809, abs=0.002)


def test_unknown_model_name_is_a_usage_error(bs, capsys):
    with pytest.raises(SystemExit) as exc:
        bs.main(["--tiny", "--only", "gpt-5"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
