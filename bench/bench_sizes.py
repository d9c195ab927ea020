"""What real model sizes cost, measured without their weights (issue 21).

    .venv/bin/python bench/bench_sizes.py                      # every size, on CPU here (auto: CUDA when there is one)
    .venv/bin/python bench/bench_sizes.py --device cuda --json # one JSON object on stdout
    .venv/bin/python bench/bench_sizes.py --only qwen2.5-0.5b whisper-small --max-seconds 120
    .venv/bin/python bench/bench_sizes.py --tiny               # tiny configs of the same classes (seconds; tests)

Compute does not depend on weight values, so each model is built from its published config (the values
are written below, each with its source) with small random weights, and timed doing the work askdraw
asks of it. The weights never come from the hub and the models' outputs are meaningless: this bench
prints and records timings only, never a generated text, transcript or picture.

- LLMs (Qwen2.5-0.5B / 1.5B-class, ``Qwen2ForCausalLM``): a prompt of ``--prompt-tokens`` random ids
  (a question with retrieved passages is a few hundred tokens), then greedy decoding of exactly 64
  new tokens (``min_new_tokens = max_new_tokens``: no early stop). Time to the first new token
  (prefill included), decode tokens/s from the first new token to the last ((n - 1) / (t_last -
  t_first)), overall tokens/s (n / wall).
- Whisper small and large-v3-turbo-class (``WhisperForConditionalGeneration``): 30 s of audio as
  log-mel features (the encoder's fixed window), the encoder once, then the decoder from the
  4-token prompt (start, language, task, no-timestamps) for exactly 32 greedy tokens with its KV
  cache (the loop ``generate`` runs, without its logit processors). Real-time factor = (encoder +
  decoding) / 30 s.
- SD-Turbo (SD 2.1 architecture) and SD 1.5-class ``StableDiffusionPipeline`` (UNet + VAE + CLIP text
  encoder; a byte-level CLIP tokenizer built in memory, no safety checker) at 512 px for 1 and 4
  steps: seconds per image (text encoding, the steps, VAE decode), and the parts (forward hooks).
  SD-Turbo runs without guidance (one UNet batch per step), SD 1.5 with guidance 7.5 (two).

Every model is built on the ``meta`` device (``accelerate.init_empty_weights``, buffers real), then
each parameter gets a real tensor of small uniform random values on the target device and dtype
(norm scales 1, biases 0), so a 1.5B model is ready in seconds. Before building, the parameter
bytes are checked against the available memory; after one warm-up run (not timed), the time the
``--repeats`` timed runs would take is estimated from it, and a model that would exceed
``--max-seconds`` is skipped with the reason printed and recorded. Median over the timed runs.

Peak memory per model: on CPU the process's peak resident set size (VmHWM, reset before each model
through ``/proc/self/clear_refs``; ``base_rss_mb`` is the resident size before the model was built,
the libraries included), on CUDA ``torch.cuda.max_memory_allocated`` (reset per model).

Results: ``bench/results/sizes_<device>.json`` (``_tiny`` added with ``--tiny``, and the models' names
with ``--only``, so a partial run keeps its own file).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tools.device import torch_dtype  # noqa: E402  (one dtype rule for the agent and this bench)

GiB = 1024 ** 3
MiB = 1024 ** 2

LLM_NEW_TOKENS = 64
ASR_AUDIO_S = 30.0
ASR_NEW_TOKENS = 32
IMAGE_SIZE = 512
IMAGE_STEPS = (1, 4)
PROMPT = "a lighthouse on a cliff at dawn, oil painting"

# -- published configs (only the fields that shape the compute; the rest are the classes' defaults) ---
# https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json
QWEN25_05B = dict(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6,
    rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False, bos_token_id=151643,
    eos_token_id=151643,
)
# https://huggingface.co/Qwen/Qwen2.5-1.5B/blob/main/config.json
QWEN25_15B = dict(
    QWEN25_05B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
    num_key_value_heads=2, max_position_embeddings=131072,
)
# https://huggingface.co/openai/whisper-small/blob/main/config.json
WHISPER_SMALL = dict(
    vocab_size=51865, num_mel_bins=80, d_model=768, encoder_layers=12, decoder_layers=12,
    encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
    max_source_positions=1500, max_target_positions=448, decoder_start_token_id=50258, pad_token_id=50257,
    eos_token_id=50257,
)
# prompt: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|> (generation_config.json)
WHISPER_SMALL_PROMPT = (50258, 50259, 50359, 50363)
# https://huggingface.co/openai/whisper-large-v3-turbo/blob/main/config.json (large-v3's encoder, 4 decoder layers)
WHISPER_TURBO = dict(
    WHISPER_SMALL, vocab_size=51866, num_mel_bins=128, d_model=1280, encoder_layers=32, decoder_layers=4,
    encoder_attention_heads=20, decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120,
)
WHISPER_TURBO_PROMPT = (50258, 50259, 50360, 50364)

_UNET_BLOCKS = dict(
    in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=32, sample_size=64,
)
# https://huggingface.co/stabilityai/sd-vae-ft-mse/blob/main/config.json (the VAE of SD 1.x and 2.x)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    sample_size=512, scaling_factor=0.18215,
)
# https://huggingface.co/stabilityai/sd-turbo/blob/main/{unet,text_encoder}/config.json (SD 2.1: OpenCLIP ViT-H text tower)
SD_TURBO = dict(
    unet=dict(_UNET_BLOCKS, attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True),
    vae=SD_VAE,
    text_encoder=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                      num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512),
    guidance_scale=0.0,
)
# https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/{unet,text_encoder}/config.json (CLIP ViT-L/14)
SD_15 = dict(
    unet=dict(_UNET_BLOCKS, attention_head_dim=8, cross_attention_dim=768),
    vae=SD_VAE,
    text_encoder=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
    guidance_scale=7.5,
)

# --tiny: the same classes at toy sizes (the tests run every kind in a few seconds)
TINY_LLM = dict(QWEN25_05B, vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
                eos_token_id=2)
TINY_WHISPER = dict(WHISPER_SMALL, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64)
TINY_SD = dict(
    unet=dict(block_out_channels=(4, 8), layers_per_block=1, norm_num_groups=4, sample_size=8, in_channels=4,
              out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
              up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=2),
    vae=dict(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64),
    text_encoder=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=77),
)

MODELS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(kind="llm", config=QWEN25_05B, source="Qwen/Qwen2.5-0.5B config.json"),
    "qwen2.5-1.5b": dict(kind="llm", config=QWEN25_15B, source="Qwen/Qwen2.5-1.5B config.json"),
    "whisper-small": dict(kind="asr", config=WHISPER_SMALL, prompt=WHISPER_SMALL_PROMPT,
                          source="openai/whisper-small config.json"),
    "whisper-large-v3-turbo": dict(kind="asr", config=WHISPER_TURBO, prompt=WHISPER_TURBO_PROMPT,
                                   source="openai/whisper-large-v3-turbo config.json"),
    "sd-turbo": dict(kind="image", config=SD_TURBO, source="stabilityai/sd-turbo unet, vae, text_encoder configs"),
    "sd-1.5": dict(kind="image", config=SD_15,
                   source="stable-diffusion-v1-5 unet, vae, text_encoder configs (no safety checker)"),
}
TINY = {"llm": TINY_LLM, "asr": TINY_WHISPER, "image": None}


def say(text: str) -> None:
    print(f"[sizes] {text}", file=sys.stderr, flush=True)


# -- devices, dtypes, memory ---------------------------------------------------------------------
def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA GPU here; use --device cpu")
    return name


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else round(kib / 1024, 1)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not reset between models
    return round(kib / 1024, 1)


def release_memory() -> None:
    """Collect garbage and give freed heap memory back to the OS (glibc ``malloc_trim``): without it the
    previous model's freed layers stay resident and count in the next model's peak RSS."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def available_bytes(device: str) -> int | None:
    if device == "cuda":
        import torch

        return torch.cuda.mem_get_info()[0]
    kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                kib = int(line.split()[1])
    except OSError:
        return None
    return None if kib is None else kib * 1024


# -- building from config with random weights ----------------------------------------------------
def on_meta(build: Callable[[], Any]) -> Any:
    """Run ``build`` with parameters on the meta device (no memory, no init work); buffers stay real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        module = build()
    if callable(getattr(module, "tie_weights", None)):
        module.tie_weights()  # as from_pretrained does: Qwen2.5's lm_head is its embedding matrix
    return module


def parameter_count(*modules: Any) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def materialize(module: Any, device: str, dtype: Any, seed: int = 0) -> Any:
    """Give every meta parameter a real tensor on ``device`` in ``dtype``: small uniform random values,
    norm scales 1 and biases 0 (1-D parameters). Tied parameters stay tied (one tensor per meta one)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    made: dict[int, torch.nn.Parameter] = {}
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is None or p.device.type != "meta":
                continue
            new = made.get(id(p))
            if new is None:
                t = torch.empty(p.shape, device=device, dtype=dtype if p.is_floating_point() else p.dtype)
                if t.dim() == 1:
                    t.fill_(1.0 if name == "weight" else 0.0)
                else:
                    t.uniform_(-0.03, 0.03, generator=gen)
                new = made[id(p)] = torch.nn.Parameter(t, requires_grad=False)
            mod._parameters[name] = new
    module.to(device)  # the buffers (rotary frequencies, position ids), built on the CPU
    left = [n for n, p in module.named_parameters(remove_duplicate=False) if p.device.type == "meta"]
    if left:
        raise RuntimeError(f"parameters left on meta: {left[:3]}")
    return module.eval()


# -- the timed work, per kind --------------------------------------------------------------------
class TokenTimes:
    """A transformers streamer that records when each new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class LLMCase:
    def __init__(self, cfg: dict, device: str, dtype: Any, prompt_tokens: int, new_tokens: int) -> None:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.prompt_tokens, self.new_tokens = prompt_tokens, new_tokens
        config = Qwen2Config(**cfg)
        self.model = on_meta(lambda: Qwen2ForCausalLM(config))

    @property
    def parameters(self) -> int:
        return parameter_count(self.model)

    def build(self) -> None:
        import torch

        materialize(self.model, self.device, self.dtype)
        gen = torch.Generator().manual_seed(1)
        vocab = self.cfg["vocab_size"]
        self.ids = torch.randint(vocab // 8, vocab - vocab // 8, (1, self.prompt_tokens), generator=gen)
        self.ids = self.ids.to(self.device)

    def run(self, new_tokens: int) -> dict:
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  eos_token_id=self.cfg["eos_token_id"], pad_token_id=self.cfg["eos_token_id"])
        streamer = TokenTimes()
        sync(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(self.ids, attention_mask=torch.ones_like(self.ids), generation_config=config,
                                      streamer=streamer)
        sync(self.device)
        wall = time.perf_counter() - t0
        n = out.shape[1] - self.ids.shape[1]
        times = streamer.times
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
        return {"new_tokens": n, "wall_s": wall, "first_token_s": times[0] - t0 if times else None,
                "decode_tok_s": decode, "overall_tok_s": n / wall,
                "step_s": (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None}

    def warmup(self) -> tuple[dict, float]:
        w = self.run(2)
        return w, w["first_token_s"] + (self.new_tokens - 1) * w["step_s"]

    def timed(self) -> dict:
        return self.run(self.new_tokens)

    @staticmethod
    def summarise(runs: list[dict]) -> dict:
        return {
            "new_tokens": runs[0]["new_tokens"],
            "first_token_s": median(r["first_token_s"] for r in runs),
            "decode_tok_s": median(r["decode_tok_s"] for r in runs),
            "overall_tok_s": median(r["overall_tok_s"] for r in runs),
            "wall_s": median(r["wall_s"] for r in runs),
            "wall_all_s": [round(r["wall_s"], 3) for r in runs],
        }


class ASRCase:
    def __init__(self, cfg: dict, prompt: tuple[int, ...], device: str, dtype: Any, new_tokens: int) -> None:
        from transformers import WhisperConfig, WhisperForConditionalGeneration

        self.cfg, self.prompt, self.device, self.dtype, self.new_tokens = cfg, prompt, device, dtype, new_tokens
        config = WhisperConfig(**cfg)
        self.model = on_meta(lambda: WhisperForConditionalGeneration(config))

    @property
    def parameters(self) -> int:
        return parameter_count(self.model)

    def build(self) -> None:
        import torch

        materialize(self.model, self.device, self.dtype)
        frames = 2 * self.cfg["max_source_positions"]  # 30 s: 3000 mel frames of 10 ms
        gen = torch.Generator().manual_seed(2)
        self.features = torch.randn(1, self.cfg["num_mel_bins"], frames, generator=gen).to(self.device, self.dtype)
        self.prompt_ids = torch.tensor([list(self.prompt)], device=self.device)

    def run(self, new_tokens: int) -> dict:
        import torch

        model = self.model
        sync(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            encoded = model.model.encoder(self.features)
            sync(self.device)
            t1 = time.perf_counter()
            out = model(encoder_outputs=encoded, decoder_input_ids=self.prompt_ids, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            sync(self.device)
            t2 = time.perf_counter()
            for _ in range(new_tokens - 1):
                out = model(encoder_outputs=encoded, decoder_input_ids=token, past_key_values=out.past_key_values,
                            use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            token.cpu()
            sync(self.device)
        t3 = time.perf_counter()
        encoder, decode = t1 - t0, t3 - t1
        return {"encoder_s": encoder, "decode_s": decode, "new_tokens": new_tokens,
                "decode_tok_s": new_tokens / decode, "total_s": t3 - t0, "rtf": (t3 - t0) / ASR_AUDIO_S,
                "prompt_s": t2 - t1, "step_s": (t3 - t2) / max(1, new_tokens - 1)}

    def warmup(self) -> tuple[dict, float]:
        w = self.run(2)
        return w, w["encoder_s"] + w["prompt_s"] + (self.new_tokens - 1) * w["step_s"]

    def timed(self) -> dict:
        return self.run(self.new_tokens)

    @staticmethod
    def summarise(runs: list[dict]) -> dict:
        return {
            "audio_s": ASR_AUDIO_S,
            "new_tokens": runs[0]["new_tokens"],
            "encoder_s": median(r["encoder_s"] for r in runs),
            "decode_s": median(r["decode_s"] for r in runs),
            "decode_tok_s": median(r["decode_tok_s"] for r in runs),
            "total_s": median(r["total_s"] for r in runs),
            "rtf": median(r["rtf"] for r in runs),
            "total_all_s": [round(r["total_s"], 3) for r in runs],
        }


class ImageCase:
    def __init__(self, cfg: dict, device: str, dtype: Any, size: int, steps: tuple[int, ...]) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        from tests.tiny_pipeline import build_tiny_tokenizer  # a real CLIP BPE tokenizer, vocabulary in memory

        self.cfg, self.device, self.dtype, self.size, self.steps = cfg, device, dtype, size, steps
        self.tokenizer = build_tiny_tokenizer()
        te = dict(cfg["text_encoder"])
        te.setdefault("vocab_size", len(self.tokenizer))
        te_config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **te)
        self.unet = on_meta(lambda: UNet2DConditionModel(**cfg["unet"]))
        self.vae = on_meta(lambda: AutoencoderKL(**cfg["vae"]))
        self.text_encoder = on_meta(lambda: CLIPTextModel(te_config))
        self.guidance = cfg.get("guidance_scale", 0.0)

    @property
    def parameters(self) -> int:
        return parameter_count(self.unet, self.vae, self.text_encoder)

    def build(self) -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        for module in (self.unet, self.vae, self.text_encoder):
            materialize(module, self.device, self.dtype)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000, steps_offset=1, timestep_spacing="trailing")
        self.pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
            requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.parts: dict[str, list[float]] = {}
        for label, module in (("text_encoder", self.text_encoder), ("unet", self.unet), ("vae_decode", self.vae.decoder)):
            module.register_forward_pre_hook(self._start(label))
            module.register_forward_hook(self._stop(label))

    def _start(self, label: str):
        def hook(module, args):
            if label == "unet":
                self.unet_batch = args[0].shape[0]  # 2 with guidance: the prompt and the empty prompt
            sync(self.device)
            self._t = time.perf_counter()
        return hook

    def _stop(self, label: str):
        def hook(module, args, output):
            sync(self.device)
            self.parts.setdefault(label, []).append(time.perf_counter() - self._t)
        return hook

    def run(self, steps: int) -> dict:
        import torch

        self.parts = {}
        kwargs: dict[str, Any] = dict(prompt=PROMPT, num_inference_steps=steps, width=self.size, height=self.size,
                                      guidance_scale=self.guidance, generator=torch.Generator("cpu").manual_seed(0),
                                      output_type="np")
        sync(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.pipe(**kwargs)  # the image is discarded: random weights draw noise
        sync(self.device)
        wall = time.perf_counter() - t0
        unet = self.parts.get("unet", [])
        return {"steps": steps, "guidance_scale": self.guidance, "image_s": wall, "unet_step_s": statistics.median(unet) if unet else None,
                "unet_calls": len(unet), "unet_batch": self.unet_batch, "text_encoder_s": sum(self.parts.get("text_encoder", [])),
                "vae_decode_s": sum(self.parts.get("vae_decode", []))}

    def warmup(self) -> tuple[dict, float]:
        w = self.run(1)
        rest = w["image_s"] - w["unet_step_s"]
        return w, sum(rest + s * w["unet_step_s"] for s in self.steps)

    def timed(self) -> dict:
        return {str(s): self.run(s) for s in self.steps}

    @staticmethod
    def summarise(runs: list[dict]) -> dict:
        per = {}
        for steps in runs[0]:
            rs = [r[steps] for r in runs]
            per[steps] = {"image_s": median(r["image_s"] for r in rs), "image_all_s": [round(r["image_s"], 3) for r in rs]}
        every = [r for run in runs for r in run.values()]
        return {
            "per_steps": per,
            "unet_step_s": median(r["unet_step_s"] for r in every),
            "unet_calls_per_step": every[0]["unet_calls"] // max(1, every[0]["steps"]),
            "unet_batch": every[0]["unet_batch"],
            "guidance_scale": runs[0][next(iter(runs[0]))]["guidance_scale"],
            "text_encoder_s": median(r["text_encoder_s"] for r in every),
            "vae_decode_s": median(r["vae_decode_s"] for r in every),
        }


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(f"{statistics.median(values):.5g}") if values else None  # 5 significant digits


def make_case(name: str, spec: dict, device: str, dtype: Any, args: argparse.Namespace):
    kind = spec["kind"]
    cfg = spec["config"]
    if kind == "llm":
        return LLMCase(TINY_LLM if args.tiny else cfg, device, dtype, args.prompt_tokens, LLM_NEW_TOKENS)
    if kind == "asr":
        return ASRCase(TINY_WHISPER if args.tiny else cfg, spec["prompt"] if not args.tiny else WHISPER_SMALL_PROMPT,
                       device, dtype, ASR_NEW_TOKENS)
    if args.tiny:
        cfg = dict(TINY_SD, guidance_scale=cfg["guidance_scale"])
    return ImageCase(cfg, device, dtype, 64 if args.tiny else IMAGE_SIZE, IMAGE_STEPS)


def dtype_bytes(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def measure(name: str, args: argparse.Namespace, device: str, dtype: Any) -> dict:
    """Build, warm up, estimate, time: one model. Returns its result (``status`` ok or skipped)."""
    import torch

    spec = MODELS[name]
    entry: dict[str, Any] = {"name": name, "kind": spec["kind"], "source": spec["source"], "tiny": args.tiny,
                             "device": device, "dtype": str(dtype).removeprefix("torch.")}
    release_memory()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    entry["base_rss_mb"] = rss_mb()
    reset_peak_rss()
    case = make_case(name, spec, device, dtype, args)
    params = case.parameters
    entry["parameters"] = params
    weights = params * dtype_bytes(dtype)
    entry["weights_gib"] = round(weights / GiB, 3)
    free = available_bytes(device)
    need = weights * 1.15 + (1.5 * GiB if not args.tiny else 0)  # the weights and working memory
    if free is not None and need > free:
        entry.update(status="skipped", reason=f"needs about {need / GiB:.1f} GiB ({weights / GiB:.1f} GiB of weights "
                     f"in {entry['dtype']} and working memory), {free / GiB:.1f} GiB available on {device}")
        say(f"{name}: skipped: {entry['reason']}")
        return entry
    say(f"{name}: building {_params(params)} parameters in {entry['dtype']} on {device} (random weights)")
    t0 = time.perf_counter()
    case.build()
    sync(device)
    entry["build_s"] = round(time.perf_counter() - t0, 2)
    say(f"{name}: built in {entry['build_s']} s; warm-up run")
    t0 = time.perf_counter()
    warm, per_run = case.warmup()
    entry["warmup_s"] = round(time.perf_counter() - t0, 2)
    entry["estimate_s"] = round(per_run * args.repeats, 1)
    if entry["estimate_s"] > args.max_seconds:
        entry.update(status="skipped", reason=f"{args.repeats} timed runs would take about {entry['estimate_s']:.0f} s "
                     f"(from the warm-up run), over --max-seconds {args.max_seconds:g}")
        say(f"{name}: skipped: {entry['reason']}")
    else:
        say(f"{name}: {args.repeats} timed runs, about {entry['estimate_s']:.0f} s")
        runs = []
        for i in range(args.repeats):
            runs.append(case.timed())
            say(f"{name}: run {i + 1}/{args.repeats} done")
        entry.update(status="ok", repeats=args.repeats, **case.summarise(runs))
    if device == "cuda":
        entry["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / MiB, 1)
        entry["peak_mem_kind"] = "torch.cuda.max_memory_allocated"
    else:
        entry["peak_mem_mb"] = peak_rss_mb()
        entry["peak_mem_kind"] = "peak RSS of the process (VmHWM)"
    del case
    release_memory()
    return entry


def machine(device: str) -> dict:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "cpu_cores": os.cpu_count(), "platform": platform.platform()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / GiB, 1)
    try:
        import diffusers
        import transformers

        info["transformers"] = transformers.__version__
        info["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict:
    import torch

    torch.set_flush_denormal(True)  # random weights must not fall into slow denormal arithmetic on a CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = torch_dtype(device, args.dtype)  # the agent's own rule: float16 on CUDA, float32 on the CPU
    summary: dict[str, Any] = {"device": device, "dtype": str(dtype).removeprefix("torch."), "tiny": args.tiny,
                               "repeats": args.repeats, "max_seconds": args.max_seconds,
                               "prompt_tokens": args.prompt_tokens, "llm_new_tokens": LLM_NEW_TOKENS,
                               "asr_audio_s": ASR_AUDIO_S, "asr_new_tokens": ASR_NEW_TOKENS,
                               "image_size": 64 if args.tiny else IMAGE_SIZE, "image_steps": list(IMAGE_STEPS),
                               "statistic": "median over the timed runs", "machine": machine(device),
                               "load_average_before": load_average(), "weights": "random (built from config); "
                               "outputs are meaningless and never shown"}
    models = []
    for name in args.only or list(MODELS):
        models.append(measure(name, args, device, dtype))
    summary["models"] = models
    summary["load_average_after"] = load_average()
    return summary


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _mem(entry: dict) -> str:
    mb = entry.get("peak_mem_mb")
    return "" if mb is None else (f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB")


def result_text(e: dict) -> str:
    if e["status"] != "ok":
        return f"skipped: {e['reason']}"
    if e["kind"] == "llm":
        return (f"{e['new_tokens']} tokens: {e['decode_tok_s']:.1f} tok/s decoding, {e['overall_tok_s']:.1f} overall; "
                f"first token {e['first_token_s']:.2f} s")
    if e["kind"] == "asr":
        return (f"30 s of audio: encoder {e['encoder_s']:.2f} s + {e['new_tokens']} tokens {e['decode_s']:.2f} s; "
                f"RTF {e['rtf']:.3f}")
    steps = ", ".join(f"{s} step{'s' if s != '1' else ''} {v['image_s']:.2f} s" for s, v in e["per_steps"].items())
    return (f"{steps} per image (UNet step {e['unet_step_s']:.2f} s, VAE decode {e['vae_decode_s']:.2f} s, "
            f"text {e['text_encoder_s']:.2f} s)")


def markdown_table(summary: dict) -> str:
    m = summary["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    lines = [f"{summary['device']} ({where}), {summary['dtype']}, median of {summary['repeats']}, "
             f"load average {summary['load_average_before']} before, {summary['load_average_after']} after",
             "", "| model | parameters | result | peak memory |", "|---|---|---|---|"]
    for e in summary["models"]:
        lines.append(f"| {e['name']} | {_params(e['parameters'])} | {result_text(e)} | {_mem(e)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                        help="auto: float32 on CPU, float16 on CUDA")
    parser.add_argument("--only", nargs="+", choices=list(MODELS), metavar="NAME",
                        help=f"these models only: {', '.join(MODELS)}")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="skip a model whose timed runs would take longer than this (estimated from a warm-up run)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (median reported)")
    parser.add_argument("--prompt-tokens", type=int, default=256, help="LLM prompt length (random token ids)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core); on a CPU "
                        "shared with other work, 1 thread avoids waiting at every operation for a descheduled one")
    parser.add_argument("--tiny", action="store_true", help="tiny configs of the same classes (for tests)")
    parser.add_argument("--json", action="store_true", help="print only one JSON object on stdout")
    parser.add_argument("--results-dir", type=Path, help="write the results JSON here instead of bench/results/")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print the table of a results file and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(json.loads(args.markdown.read_text())))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    summary = run(args)
    from results_io import save_results

    name = f"sizes_{summary['device']}" + ("_tiny" if args.tiny else "") + "".join(f"_{n}" for n in args.only or [])
    name += f"_threads{args.threads}" if args.threads else ""
    path = save_results(name, summary, as_json=args.json, folder=args.results_dir)
    say(f"results: {path}")
    if not args.json:
        print(markdown_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
