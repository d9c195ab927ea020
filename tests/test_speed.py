"""The speed work of issue 5: early stops that must not change results, the direct answer's
length limits, the prompt-prefix KV cache (real model: same scores and replies with and without
it), in-thread streaming, and the pure parts of bench/bench_latency.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tools.answer import AnswerWriter, _answer_sentence, answer_sentence_done, drop_partial, too_many_sentences
from tools.image_prompt import PromptRewriter
from tools.text import loops

try:
    from tests.fakes import ScriptedLLM
except ImportError:  # tests/ on sys.path itself
    from fakes import ScriptedLLM

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_latency_under_test", BENCH / "bench_latency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- early stops give the same result as generating to the end ---------------------------------
def _prefixes(text: str):
    return (text[:i] for i in range(1, len(text) + 1))


@pytest.mark.parametrize("reply", [
    "A cat eating a fish, cartoon illustration. Then more words follow here",
    "A red bicycle, a tree\nSecond line that is not used",
    "A cat eating a fish, I love it, I will bring it home to my house today",
    "a mermaid, a sea creature, a mermaid, a sea creature, a mermaid, a sea creature, more",
    "Prompt: Two dogs playing in the snow, golden fur, hats, sparkling eyes",
])
def test_rewrite_stops_only_where_the_prompt_is_already_fixed(reply):
    source = "a cat eating fish"
    full = PromptRewriter(ScriptedLLM(replies=[reply])).rewrite(source)
    cut = PromptRewriter(ScriptedLLM(replies=[reply]))
    stopped_at = next((p for p in _prefixes(reply) if cut.settled(p, source)), reply)
    again = PromptRewriter(ScriptedLLM(replies=[stopped_at])).rewrite(source)
    assert (again.prompt, again.rewritten) == (full.prompt, full.rewritten)


def test_rewrite_settles_early_on_a_chatty_or_looping_reply():
    rw = PromptRewriter(ScriptedLLM())
    assert rw.settled("A cat eating a fish, I love", "a cat eating fish")  # 'I' is a whole word already
    assert not rw.settled("A cat eating a fish, I", "a cat eating fish")    # 'I' may become 'In'
    assert rw.settled("big fun, big fun, big fun, big fun, big", "x")
    assert not rw.settled("big fun, big fun, big fun, big", "x")  # only two of each run so far
    assert rw.settled("A cat. Then", "x") and rw.settled("A cat\n", "x")
    assert not rw.settled("A cat eating a fish, soft light", "a cat eating fish")


@pytest.mark.parametrize("reply", [
    "Who painted the Mona Lisa? Leonardo da Vinci painted it. It hangs in Paris.",
    "The answer is: William Shakespeare. He wrote it around 1600.",
    "Leonardo da Vinci painted it.",
    "Who painted the Mona Lisa? It is a painting?",
])
def test_grounded_answer_stop_keeps_the_sentence_that_is_used(reply):
    question = "Who painted the Mona Lisa?"
    stopped_at = next((p for p in _prefixes(reply) if answer_sentence_done(p, question)), reply)
    assert _answer_sentence(stopped_at, question) == _answer_sentence(reply, question)
    if _answer_sentence(reply, question) and reply.count(".") > 1:
        assert len(stopped_at) < len(reply)  # it did stop early


def test_direct_answer_is_cut_after_three_sentences_and_at_a_loop():
    prose = "One. Two is here. Three is here. Four is more. Five."
    llm = ScriptedLLM(replies=[prose])
    a = AnswerWriter(llm).direct("Tell me something")
    assert a.text == "One. Two is here. Three is here." and "3 sentences" in a.how
    listed = "Ideas:\n- Chicken with a lemon sauce\n- Fish with a lemon sauce\n- Pork with a lemon sauce\n- Beef"
    a = AnswerWriter(ScriptedLLM(replies=[listed])).direct("Give me dinner ideas")
    assert a.text == "Ideas:\n- Chicken with a lemon sauce\n- Fish with a lemon sauce"
    assert "repeating" in a.how
    short = "Paris is the capital of France."
    a = AnswerWriter(ScriptedLLM(replies=[short])).direct("What is the capital of France?")
    assert a.text == short and a.how == ""


def test_sentence_and_loop_helpers():
    # ("A. B. C. D" would be initials to the project's splitter, not four sentences)
    assert too_many_sentences("Go left. Turn right. Stop here. Then wait")
    assert not too_many_sentences("Go left. Turn right. Stop here.")
    assert not too_many_sentences("Tips:\n1. Go left. 2. Turn right. 3. Stop here. 4. Wait")  # lists are not cut by sentences
    assert drop_partial("line one\nline two\nline thr") == "line one\nline two"
    assert drop_partial("First one. Second one. Thi") == "First one. Second one."
    assert drop_partial("only one sentence") == "only one sentence"
    assert loops("with a lemon, with a lemon, with a lemon") and not loops("with a lemon and a lime")


# -- the benchmark's pure parts ----------------------------------------------------------------
def test_percentiles_and_targets():
    b = _bench()
    assert b.pct([], 50) is None
    assert b.pct([3.0, 1.0, 2.0], 50) == 2.0
    assert b.pct([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert b.pct([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert b.meets("ratio_vs_baseline", 3.2) and not b.meets("ratio_vs_baseline", 2.9)
    assert b.meets("cold_start_s", 15.0) and not b.meets("cold_start_s", 15.1)
    assert b.meets("warm_text_p50_s", None) is None


def test_summary_from_synthetic_runs():
    b = _bench()
    t0 = 1000.0

    def turn(start, spoken, route, decided, token, text, end, loads=None):
        return {"request": "q", "spoken": spoken, "start": t0 + start, "decided": t0 + decided,
                **({"first_token": t0 + token} if token is not None else {}), "text_done": t0 + text,
                "end": t0 + end, "route": route, "steps_ms": {"decide": 100.0, "answer": 500.0},
                "loads_ms": loads or {}}

    ask = {"spawn": t0 - 4.0, "imported": t0 - 3.0, "finished": t0 + 10.0, "exited": t0 + 10.5, "wall_s": 14.5,
           "peak_rss_mb": 1536.0, "loaded": {"llm": True},
           "turns": [turn(0, False, "search", 2.0, 2.5, 3.0, 3.1, {"load_llm_ms": 900.0}),
                     turn(4, False, "answer", 4.1, 4.3, 5.0, 5.1),
                     turn(6, True, "search", 6.5, 6.8, 7.0, 7.2),
                     turn(8, False, "draw", 8.1, None, 9.0, 9.1)]}
    base = [{"wall_s": 10.0, "peak_rss_mb": 900.0, "seconds": {}} for _ in range(4)]
    s = b.summarise(ask, base)
    assert s["cold_start_s"] == pytest.approx(7.1)          # spawn -> end of the first turn
    assert s["warm_text_p50_s"] == pytest.approx(1.0)       # typed warm turns only: 1.0 and 1.0
    assert s["first_token_p50_s"] == pytest.approx(0.25)    # 0.2 and 0.3 after the decision
    assert s["ratio_vs_baseline"] == pytest.approx(40 / 14.5, rel=1e-3)
    assert s["peak_rss_gb"] == 1.5 and s["process_exit_s"] == 0.5
    assert s["targets"]["ratio_vs_baseline"]["met"] is False
    assert s["steps"]["decide"]["n"] == 3                   # the cold turn is left out
    assert s["warm_search_answer_p50_s"] is None            # the only search turns were cold or spoken
    ask["search_probe"] = [{"request": "p", "route": "search", "answer_s": x} for x in (1.2, 0.8, 2.0)]
    ask["search_probe"].append({"request": "q", "route": "answer", "answer_s": 9.0})  # misrouted: not search
    s = b.summarise(ask, base)
    assert s["warm_search_answer_p50_s"] == pytest.approx(1.2)
    assert s["targets"]["warm_search_answer_p50_s"]["met"] is True


# -- the real starter model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def llms():
    from tools.llm import LocalLLM

    plain = LocalLLM(prefix_cache=False)
    plain.load()
    cached = LocalLLM()
    cached._model, cached._tokenizer = plain._model, plain._tokenizer  # the same weights
    return plain, cached


@pytest.mark.slow
def test_prefix_cache_gives_the_same_scores_and_replies(llms):
    from agent.router import Router

    plain, cached = llms
    for request in ("Who wrote Hamlet?", "Show me a cat eating fish", "What is 17 times 23?"):
        a = Router(plain, calibrate=False)._scores(request)
        b = Router(cached, calibrate=False)._scores(request)
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a), (a, b)
    assert len(cached._prefixes) == 1  # the route prompt's prefix, computed once, reused
    (key, cache), = cached._prefixes.items()
    assert cache.get_seq_length() == len(key)  # rewound to the prefix after every call
    for source in ("cat eating fish", "a red bicycle leaning against a tree"):
        assert PromptRewriter(plain).rewrite(source).prompt == PromptRewriter(cached).rewrite(source).prompt


@pytest.mark.slow
def test_streamed_pieces_make_the_reply(llms):
    _, llm = llms
    pieces: list[str] = []
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = llm.chat(messages, max_new_tokens=24, on_token=pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == reply
    assert reply == llm.chat(messages, max_new_tokens=24)


@pytest.mark.slow
def test_a_failing_token_callback_stops_generation_and_keeps_the_cache_usable(llms):
    _, llm = llms
    messages = [{"role": "system", "content": "You answer in one word." * 4},
                {"role": "user", "content": "Name a colour."}]
    first = llm.chat(messages, max_new_tokens=8)

    def boom(piece: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llm.chat(messages, max_new_tokens=8, on_token=boom)
    assert llm.chat(messages, max_new_tokens=8) == first


# -- the benchmark and the baseline, end to end (no timing asserted: numbers belong in bench/) ---
def _model_dirs():
    from tools.asr import STARTER_ASR, WhisperASR
    from tools.llm import STARTER_LLM, resolve_model

    return str(resolve_model(STARTER_LLM)), str(WhisperASR(STARTER_ASR)._resolve())


@pytest.mark.slow
def test_baseline_pipeline_answers_a_spoken_question_in_its_own_process(tmp_path):
    import json
    import subprocess

    llm_dir, asr_dir = _model_dirs()
    wav = Path(__file__).resolve().parents[1] / "examples" / "who_painted_the_mona_lisa.wav"
    proc = subprocess.run([sys.executable, str(BENCH / "baseline_pipeline.py"), "--llm", llm_dir, "--asr", asr_dir,
                           "--audio", str(wav), "--max-new-tokens", "16"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "mona lisa" in out["transcript"].lower() and out["answer"]
    assert out["image_path"] is None  # no image model given: the baseline draws nothing
    assert {"import", "load_asr", "asr", "load_llm", "answer"} <= set(out["seconds"]) and out["peak_rss_mb"] > 100


@pytest.mark.slow
def test_bench_quick_prints_one_json_object_with_the_headline(tmp_path):
    import json
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("the benchmark's spoken requests need espeak-ng (apt-get install espeak-ng)")
    proc = subprocess.run([sys.executable, str(BENCH / "bench_latency.py"), "--quick", "--json", "--no-baseline",
                           "--llm-runtime", "auto", "--no-engine", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = proc.stdout.strip().splitlines()  # only one JSON object on stdout
    head = json.loads(line)
    assert {"ratio_vs_baseline", "cold_start_s", "warm_text_p50_s", "first_token_p50_s", "peak_rss_gb"} <= set(head)
    assert head["requests"] == 5 and head["ratio_vs_baseline"] is None  # --no-baseline
    assert head["cold_start_s"] > 0 and head["peak_rss_gb"] > 0.1
    full = json.loads((tmp_path / "latency_quick_auto.json").read_text())
    assert not full["errors"] and len(full["turns"]) == 5
    assert {t["route"] for t in full["turns"]} >= {"search", "draw"}
    assert full["models_loaded_at_end"]["llm"] and full["models_loaded_at_end"]["asr"]
    # the warm search probe ran after the timed requests and gives the search route's own p50
    assert len(full["search_probe"]) == 3 and all(p["answer_s"] > 0 for p in full["search_probe"])
    assert head["warm_search_answer_p50_s"] is not None
