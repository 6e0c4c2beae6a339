"""Build diffusers model folders from configs (randomly initialised), for tests and benchmarks.

Presets:
    ``tiny``: a small SD-like model (AutoencoderKL with 4x downsampling, text-conditioned
        UNet2DConditionModel, a two-layer CLIP text encoder and tokenizer) that loads in well under a
        second; the test suite inverts with it.
    ``tiny-uncond``: the same VAE with an unconditional UNet2DModel (the shape of the embedded prior).
    ``sd21``: Stable Diffusion 2.1's VAE and scheduler configs (the UNet only with ``with_unet``),
        with random weights: timing on a real-sized model without downloading it.

Example: ``python -m stemob.inversion.model_builder sd21 /tmp/sd21-shaped``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SD_SCHEDULER = {  # Stable Diffusion 2.1's scheduler/scheduler_config.json
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

SD21_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}

SD21_UNET = {
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "sample_size": 96,
    "use_linear_projection": True,
}

TINY_VAE = {
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 1.0,
}

TINY_COND_UNET = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 16,
}

TINY_UNCOND_UNET = {
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 16,
}

TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "vocab_size": 3,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

PRESETS = ("tiny", "tiny-uncond", "sd21")


def build_model_folder(
    path: str | Path, preset: str = "tiny", *, seed: int = 0, with_unet: bool = True
) -> Path:
    """Write a randomly initialised diffusers folder of the given preset to ``path`` and return it."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {PRESETS}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vae_config = SD21_VAE if preset == "sd21" else TINY_VAE
    AutoencoderKL(**vae_config).save_pretrained(folder / "vae")
    DDIMScheduler.from_config(SD_SCHEDULER).save_pretrained(folder / "scheduler")
    components = {
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    if with_unet and preset == "tiny-uncond":
        UNet2DModel(**TINY_UNCOND_UNET).save_pretrained(folder / "unet")
        components["unet"] = ["diffusers", "UNet2DModel"]
    elif with_unet:
        UNet2DConditionModel(**(SD21_UNET if preset == "sd21" else TINY_COND_UNET)).save_pretrained(
            folder / "unet"
        )
        components["unet"] = ["diffusers", "UNet2DConditionModel"]
        if preset == "tiny":
            _write_tiny_text_encoder(folder)
            components["text_encoder"] = ["transformers", "CLIPTextModel"]
            components["tokenizer"] = ["transformers", "CLIPTokenizer"]
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0", **components}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def _write_tiny_text_encoder(folder: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    CLIPTextModel(CLIPTextConfig(**TINY_TEXT)).save_pretrained(folder / "text_encoder")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    (tokenizer_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "pad_token": "!",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", choices=PRESETS)
    parser.add_argument("path")
    parser.add_argument("--no_unet", action="store_true", help="write only the VAE and scheduler")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_model_folder(args.path, args.preset, seed=args.seed, with_unet=not args.no_unet))


if __name__ == "__main__":
    main()
