"""The seed's simple pipeline, re-implemented as the baseline for bench/bench_latency.py.

One question per process: load, answer, exit. Separate transformers/diffusers pipelines for
ASR -> LLM -> diffusion, no routing, no retrieval, and the answer text used directly as the image
prompt. It runs the *same* weights as askdraw (the folders askdraw converts the starter models to,
given by path), so the comparison measures how the work is organised, not which model runs.

    .venv/bin/python bench/baseline_pipeline.py --llm DIR [--asr DIR] [--image-model DIR]
        (--text "question" | --audio clip.wav) [--out image.png] [--gguf FILE]

Prints one JSON object: transcript, answer, image path, per-stage seconds, peak RSS.
Nothing of askdraw is imported: this is what a first version would look like.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

T0 = time.perf_counter()
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", required=True, help="transformers causal-LM folder (or a GGUF's folder with --gguf)")
    parser.add_argument("--gguf", help="load the LLM from this GGUF file in --llm (de-quantised at every start)")
    parser.add_argument("--asr", help="transformers Whisper folder (needed with --audio)")
    parser.add_argument("--image-model", help="diffusers text-to-image folder; without it no image is made")
    parser.add_argument("--image-steps", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text")
    source.add_argument("--audio")
    parser.add_argument("--out", default="baseline.png")
    args = parser.parse_args()

    times: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        times[name] = round(now - since, 3)
        return now

    import torch
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t = mark("import", T0)

    transcript = None
    question = args.text
    if args.audio:
        import soundfile as sf

        samples, rate = sf.read(args.audio, dtype="float32", always_2d=True)
        asr = pipeline("automatic-speech-recognition", model=args.asr, device="cpu")
        t = mark("load_asr", t)
        transcript = asr({"raw": samples.mean(axis=1), "sampling_rate": rate})["text"].strip()
        question = transcript
        t = mark("asr", t)

    extra = {"model_kwargs": {"gguf_file": args.gguf}} if args.gguf else {}
    generator = pipeline("text-generation", model=args.llm, device="cpu", dtype=torch.float32, **extra)
    t = mark("load_llm", t)
    reply = generator([{"role": "user", "content": question}], max_new_tokens=args.max_new_tokens,
                      do_sample=False, repetition_penalty=1.1)
    answer = reply[0]["generated_text"][-1]["content"].strip()
    t = mark("answer", t)

    image_path = None
    if args.image_model:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(args.image_model, torch_dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        t = mark("load_image", t)
        steps = {"num_inference_steps": args.image_steps} if args.image_steps else {}
        image = pipe(answer, width=args.image_size, height=args.image_size,
                     generator=torch.Generator().manual_seed(0), **steps).images[0]
        image.save(args.out)
        image_path = args.out
        t = mark("image", t)

    times["total_in_process"] = round(time.perf_counter() - T0, 3)
    print(json.dumps({
        "question": question, "transcript": transcript, "answer": answer, "image_path": image_path,
        "seconds": times, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
