"""The sentence-embedding model on its two runtimes: llama.cpp (a GGUF copy of the safetensors,
written with the ``gguf`` package) and transformers. Both must give the same unit vectors, since
the route classifier was trained on, and the Wikipedia vector cache holds, vectors of one kind.

The llama.cpp cases skip, saying why, where llama-cpp-python is missing; ``make test`` installs
it, and CI allows no such skip (tests/conftest.py ALLOWED_SKIPS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools.common import ToolError
from tools.embeddings import Embedder, bert_gguf, gguf_problem, resolve_model_path
from tools.llm_llamacpp import binding_problem

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TEXTS = [
    "Who wrote Hamlet?",
    "how far away is the moon from earth",
    "Show me a cat eating fish",
    "Café naïve résumé — “quotes”, 12,000 km² and 3.14",
    "",
    "   ",
    "Hamlet: The Tragedy of Hamlet, Prince of Denmark, often shortened to Hamlet, is a tragedy written by "
    "William Shakespeare sometime between 1599 and 1601.",
    "lighthouse " * 300,  # longer than the model's 256 tokens: cut the same way on both runtimes
    "日本の首都は東京です。",
]


def _need_llama() -> None:
    if binding_problem():
        pytest.skip(binding_problem())


@pytest.fixture(scope="module")
def both() -> tuple[Embedder, Embedder]:
    _need_llama()
    return Embedder(runtime="llama.cpp").load(), Embedder(runtime="transformers").load()


def test_both_runtimes_give_the_same_unit_vectors(both):
    llama, hf = both
    assert (llama.runtime, hf.runtime) == ("llama.cpp", "transformers")
    a, b = llama.encode(TEXTS), hf.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.9999, dict(zip(TEXTS, cos.round(6)))
    # one text at a time (one sequence per llama.cpp batch) gives what a batch gives
    single = np.stack([llama.encode([t])[0] for t in TEXTS])
    assert np.abs(single - a).max() < 1e-4
    assert llama.encode([]).shape == (0, 384)


def test_llama_cpp_tokenises_and_cuts_like_transformers(both):
    llama, hf = both
    assert llama.max_length == hf.max_length == 256
    for text in TEXTS:
        ids = hf._tokenizer(text or " ", truncation=True, max_length=hf.max_length)["input_ids"]
        assert llama._token_ids(text or " ") == ids, text[:40]


def test_auto_prefers_llama_cpp_and_the_setting_can_choose(monkeypatch):
    _need_llama()
    auto = Embedder().load()
    assert auto.runtime == "llama.cpp" and auto.runtime_note == ""
    with pytest.raises(ToolError, match="unknown embeddings runtime 'onnx'"):
        Embedder(runtime="onnx")
    import tools.wikipedia.offline as offline
    from agent.context import Toolbox
    from agent.settings import Settings

    monkeypatch.setattr(offline, "_DEFAULT_EMBEDDER", None)
    monkeypatch.setenv("ASKDRAW_EMBEDDINGS_RUNTIME", "transformers")
    Toolbox(Settings()).router  # building the router hands the settings to the shared embedder
    shared = offline.default_embedder()
    assert shared.runtime_option == "transformers" and shared.load().runtime == "transformers"


def test_without_the_binding_auto_falls_back_and_says_why(monkeypatch):
    import tools.embeddings as emb

    monkeypatch.setattr(emb, "_binding_problem", lambda: "the llama.cpp binding is not installed (test)")
    fallback = Embedder(runtime="auto").load()
    assert fallback.runtime == "transformers" and "not installed" in fallback.runtime_note
    with pytest.raises(ToolError, match="cannot run embedding model 'starter:minilm' on llama.cpp: .*not installed"):
        Embedder(runtime="llama.cpp").load()


def _copy_model(tmp_path: Path) -> Path:
    folder = tmp_path / "minilm"
    shutil.copytree(resolve_model_path("starter:minilm"), folder)
    return folder


def test_models_llama_cpp_does_not_cover_stay_on_transformers(tmp_path):
    folder = _copy_model(tmp_path)
    assert gguf_problem(folder) is None
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": False}))
    assert "cased" in gguf_problem(folder)
    cased = Embedder(str(folder)).load()
    assert cased.runtime == "transformers" and "cased" in cased.runtime_note
    with pytest.raises(ToolError, match="cased"):
        bert_gguf(folder, cache=tmp_path)
    (folder / "model.safetensors").rename(folder / "weights.bak")
    assert "model.safetensors" in gguf_problem(folder)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    assert "xlm-roberta" in gguf_problem(other)


def test_the_gguf_file_is_written_once_and_a_damaged_one_is_rewritten(tmp_path, monkeypatch):
    _need_llama()
    folder = _copy_model(tmp_path)
    monkeypatch.setenv("ASKDRAW_HOME", str(tmp_path / "home"))  # cache_dir() follows it
    first = bert_gguf(folder)
    assert first.is_file() and first.parent.parent == tmp_path / "home"
    stamp = first.stat().st_mtime_ns
    assert bert_gguf(folder) == first and first.stat().st_mtime_ns == stamp  # reused, not rewritten
    first.write_bytes(b"GGUF broken")
    good = Embedder(str(folder), runtime="llama.cpp").load()
    assert good.encode(["Who wrote Hamlet?"]).shape == (1, 384)
    assert first.stat().st_size > 1_000_000  # converted again
    # new weights: a new file (the key follows the weights file)
    os.utime(folder / "model.safetensors", ns=(stamp, stamp + 10**9))
    assert bert_gguf(folder) != first


def test_a_typed_question_is_answered_without_importing_torch(tmp_path):
    """The whole text route (decision, search, short answer) in a fresh process: neither torch nor
    transformers is imported, which is what keeps the cold start under 4 s; the trace says where
    the embeddings ran."""
    _need_llama()
    script = (
        "import sys, json\n"
        "from agent import Agent, Settings\n"
        f"agent = Agent(Settings(out_dir={str(tmp_path / 'runs')!r}))\n"
        "r = agent.ask(text='Who wrote Hamlet?')\n"
        "from agent.trace import read_trace\n"
        "from pathlib import Path\n"
        "data = [e.data for e in read_trace(Path(r.trace_path).parent) if e.step == 'decide'][0]\n"
        "print(json.dumps({'route': r.route, 'answer': r.answer, 'torch': 'torch' in sys.modules,\n"
        "                  'transformers': 'transformers' in sys.modules,\n"
        "                  'embeddings_runtime': data.get('embeddings_runtime'),\n"
        "                  'llm_runtime': data.get('llm_runtime')}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["route"] == "search" and "Shakespeare" in out["answer"]
    assert (out["embeddings_runtime"], out["llm_runtime"]) == ("llama.cpp", "llama.cpp")
    assert not out["torch"] and not out["transformers"], out
