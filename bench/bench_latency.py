"""Speed and memory of askdraw, side by side with the seed's simple pipeline (bench/baseline_pipeline.py).

    .venv/bin/python bench/bench_latency.py            # 10 requests: askdraw in one process, then the baseline
    .venv/bin/python bench/bench_latency.py --quick    # 5 requests
    .venv/bin/python bench/bench_latency.py --json     # only one JSON object on stdout
    .venv/bin/python bench/bench_latency.py --image-model DIR   # both sides draw with that diffusers model
    .venv/bin/python bench/bench_latency.py --tiny-image        # ... with a tiny random pipeline built here
    .venv/bin/python bench/bench_latency.py --llm-runtime both  # askdraw on transformers and on llama.cpp (default
                                                                # when the llama.cpp binding is installed)

The requests are typed and spoken (spoken ones are spoken by espeak-ng from the request text, or
read from examples/), covering all three routes. askdraw answers them one after another in one fresh
process (one ``Agent``): its total (``askdraw_total_s``) runs from spawning the process to the last
answer, plus the process's exit, so it includes the process start and every model load. The same
process then answers the warm search probe (and ``--profile``'s turn); their time is left out of
the total (``askdraw_process_wall_s`` is the whole process, probe included). The
baseline runs each request in its own process (load, answer, exit), on the same weights. Both run
one after the other, never at once (two torch processes on 2 cores slow each other down).

Measured: per-step latency (p50/p95 over warm turns), time to the first streamed answer token after
the route decision, time to the complete text answer, end to end per turn, cold start (process
start to first complete answer), peak RSS of the askdraw process, and the ratio
baseline / askdraw of total wall time.

LLM runtimes (issue 20, ``--llm-runtime``): ``transformers``, ``llama.cpp`` or ``auto`` run askdraw's
worker once per repeat with ``Settings(llm_runtime=...)``; ``both`` runs it on transformers and then on
llama.cpp (one after the other, never at once), and the baseline once per repeat. The summary keeps
one section per runtime (``runtimes``: every metric above, the ratio vs the baseline of the same
repeat). After all askdraw runs, :mod:`bench.bench_engine` runs in its own process (same GGUF, same
prompt: llama-cpp-python's own chat completion vs askdraw's two runtimes, tokens/s) and its result
is kept under ``engine``. The issue-20 targets are checked on the llama.cpp runtime:

- ``engine_ratio_vs_raw``: askdraw-llama.cpp's decode tokens/s / llama-cpp-python's, >= 0.90;
- ``warm_direct_answer_p50_s``: p50 of the ``answer`` step (the LLM writing the text answer, any
  route) over warm turns, <= 0.8 s; the answer route's warm typed turns' text time
  (``warm_answer_route_text_p50_s``: request to complete text) is reported beside it;
- ``warm_text_p50_s`` (warm typed question to full text, p50) <= 0.3 s; ``first_token_p50_s``
  (first streamed token after the route decision, p50) <= 0.1 s; ``ratio_vs_baseline`` >= 8;
  ``cold_start_s`` <= 4 s.

Results: bench/results/latency[_quick][_image][_endpoint][_no-X]_<runtime>.json (the runtime always
in the name, e.g. ``latency_both.json``, so a run on one runtime never overwrites another's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (request, spoken?, the route it asks for). The spoken Mona Lisa question is the recorded example.
REQUESTS = [  # none of them is one of the router's few-shot examples
    ("Who wrote Hamlet?", False, "search"),
    ("Who painted the Mona Lisa?", True, "search"),
    ("Show me a cat eating fish", False, "draw"),
    ("What is 12 times 12?", False, "answer"),
    ("Paint a lighthouse on a cliff at sunset", True, "draw"),
    ("What is the capital of Australia?", False, "search"),
    ("When was the Eiffel Tower built?", True, "search"),
    ("Give me a recipe idea for dinner", False, "answer"),
    ("Draw two dogs playing in the snow", False, "draw"),
    ("Explain why the sky is blue", True, "answer"),
]
QUICK = [0, 1, 2, 3, 4]
# After the timed requests, warm typed search questions timed on their own (issue 16: the search
# route's warm answer p50 <= 1.5 s). Not in any eval sample; none is a few-shot example.
SEARCH_PROBE = [
    "Who discovered penicillin?", "How tall is Mount Kilimanjaro?", "When did the Berlin Wall fall?",
    "Where was Frida Kahlo born?", "What did Marie Curie discover?", "How long is the Danube?",
]
SEARCH_PROBE_QUICK = 3
PROFILE_QUESTION = "Who was the first emperor of Rome?"  # not in the timed set: nothing cached by it
RECORDED = {"Who painted the Mona Lisa?": REPO / "examples" / "who_painted_the_mona_lisa.wav"}

TARGETS = {  # issue 5, on the starter models
    "ratio_vs_baseline": (">=", 3.0),
    "cold_start_s": ("<=", 15.0),
    "warm_text_p50_s": ("<=", 3.0),
    "first_token_p50_s": ("<=", 1.5),
    "peak_rss_gb": ("<=", 3.0),
    "warm_search_answer_p50_s": ("<=", 1.5),  # issue 16
}
TARGETS_20 = {  # issue 20, checked on the llama.cpp runtime
    "engine_ratio_vs_raw": (">=", 0.90),
    "warm_direct_answer_p50_s": ("<=", 0.8),
    "warm_text_p50_s": ("<=", 0.3),
    "first_token_p50_s": ("<=", 0.1),
    "ratio_vs_baseline": (">=", 8.0),
    "cold_start_s": ("<=", 4.0),
}
RUNTIME_CHOICES = ("auto", "llama.cpp", "transformers", "both")
BOTH = ("transformers", "llama.cpp")  # the order `both` runs them in


def pct(values: list[float], q: float) -> float | None:
    """Percentile by linear interpolation (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def meets(name: str, value: float | None, targets: dict | None = None) -> bool | None:
    targets = TARGETS if targets is None else targets
    if value is None or name not in targets:
        return None
    op, bound = targets[name]
    return value >= bound if op == ">=" else value <= bound


def check(summary: dict, targets: dict) -> dict:
    return {k: {"target": f"{op} {bound}", "value": summary.get(k), "met": meets(k, summary.get(k), targets)}
            for k, (op, bound) in targets.items()}


def default_runtime() -> str:
    """``both`` when the llama.cpp binding is installed, else ``transformers``."""
    from tools.llm_llamacpp import binding_problem

    return "both" if binding_problem() is None else "transformers"


# -- spoken requests ---------------------------------------------------------------------------
def speak(text: str, folder: Path) -> Path:
    """A 16 kHz mono WAV of ``text`` spoken by espeak-ng (cached by text)."""
    import re

    import numpy as np
    import soundfile as sf
    import soxr

    if text in RECORDED:
        return RECORDED[text]
    out = folder / (re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") + ".wav")
    if out.exists():
        return out
    if shutil.which("espeak-ng") is None:
        raise SystemExit("spoken requests need espeak-ng (Debian: apt-get install espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / (out.stem + ".22k.wav")
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(raw), text], check=True)  # best transcribed of 4 voices tried
    samples, rate = sf.read(raw, dtype="float32")
    raw.unlink()
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    samples = soxr.resample(samples, rate, 16000).astype(np.float32)
    sf.write(out, samples, 16000)
    return out


# -- askdraw side: one process, one Agent ------------------------------------------------------
def worker(plan_path: Path, out_path: Path) -> None:
    """Answer every request of the plan in this process; write the timings to ``out_path``."""
    started = time.time()
    from agent import Agent, Settings
    from agent.trace import read_trace
    from tools.common import quiet_transformers

    quiet_transformers()
    plan = json.loads(plan_path.read_text())
    imported = time.time()
    agent = Agent(Settings(out_dir=Path(plan["out_dir"]), image_model=plan.get("image_model"),
                           image_steps=plan.get("image_steps"), image_size=plan.get("image_size", 512),
                           llm_endpoint=plan.get("llm_endpoint"), llm_model=plan.get("llm_model"),
                           llm_runtime=plan.get("llm_runtime") or "auto"))
    for name in plan.get("ablate", []):
        ABLATIONS[name](agent)
    turns = []
    for req in plan["requests"]:
        rec: dict = {"request": req["text"], "spoken": req["spoken"], "start": time.time()}
        kwargs = {"audio": req["audio"]} if req["spoken"] else {"text": req["text"]}
        for event in agent.stream(progress=True, **kwargs):
            now = time.time()
            if event.kind == "step":
                name = event.step.step
                if name == "decide":
                    rec["decided"] = now
                if name in ("answer", "draw"):  # the text answer (for draw: the picture's description) is ready
                    rec["text_done"] = now
                if name == "generate_image":
                    rec["image_generated"] = bool((event.step.data or {}).get("generated"))
            elif event.kind == "progress" and event.progress.get("type") == "token" and "first_token" not in rec:
                rec["first_token"] = now
            elif event.kind == "result":
                rec["end"] = now
                r = event.result
                loads = {}
                if r.trace_path:
                    loads = {k: v for e in read_trace(Path(r.trace_path).parent)
                             for k, v in (e.data or {}).items() if k.startswith("load_")}
                rec.update(route=r.route, transcript=r.transcript, answer=(r.answer or "")[:300],
                           steps_ms=r.timings_ms, loads_ms=loads, error=r.error, image_path=r.image_path)
        turns.append(rec)
    requests_done = time.time()  # the search probe and the profile below are not part of the total
    probe = []
    for question in plan.get("search_probe", []):  # warm: every model is loaded by now
        start = time.time()
        answered = None
        for event in agent.stream(text=question, progress=True):
            if event.kind == "step" and event.step.step == "answer":
                answered = time.time()
            elif event.kind == "result":
                r = event.result
                probe.append({"request": question, "route": r.route, "answer_s": (answered or time.time()) - start,
                              "steps_ms": r.timings_ms, "answer": (r.answer or "")[:300], "error": r.error})
    profile = None
    if plan.get("profile"):
        profile = profile_turn(agent, plan["profile"])
    tools = agent.tools
    runtime = getattr(tools.llm, "runtime", None)  # where the LLM ran (auto picks one)
    wanted = plan.get("llm_runtime")
    if wanted in BOTH and not plan.get("llm_endpoint") and runtime != wanted:
        raise SystemExit(f"asked for the {wanted} runtime, the agent's LLM runs on {runtime}")
    loaded = {"llm": tools.llm.loaded, "asr": tools.asr.loaded,
              "embeddings": bool(getattr(getattr(tools.wiki, "embedder", None), "loaded", False)),
              "image": getattr(tools.image, "pipe", None) is not None}
    out_path.write_text(json.dumps({
        "process_started": started, "imported": imported, "requests_done": requests_done, "turns": turns, "loaded": loaded, "search_probe": probe,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "finished": time.time(),
        "profile": profile, "llm_runtime": runtime, "llm_runtime_note": getattr(tools.llm, "runtime_note", None),
    }))


def profile_turn(agent, question: str, top: int = 25) -> dict:
    """One more warm typed turn with cProfile switched on inside each step (LangGraph runs steps
    in its own worker threads), plus the turn's step timings. Time outside the steps (graph
    bookkeeping, trace and result files) is wall time minus the steps' sum."""
    import cProfile
    import io
    import pstats

    from contextlib import contextmanager

    from agent import step

    prof = cProfile.Profile()
    plain = step.cancellable

    @contextmanager
    def profiled(event):  # every step runs its work inside this, in the thread LangGraph gives it
        with plain(event):
            prof.enable()
            try:
                yield
            finally:
                prof.disable()

    step.cancellable = profiled
    start = time.perf_counter()
    try:
        result = agent.ask(text=question)
    finally:
        step.cancellable = plain
    wall = time.perf_counter() - start
    stats = pstats.Stats(prof)
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc, "own_s": round(tt, 3), "cum_s": round(ct, 3)})
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return {"question": question, "route": result.route, "wall_s": round(wall, 3), "steps_ms": result.timings_ms,
            "outside_steps_s": round(wall - sum(result.timings_ms.values()) / 1000, 3),
            "top_cumulative": sorted(rows, key=lambda r: -r["cum_s"])[:top],
            "top_own": sorted(rows, key=lambda r: -r["own_s"])[:top]}


def _no_prefix_cache(agent) -> None:
    agent.tools.llm.prefix_cache = False


def _no_early_stop(_agent) -> None:
    import tools.answer
    import tools.image_prompt

    tools.answer.answer_sentence_done = lambda reply, question: False
    tools.image_prompt.PromptRewriter.settled = lambda self, reply, source: False


def _no_answer_cap(_agent) -> None:
    import tools.answer

    tools.answer.too_many_sentences = lambda text, limit=3: False
    tools.answer.loops = lambda text, times=3: False


def _always_rewrite(_agent) -> None:
    from agent import nodes

    nodes.will_draw = lambda ctx: True


def _one_thread(_agent) -> None:
    import torch

    torch.set_num_threads(1)


# Each optimisation, switched off again, to measure what it is worth (--ablate NAME).
ABLATIONS = {
    "prefix-cache": _no_prefix_cache,     # KV cache of the fixed system prompt + few-shot examples
    "early-stop": _no_early_stop,         # stop generating once the used part of the reply is fixed (same output)
    "answer-cap": _no_answer_cap,         # direct answers end after 3 sentences or when they loop (shorter output)
    "skip-rewrite": _always_rewrite,      # no LLM image-prompt rewrite when no image model will draw it
    "threads": _one_thread,               # torch's default (one thread per core) -> 1 thread
}


def run_askdraw(requests: list[dict], work: Path, image: dict, ablate: list[str] | None = None,
                profile: str | None = None, endpoint: dict | None = None, probe: list[str] | None = None,
                runtime: str | None = None) -> dict:
    plan = work / "plan.json"
    out = work / "askdraw.json"
    plan.write_text(json.dumps({"requests": requests, "out_dir": str(work / "runs"), "ablate": ablate or [],
                                "profile": profile, "search_probe": probe or [], "llm_runtime": runtime,
                                **image, **(endpoint or {})}))
    spawn = time.time()
    proc = subprocess.run([sys.executable, __file__, "--worker", str(plan), str(out)],
                          capture_output=True, text=True)
    exited = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"askdraw worker failed:\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    # The requests' total: from spawning the process to the last answer, plus the process's exit;
    # the warm search probe and the profile that run in between are extra work, not the requests'.
    done = data.get("requests_done", data["finished"])
    data.update(spawn=spawn, exited=exited, process_wall_s=exited - spawn,
                wall_s=(done - spawn) + (exited - data["finished"]))
    return data


# -- baseline side: one process per request ---------------------------------------------------
def model_dirs() -> dict[str, str]:
    """The folders askdraw's starter models are converted to (the baseline loads the same weights)."""
    from tools.asr import STARTER_ASR, WhisperASR
    from tools.llm import STARTER_LLM, resolve_model

    return {"llm": str(resolve_model(STARTER_LLM)), "asr": str(WhisperASR(STARTER_ASR)._resolve())}


def run_baseline(requests: list[dict], work: Path, dirs: dict[str, str], image: dict,
                 max_new_tokens: int) -> list[dict]:
    runs = []
    for i, req in enumerate(requests):
        cmd = [sys.executable, str(REPO / "bench" / "baseline_pipeline.py"), "--llm", dirs["llm"],
               "--asr", dirs["asr"], "--max-new-tokens", str(max_new_tokens), "--out", str(work / f"baseline-{i}.png")]
        cmd += ["--audio", req["audio"]] if req["spoken"] else ["--text", req["text"]]
        if image.get("image_model"):
            cmd += ["--image-model", image["image_model"], "--image-size", str(image.get("image_size", 512))]
            if image.get("image_steps"):
                cmd += ["--image-steps", str(image["image_steps"])]
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"baseline failed on {req['text']!r}:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append({"request": req["text"], "spoken": req["spoken"], "wall_s": round(wall, 3), **out})
        print(f"  baseline {i + 1}/{len(requests)}: {wall:5.1f} s  {req['text']}", file=sys.stderr)
    return runs


# -- summary ------------------------------------------------------------------------------------
def summarise(ask: dict, base: list[dict] | None) -> dict:
    turns = ask["turns"]
    for t in turns:
        t["e2e_s"] = t["end"] - t["start"]
        t["text_s"] = t.get("text_done", t["end"]) - t["start"]
        t["first_token_after_decision_s"] = (t["first_token"] - t["decided"]) if "first_token" in t and "decided" in t else None
        t["cold"] = bool(t.get("loads_ms"))  # a model loaded during this turn
    warm = [t for t in turns if not t["cold"]]
    steps: dict[str, list[float]] = {}
    for t in warm:
        for name, ms in (t.get("steps_ms") or {}).items():
            steps.setdefault(name, []).append(ms / 1000)
    step_stats = {k: {"p50_s": round(pct(v, 50), 3), "p95_s": round(pct(v, 95), 3), "n": len(v)} for k, v in steps.items()}
    typed_warm_text = [t["text_s"] for t in warm if not t["spoken"]]
    first_tokens = [t["first_token_after_decision_s"] for t in warm if t["first_token_after_decision_s"] is not None]
    e2e_warm = [t["e2e_s"] for t in warm]
    # Warm typed search turns: those of the timed set and the probe questions asked after it.
    probe = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in p.items()} for p in ask.get("search_probe", [])]
    search_s = [t["text_s"] for t in warm if not t["spoken"] and t.get("route") == "search"]
    search_s += [p["answer_s"] for p in probe if p.get("route") == "search"]
    cold_start = turns[0]["end"] - ask["spawn"]
    # Issue 20's "direct answer": the answer step (the LLM writing the text) over warm turns, and
    # apart from it the answer route's warm typed turns, request to complete text.
    answer_step = steps.get("answer", [])
    answer_route = [t["text_s"] for t in warm if not t["spoken"] and t.get("route") == "answer"]
    image_s = [t["steps_ms"]["generate_image"] / 1000 for t in warm
               if t.get("image_generated") and "generate_image" in t.get("steps_ms", {})]
    summary = {
        "requests": len(turns),
        "askdraw_total_s": round(ask["wall_s"], 2),
        "askdraw_process_wall_s": round(ask.get("process_wall_s", ask["wall_s"]), 2),
        "cold_start_s": round(cold_start, 2),
        "process_to_imported_s": round(ask["imported"] - ask["spawn"], 2),
        "process_exit_s": round(ask["exited"] - ask["finished"], 2),
        "warm_text_p50_s": round(pct(typed_warm_text, 50), 2) if typed_warm_text else None,
        "warm_text_p95_s": round(pct(typed_warm_text, 95), 2) if typed_warm_text else None,
        "first_token_p50_s": round(pct(first_tokens, 50), 2) if first_tokens else None,
        "first_token_p95_s": round(pct(first_tokens, 95), 2) if first_tokens else None,
        "warm_e2e_p50_s": round(pct(e2e_warm, 50), 2) if e2e_warm else None,
        "warm_e2e_p95_s": round(pct(e2e_warm, 95), 2) if e2e_warm else None,
        "peak_rss_gb": round(ask["peak_rss_mb"] / 1024, 2),
        "models_loaded_at_end": ask["loaded"],
        "steps": step_stats,
        "image_p50_s": round(pct(image_s, 50), 3) if image_s else None,
        "warm_search_answer_p50_s": round(pct(search_s, 50), 2) if search_s else None,
        "warm_search_answer_p95_s": round(pct(search_s, 95), 2) if search_s else None,
        "warm_direct_answer_p50_s": round(pct(answer_step, 50), 3) if answer_step else None,
        "warm_direct_answer_n": len(answer_step),
        "warm_answer_route_text_p50_s": round(pct(answer_route, 50), 3) if answer_route else None,
        "warm_answer_route_text_n": len(answer_route),
        "search_probe": probe,
        "llm_runtime": ask.get("llm_runtime"),
        "llm_runtime_note": ask.get("llm_runtime_note"),
        "routes": [t.get("route") for t in turns],
        "errors": [t.get("error") for t in turns if t.get("error")],
    }
    if base:
        total = sum(r["wall_s"] for r in base)
        summary.update(
            baseline_total_s=round(total, 2),
            baseline_per_request_p50_s=round(pct([r["wall_s"] for r in base], 50), 2),
            baseline_peak_rss_gb=round(max(r["peak_rss_mb"] for r in base) / 1024, 2),
            ratio_vs_baseline=round(total / ask["wall_s"], 2),
        )
        img = [r["seconds"]["image"] + r["seconds"].get("load_image", 0) for r in base if "image" in r["seconds"]]
        if img:
            summary["baseline_image_p50_s"] = round(pct(img, 50), 3)
    else:
        summary["ratio_vs_baseline"] = None
    summary["targets"] = check(summary, TARGETS)
    return summary


def pick(runs: list[tuple], repeat: int) -> tuple[dict, dict, list | None]:
    """The run with the median askdraw total (every run's headline numbers kept under ``repeats``)."""
    runs = sorted(runs, key=lambda r: r[0]["askdraw_total_s"])
    summary, ask, base = runs[len(runs) // 2]
    if repeat > 1:
        keys = ("askdraw_total_s", "baseline_total_s", "ratio_vs_baseline", "cold_start_s", "warm_text_p50_s",
                "first_token_p50_s", "warm_e2e_p50_s", "peak_rss_gb", "warm_direct_answer_p50_s")
        summary["repeats"] = [{k: r[0].get(k) for k in keys} for r in runs]
        ratios = [r[0]["ratio_vs_baseline"] for r in runs if r[0].get("ratio_vs_baseline")]
        summary["ratio_min"] = min(ratios) if ratios else None
    if ask.get("profile") is None:
        ask["profile"] = next((r[1]["profile"] for r in runs if r[1].get("profile")), None)
    return summary, ask, base


def run_engine(repeats: int, work: Path) -> dict | None:
    """bench/bench_engine.py in its own process (after the askdraw runs, never during them)."""
    from tools.llm_llamacpp import binding_problem

    problem = binding_problem()
    if problem:
        print(f"engine comparison skipped: {problem}", file=sys.stderr)
        return {"skipped": problem}
    print(f"engine: llama-cpp-python vs askdraw's runtimes on the same GGUF (median of {repeats}) ...", file=sys.stderr)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_engine.py"), "--json", "--no-save",
                           "--repeats", str(repeats)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_engine failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ENGINE_OF = {"llama.cpp": "askdraw-llama.cpp", "transformers": "askdraw-transformers"}


def add_engine(section: dict, engine: dict | None) -> None:
    """The engine comparison's numbers for the runtime this section ran on."""
    engines = (engine or {}).get("engines", {})
    mine = engines.get(ENGINE_OF.get(section.get("llm_runtime") or "", ""), {})
    raw = engines.get("llama-cpp-python", {})
    section["engine_decode_tok_s"] = mine.get("decode_tok_s")
    section["engine_raw_decode_tok_s"] = raw.get("decode_tok_s")
    section["engine_ratio_vs_raw"] = (round(mine["decode_tok_s"] / raw["decode_tok_s"], 3)
                                      if mine.get("decode_tok_s") and raw.get("decode_tok_s") else None)


# (label, section key, baseline key) of the side-by-side table
SIDE_BY_SIDE = [
    ("total wall s", "askdraw_total_s", "baseline_total_s"),
    ("ratio vs baseline", "ratio_vs_baseline", None),
    ("cold start s", "cold_start_s", None),
    ("warm typed text p50 s", "warm_text_p50_s", None),
    ("warm typed text p95 s", "warm_text_p95_s", None),
    ("first token p50 s", "first_token_p50_s", None),
    ("warm e2e p50 s (base: per req)", "warm_e2e_p50_s", "baseline_per_request_p50_s"),
    ("answer step p50 s", "warm_direct_answer_p50_s", None),
    ("answer route text p50 s", "warm_answer_route_text_p50_s", None),
    ("warm search p50 s", "warm_search_answer_p50_s", None),
    ("image p50 s", "image_p50_s", "baseline_image_p50_s"),
    ("peak RSS GB", "peak_rss_gb", "baseline_peak_rss_gb"),
    ("engine decode tok/s", "engine_decode_tok_s", "engine_raw_decode_tok_s"),
    ("tok/s vs llama-cpp-python", "engine_ratio_vs_raw", None),
]


def print_side_by_side(sections: dict, runtimes: list[str], primary: str, engine: dict | None) -> None:
    def cell(value) -> str:
        return "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))

    def target(key: str) -> str:
        parts = [f"{TARGETS[key][0]} {TARGETS[key][1]}"] if key in TARGETS else []
        if key in TARGETS_20:
            op, bound = TARGETS_20[key]
            met = sections[primary]["targets_issue20"][key]["met"]
            parts.append(f"#20 {op} {bound} {({True: 'met', False: 'MISSED', None: '-'})[met]}")
        return "; ".join(parts)

    base = sections[primary]
    print(f"\n{'':<30}" + "".join(f"{rt:>14}" for rt in runtimes) + f"{'baseline':>10}   target (#20: on {primary})")
    for label, key, base_key in SIDE_BY_SIDE:
        values = [sections[rt].get(key) for rt in runtimes]
        if all(v is None for v in values) and (base_key is None or base.get(base_key) is None):
            continue
        print(f"{label:<30}" + "".join(f"{cell(v):>14}" for v in values)
              + f"{cell(base.get(base_key) if base_key else None):>10}   {target(key)}")
    if engine and engine.get("engines"):
        e = engine
        print(f"\nengine comparison ({Path(e['gguf']).name}, {e['max_new_tokens']} new tokens, greedy, median of "
              f"{e['repeats']}, {e['threads']} threads, prompt cache {'on' if e['prompt_cache'] else 'off'}; "
              "the baseline column of 'engine decode tok/s' is llama-cpp-python's own):")
        for name, r in e["engines"].items():
            print(f"  {name:<22} {r['new_tokens']:>3} tokens  wall {r['wall_s']:.3f} s  first token "
                  f"{cell(r['first_token_s'])} s  decode {cell(r['decode_tok_s'])} tok/s  overall {cell(r['overall_tok_s'])} tok/s")
    elif engine:
        print(f"\nengine comparison skipped: {engine.get('skipped')}")


def machine() -> dict:
    import platform

    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "gpu": False}


def print_table(s: dict, turns: list[dict], base: list[dict] | None) -> None:
    print(f"{'#':>2} {'request':<44} {'in':<6} {'route':<7} {'text s':>7} {'1st tok':>7} {'e2e s':>6} {'baseline s':>10}")
    for i, t in enumerate(turns):
        ft = t["first_token_after_decision_s"]
        b = f"{base[i]['wall_s']:10.1f}" if base else f"{'-':>10}"
        print(f"{i + 1:>2} {t['request'][:44]:<44} {'voice' if t['spoken'] else 'typed':<6} {str(t.get('route')):<7} "
              f"{t['text_s']:7.2f} {(f'{ft:.2f}' if ft is not None else '-'):>7} {t['e2e_s']:6.2f} {b}"
              + ("  (cold)" if t["cold"] else ""))
    print("\nper step over warm turns (s):  " + ", ".join(
        f"{k} p50 {v['p50_s']:.2f} / p95 {v['p95_s']:.2f}" for k, v in s["steps"].items()))
    if s.get("image_p50_s") is not None:
        print(f"image generation (warm) p50 {s['image_p50_s']:.2f} s; baseline load+draw p50 {s.get('baseline_image_p50_s')} s")
    if s.get("search_probe"):
        print("\nwarm search probe (typed, after the timed requests; answer ready at s):")
        for p in s["search_probe"]:
            print(f"   {p['answer_s']:5.2f}  {p['route']:<7} {p['request']}")
    print()
    for k, t in s["targets"].items():
        mark = {True: "met", False: "MISSED", None: "-"}[t["met"]]
        print(f"  {k:<24} {str(t['value']):>8}   target {t['target']:<7} {mark}")
    if base:
        print(f"\n  askdraw {s['askdraw_total_s']:.1f} s for {s['requests']} requests (one process, cold start "
              f"{s['cold_start_s']:.1f} s) vs baseline {s['baseline_total_s']:.1f} s "
              f"({s['requests']} processes): {s['ratio_vs_baseline']:.2f}x")
    if not base:
        print(f"\n  askdraw {s['askdraw_total_s']:.1f} s for {s['requests']} requests (one process, cold start {s['cold_start_s']:.1f} s)")
    if s.get("repeats"):
        print("  all runs (askdraw s / baseline s / ratio): " + "; ".join(
            f"{r['askdraw_total_s']} / {r['baseline_total_s']} / {r['ratio_vs_baseline']}" for r in s["repeats"]))
    print(f"  peak RSS {s['peak_rss_gb']:.2f} GB; models loaded: "
          + ", ".join(k for k, v in s["models_loaded_at_end"].items() if v))


def print_profile(p: dict) -> None:
    print(f"\nprofile of one warm turn: {p['question']!r} -> {p['route']}, {p['wall_s']:.2f} s; steps ms: "
          + ", ".join(f"{k} {v:.0f}" for k, v in p["steps_ms"].items()) + f"; outside steps {p['outside_steps_s']:.2f} s")
    print(f"  {'cum s':>6} {'own s':>6} {'calls':>7}  function (by cumulative time)")
    for r in p["top_cumulative"][:15]:
        print(f"  {r['cum_s']:6.3f} {r['own_s']:6.3f} {r['calls']:7d}  {r['function']}")
    print(f"  {'own s':>6} {'calls':>7}  function (by own time)")
    for r in p["top_own"][:10]:
        print(f"  {r['own_s']:6.3f} {r['calls']:7d}  {r['function']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 requests instead of 10")
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--no-baseline", action="store_true", help="askdraw only (no ratio)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything N times; the run with the median askdraw total is reported, all runs' totals are kept")
    parser.add_argument("--image-model", help="diffusers text-to-image folder for both sides (image time reported apart)")
    parser.add_argument("--tiny-image", action="store_true",
                        help="build a tiny random diffusers pipeline and use it as the image model (exercises the code path; its pictures are noise)")
    parser.add_argument("--image-steps", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--ablate", action="append", choices=sorted(ABLATIONS), default=[],
                        help="switch an optimisation off again (repeatable), to measure what it is worth")
    parser.add_argument("--profile", action="store_true",
                        help=f"after the timed requests, profile one more warm typed turn ({PROFILE_QUESTION!r}) with cProfile")
    parser.add_argument("--llm-endpoint", help="run askdraw's LLM calls on this OpenAI-compatible server "
                        "(e.g. python -m llama_cpp.server with the starter GGUF); the baseline stays local")
    parser.add_argument("--llm-model", help="model name on --llm-endpoint")
    parser.add_argument("--llm-runtime", choices=RUNTIME_CHOICES,
                        help="askdraw's LLM runtime (Settings.llm_runtime); both: transformers, then llama.cpp, each "
                        "repeat (default: both when the llama.cpp binding is installed, else transformers)")
    parser.add_argument("--no-engine", dest="engine", action="store_false",
                        help="skip the engine comparison (bench/bench_engine.py) after the askdraw runs")
    parser.add_argument("--results-dir", type=Path, help="write the results JSON here instead of bench/results/")
    parser.add_argument("--worker", nargs=2, metavar=("PLAN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return

    from agent.settings import Settings
    from tools.common import cache_dir, quiet_transformers

    quiet_transformers()
    runtime_arg = args.llm_runtime or default_runtime()
    runtimes = list(BOTH) if runtime_arg == "both" else [runtime_arg]
    if args.llm_endpoint and runtime_arg == "both":
        raise SystemExit("--llm-endpoint runs the LLM on that server: --llm-runtime both would measure it twice")
    chosen = [REQUESTS[i] for i in (QUICK if args.quick else range(len(REQUESTS)))]
    speech = cache_dir() / "bench" / "speech"
    requests = [{"text": text, "spoken": spoken, "expected_route": route,
                 "audio": str(speak(text, speech)) if spoken else None} for text, spoken, route in chosen]
    image: dict = {}
    with tempfile.TemporaryDirectory(prefix="askdraw-bench-") as tmp:
        work = Path(tmp)
        if args.tiny_image:
            sys.path.insert(0, str(REPO / "tests"))
            from tiny_pipeline import build_tiny_pipeline

            image = {"image_model": str(build_tiny_pipeline(work / "tiny-sd")), "image_steps": args.image_steps or 4,
                     "image_size": args.image_size or 64}
        elif args.image_model:
            image = {"image_model": args.image_model, "image_steps": args.image_steps,
                     "image_size": args.image_size or 512}
        dirs = model_dirs()  # converts the starter weights now if needed, outside the timed runs
        runs: dict[str, list] = {rt: [] for rt in runtimes}
        for rep in range(args.repeat):
            tag = f" (repeat {rep + 1}/{args.repeat})" if args.repeat > 1 else ""
            last = rep == args.repeat - 1
            asks = {}
            for rt in runtimes:  # one after the other, never at once
                print(f"askdraw ({rt} LLM runtime): {len(requests)} requests in one process{tag} ...", file=sys.stderr)
                asks[rt] = run_askdraw(requests, work, image, args.ablate,
                                       PROFILE_QUESTION if args.profile and last else None,
                                       {"llm_endpoint": args.llm_endpoint, "llm_model": args.llm_model},
                                       SEARCH_PROBE[:SEARCH_PROBE_QUICK] if args.quick else SEARCH_PROBE, runtime=rt)
            base = None
            if not args.no_baseline:
                print(f"baseline: {len(requests)} processes{tag} ...", file=sys.stderr)
                base = run_baseline(requests, work, dirs, image, Settings().max_answer_tokens)
            for rt in runtimes:
                runs[rt].append((summarise(asks[rt], base), asks[rt], base))
        engine = None
        if args.engine and not args.llm_endpoint:  # after every askdraw run, in its own process
            engine = run_engine(3 if args.quick else 5, work)
        sections, picked = {}, {}
        for rt in runtimes:
            section, ask, base = pick(runs[rt], args.repeat)
            section["machine"] = machine()
            section["image_model"] = image.get("image_model") and ("tiny random pipeline (noise)" if args.tiny_image
                                                                   else image["image_model"])
            section["turns"] = [{k: v for k, v in t.items() if k not in ("start", "end", "decided", "first_token", "text_done")}
                                for t in ask["turns"]]
            if base:
                section["baseline_runs"] = [{k: r[k] for k in ("request", "spoken", "wall_s", "seconds", "peak_rss_mb", "answer")}
                                            for r in base]
            section["ablated"] = args.ablate
            if ask.get("profile"):
                section["profile"] = ask["profile"]
            section["llm_endpoint"] = args.llm_endpoint
            add_engine(section, engine)
            section["targets_issue20"] = check(section, TARGETS_20)
            sections[rt], picked[rt] = section, (ask, base)
    # The top level is the section of the runtime issue 20's targets are checked on (llama.cpp when
    # it ran), as a single-runtime run always wrote it; every runtime's section is under "runtimes".
    primary = next((rt for rt in runtimes if sections[rt].get("llm_runtime") == "llama.cpp"), runtimes[-1])
    summary = dict(sections[primary])
    summary.update(llm_runtime_option=runtime_arg, primary_runtime=primary, runtimes=sections, engine=engine)
    name = ("latency" + ("_quick" if args.quick else "") + ("_image" if image else "") + ("_endpoint" if args.llm_endpoint else "")
            + "".join(f"_no-{a}" for a in args.ablate) + "_" + runtime_arg.replace(".", ""))
    from results_io import save_results

    keys = ("ratio_vs_baseline", "cold_start_s", "warm_text_p50_s", "first_token_p50_s", "peak_rss_gb", "askdraw_total_s",
            "baseline_total_s", "warm_e2e_p50_s", "image_p50_s", "warm_search_answer_p50_s", "requests",
            "warm_direct_answer_p50_s", "warm_answer_route_text_p50_s", "engine_ratio_vs_raw", "llm_runtime")
    headline = {k: summary.get(k) for k in keys}
    headline.update(llm_runtime_option=runtime_arg, primary_runtime=primary,
                    runtimes={rt: {k: sec.get(k) for k in keys} for rt, sec in sections.items()},
                    targets_issue20_met={k: v["met"] for k, v in summary["targets_issue20"].items()})
    path = save_results(name, summary, headline, as_json=args.json, folder=args.results_dir)
    if not args.json:
        for rt in runtimes:
            ask, base = picked[rt]
            print(f"\n== askdraw on the {rt} LLM runtime ({sections[rt].get('llm_runtime')}) ==")
            print_table(sections[rt], ask["turns"], base)
            if ask.get("profile"):
                print_profile(ask["profile"])
        print_side_by_side(sections, runtimes, primary, engine)
        print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
