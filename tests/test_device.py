"""The ``device`` setting (tools/device.py): how ``auto`` resolves, the usage error for a device
that is not there, and that each torch model's parameters end up on the resolved device in the
resolved dtype. Runs on this CPU-only machine with faked device lists; the ``gpu``-marked cases
run the same checks on a real CUDA GPU (``bench/gpu_check.sh``) and skip elsewhere, saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tools.device as device
from tools.common import ToolError
from tools.device import DeviceError, check_spec, resolve, torch_dtype

REPO = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="this machine has no CUDA GPU (bench/gpu_check.sh runs these)")


@pytest.fixture
def fake_devices(monkeypatch):
    """Pretend the machine has these torch devices (and forget what was resolved before)."""

    def use(*names: str) -> None:
        monkeypatch.setattr(device, "available", lambda: [*names, "cpu"])

    return use


def test_auto_is_the_cpu_here_and_every_spec_is_checked():
    if not HAS_CUDA:
        assert resolve("auto") == "cpu"
    assert resolve("cpu") == "cpu"
    assert check_spec(" CUDA:1 ") == "cuda:1"
    assert check_spec(None) == check_spec("") == "auto"
    for bad in ("gpu", "cuda:x", "tpu", "cuda0"):
        with pytest.raises(DeviceError, match="use auto, cpu, cuda, cuda:N or mps"):
            check_spec(bad)


def test_auto_prefers_cuda_then_mps_then_cpu(fake_devices):
    fake_devices("cuda:0", "cuda:1", "mps")
    assert resolve("auto") == "cuda" and resolve("cuda:1") == "cuda:1"
    fake_devices("mps")
    assert resolve("auto") == "mps"
    fake_devices()
    assert resolve("auto") == "cpu"


def test_an_absent_device_is_an_error_that_names_what_is_there(fake_devices):
    fake_devices("cuda:0")
    with pytest.raises(DeviceError, match=r"device 'cuda:3' is not available: torch sees 1 CUDA GPU \(cuda:0\)$"):
        resolve("cuda:3")
    fake_devices()
    with pytest.raises(DeviceError, match="'mps' is not available"):
        resolve("mps")


def test_dtype_auto_is_half_on_a_gpu_and_float32_on_the_cpu():
    assert torch_dtype("cpu") == torch.float32
    assert torch_dtype("cuda") == torch.float16 and torch_dtype("cuda:1") == torch.float16
    assert torch_dtype("cpu", "bfloat16") == torch.bfloat16
    assert torch_dtype("cuda", "bf16") == torch.bfloat16 and torch_dtype("cpu", "half") == torch.float16
    with pytest.raises(DeviceError, match="unknown dtype 'int3'"):
        torch_dtype("cpu", "int3")


def test_settings_reject_a_malformed_device_and_report_an_absent_one(fake_devices):
    from pydantic import ValidationError

    from agent.settings import Settings

    with pytest.raises(ValidationError, match="unknown device 'gpu'"):
        Settings(device="gpu")
    fake_devices()
    assert Settings(device="cuda").device_problem().startswith("device 'cuda' is not available: torch ")
    assert Settings().device_problem() is None and Settings(device="cpu").device_problem() is None


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without CUDA")
def test_asking_for_an_absent_gpu_is_a_one_line_usage_error():
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "ask", "--device", "cuda", "Who wrote Hamlet?"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "askdraw: error: invalid setting device (--device / ASKDRAW_DEVICE): device 'cuda' is not available: torch "), proc.stderr
    assert lines[0].endswith("sees no CUDA GPU (this torch is a CPU-only build); use --device cpu or auto")
    assert "Traceback" not in proc.stderr


def _params(module) -> set[tuple[str, torch.dtype]]:
    return {(p.device.type, p.dtype) for p in module.parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("spec,dtype,expected", [("auto", "auto", torch.float32), ("cpu", "bfloat16", torch.bfloat16)])
def test_the_transformers_llm_loads_on_the_resolved_device_and_dtype(fake_devices, spec, dtype, expected):
    from tools.llm import STARTER_LLM, LocalLLM

    fake_devices()  # no GPU: auto is the CPU
    llm = LocalLLM(STARTER_LLM, max_new_tokens=4, device_spec=spec, dtype_spec=dtype)
    llm.load()
    assert _params(llm._model) == {("cpu", expected)}
    assert (llm.device, llm.dtype) == ("cpu", str(expected).removeprefix("torch."))
    assert isinstance(llm.invoke([{"role": "user", "content": "Say hi."}]).content, str)


@pytest.mark.slow
def test_the_transformers_embedder_follows_the_device(fake_devices):
    from tools.embeddings import Embedder

    fake_devices()
    emb = Embedder(runtime="transformers", device="auto").load()
    assert _params(emb._encoder) == {("cpu", torch.float32)} and emb.device == "cpu"


def test_an_llm_that_does_not_fit_is_a_clear_error(monkeypatch, fake_devices):
    import transformers

    from tools.llm import LocalLLM

    class Huge:
        def to(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    fake_devices("cuda:0")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: object())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Huge())
    monkeypatch.setattr("tools.llm.resolve_model", lambda spec, cache=None: "/nowhere")
    with pytest.raises(ToolError, match=r"does not fit in cuda's memory as float16: try a smaller model"):
        LocalLLM("some/model", device_spec="auto").load()


def test_llama_cpp_says_when_its_build_cannot_use_a_gpu(monkeypatch):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed: `make llama`")
    import llama_cpp

    from tools.llm_llamacpp import gpu_layers

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: False)
    assert gpu_layers("cpu") == (0, "cpu", "")
    assert gpu_layers("auto") == (0, "cpu", "")
    layers, where, note = gpu_layers("cuda")
    assert (layers, where) == (0, "cpu") and "no GPU offload" in note
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert gpu_layers("auto") == (-1, "gpu", "") and gpu_layers("cpu") == (0, "cpu", "")


# -- on a real GPU (bench/gpu_check.sh) ----------------------------------------------------------
@pytest.mark.gpu
@needs_cuda
def test_gpu_llm_runs_in_float16_on_cuda():
    from tools.llm import STARTER_LLM, LocalLLM

    llm = LocalLLM(STARTER_LLM, max_new_tokens=8, device_spec="cuda")
    llm.load()
    assert _params(llm._model) == {("cuda", torch.float16)}
    reply = llm.invoke([{"role": "user", "content": "What is the capital of France?"}]).content
    assert isinstance(reply, str) and reply.strip()
    scores = llm.score_labels([{"role": "user", "content": "Is fire hot? Reply yes or no."}], ["yes", "no"])
    assert abs(sum(scores.values()) - 1) < 1e-5


@pytest.mark.gpu
@needs_cuda
def test_gpu_embedder_matches_the_cpu_one():
    from tools.embeddings import Embedder

    texts = ["Who wrote Hamlet?", "Show me a cat eating fish"]
    gpu = Embedder(runtime="transformers", device="cuda").load()
    assert _params(gpu._encoder) == {("cuda", torch.float32)}
    cpu = Embedder(runtime="transformers", device="cpu").load()
    assert ((gpu.encode(texts) * cpu.encode(texts)).sum(axis=1) > 0.9999).all()


@pytest.mark.slow
def test_whisper_follows_the_device_on_both_runtimes(fake_devices, monkeypatch):
    from tools.asr import WhisperASR

    fake_devices()
    on_ct2 = WhisperASR("starter:tiny.en", runtime="ctranslate2", device="auto")
    on_ct2.load()
    assert (on_ct2.device, on_ct2.dtype, on_ct2.device_note) == ("cpu", "int8", "")
    on_torch = WhisperASR("starter:tiny.en", runtime="transformers", device="cpu", dtype="bfloat16")
    on_torch.load()
    assert _params(on_torch._engine.model) == {("cpu", torch.bfloat16)}
    assert (on_torch.device, on_torch.dtype) == ("cpu", "bfloat16")
    import ctranslate2

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    from tools.asr import _ct2_device

    assert _ct2_device("mps")[:2] == ("cpu", 0) and "no Apple GPU" in _ct2_device("mps")[2]
    with pytest.raises(ToolError, match="CTranslate2 sees 0 CUDA device"):
        _ct2_device("cuda:1")
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 2)
    assert _ct2_device("auto") == ("cuda", 0, "") and _ct2_device("cuda:1") == ("cuda", 1, "")


@pytest.mark.gpu
@needs_cuda
def test_gpu_whisper_transcribes_on_cuda():
    from tools.asr import WhisperASR

    example = REPO / "examples" / "who_painted_the_mona_lisa.wav"
    for runtime in ("ctranslate2", "transformers"):
        asr = WhisperASR("starter:tiny.en", runtime=runtime, device="cuda")
        asr.load()
        assert asr.device.startswith("cuda") and asr.dtype in ("float16",), (runtime, asr.device, asr.dtype)
        if example.is_file():
            assert "mona lisa" in asr.transcribe(str(example)).lower()
