"""Whisper on each runtime: time to the first transcript in a fresh process, and seconds per spoken request.

    .venv/bin/python bench/bench_asr_runtimes.py [--model starter:tiny.en] [--repeats 3] [--json]

For each runtime (ctranslate2, transformers), ``--repeats`` fresh processes (the runtimes take
turns) each: import ``tools.asr``, load the model, transcribe the first spoken request of
bench/bench_latency.py (the recorded Mona Lisa question); the first number is the process's wall
time from its start (``python -c`` launched) to that transcript. Then, in that warm process, each
of the bench's four spoken requests (espeak-ng, as bench_latency.py makes them; cached under
``cache_dir()/bench/speech`` as there) is transcribed once more, timed. Reported: medians over the processes,
what each runtime imported (``torch``, ``transformers``) and its transcripts; the load average
before and after. Writes bench/results/asr_runtimes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from results_io import save_results  # noqa: E402

RUNTIMES = ("ctranslate2", "transformers")

# One fresh process: start clock passed in, the first transcript, then each request warm.
_CHILD = """
import json, sys, time
started = float(sys.argv[1])
from tools.asr import WhisperASR
model = WhisperASR(sys.argv[2], runtime=sys.argv[3])
wavs = json.loads(sys.argv[4])
first = model.transcribe(wavs[0])
first_s = time.time() - started
warm = []
for wav in wavs:
    t0 = time.perf_counter()
    text = model.transcribe(wav)
    warm.append([time.perf_counter() - t0, text])
print(json.dumps({"runtime": model.runtime, "first_transcript_s": first_s, "first": first, "warm": warm,
                  "load_s": model.load_seconds, "threads": getattr(model._engine, "threads", None),
                  "imported": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def spoken_requests() -> list[tuple[str, Path]]:
    from bench_latency import REQUESTS, speak

    from tools.common import cache_dir

    return [(text, speak(text, cache_dir() / "bench" / "speech")) for text, spoken, _ in REQUESTS if spoken]


def one_process(model: str, runtime: str, wavs: list[Path]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, repr(time.time()), model, runtime,
                           json.dumps([str(w) for w in wavs])], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"bench_asr_runtimes: the {runtime} process failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="starter:tiny.en")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print only the headline JSON object")
    args = parser.parse_args()
    requests = spoken_requests()
    wavs = [w for _, w in requests]
    load_before = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {r: [] for r in RUNTIMES}
    for _ in range(args.repeats):
        for runtime in RUNTIMES:
            runs[runtime].append(one_process(args.model, runtime, wavs))
    headline: dict = {"model": args.model, "repeats": args.repeats, "runtimes": {}}
    for runtime, rr in runs.items():
        per_request = [statistics.median(r["warm"][i][0] for r in rr) for i in range(len(wavs))]
        headline["runtimes"][runtime] = {
            "first_transcript_s_median": round(statistics.median(r["first_transcript_s"] for r in rr), 2),
            "first_transcript_s": [round(r["first_transcript_s"], 2) for r in rr],
            "seconds_per_request_median": round(statistics.median(per_request), 3),
            "seconds_per_request": {text: round(s, 3) for (text, _), s in zip(requests, per_request, strict=True)},
            "imported": rr[0]["imported"],
            "threads": [r["threads"] for r in rr],
        }
    summary = {**headline, "machine": {"cpus": os.cpu_count(), "loadavg_1min_before": round(load_before, 2),
                                       "loadavg_1min_after": round(os.getloadavg()[0], 2)},
               "transcripts": {rt: {text: rr[0]["warm"][i][1] for i, (text, _) in enumerate(requests)}
                               for rt, rr in runs.items()},
               "runs": runs}
    out = save_results("asr_runtimes", summary, headline, as_json=args.json)
    if args.json:
        return
    print(f"{args.model}, {args.repeats} fresh processes per runtime; load average "
          f"{summary['machine']['loadavg_1min_before']} -> {summary['machine']['loadavg_1min_after']} on {os.cpu_count()} CPUs")
    for runtime, h in headline["runtimes"].items():
        print(f"{runtime:<13} first transcript {h['first_transcript_s_median']:.2f} s (runs {h['first_transcript_s']}), "
              f"{h['seconds_per_request_median']:.3f} s per spoken request, imported {h['imported'] or 'neither torch nor transformers'}")
        for text, s in h["seconds_per_request"].items():
            print(f"    {s:.3f} s  {text!r} -> {summary['transcripts'][runtime][text]!r}")
    print(f"written to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
