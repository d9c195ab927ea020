"""Build a tiny, randomly initialised Stable Diffusion pipeline entirely offline.

The components mirror diffusers' own test fixtures (``get_dummy_components``): a two-block
UNet, a two-block VAE, a 32-wide CLIP text encoder and a CLIP BPE tokenizer whose vocabulary
(the 256 byte symbols, each also as an end-of-word token, plus the two special tokens) is
built here instead of being downloaded. The weights are random, so the "pictures" are
meaningless -- the point is to run the real diffusers code path (from_pretrained, scheduler,
denoising loop, callbacks, VAE decode) in well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: one printable symbol per byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_tiny_tokenizer():
    """A real CLIP tokenizer (byte-level BPE, no merges) built from an in-memory vocabulary."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for sym in _byte_symbols():
        vocab.setdefault(sym, len(vocab))
        vocab.setdefault(sym + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_pipeline(out_dir: Path):
    """Create a tiny random StableDiffusionPipeline, save it to ``out_dir`` and return the folder.

    ``AutoPipelineForText2Image.from_pretrained(out_dir)`` loads it back.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    tokenizer = build_tiny_tokenizer()

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":  # quick manual check: python tests/tiny_pipeline.py /tmp/tiny-sd
    import sys
    import time

    t0 = time.perf_counter()
    path = build_tiny_pipeline(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-sd"))
    print(f"built {path} in {time.perf_counter() - t0:.2f}s")
