"""Configuration of the embedded prior's training recipe (:mod:`stemob.priors.train`).

Config keys (JSON; every key optional, defaults in :class:`PriorConfig` / :class:`PhaseConfig`):
    seed: seed of model init, data and noise.
    vae: AutoencoderKL constructor arguments (e.g. block_out_channels, layers_per_block,
        norm_num_groups, latent_channels).
    unet: UNet2DModel constructor arguments (in/out channels must equal the VAE's latent channels).
    vae_phase, unet_phase: phase settings, see :class:`PhaseConfig`.
    kl_weight, l1_weight, mse_weight: VAE loss weights.
    scale_images, scale_image_size: images used to measure the latent std (scaling_factor).
    eval_images, eval_size, eval_seed: held-out procedural images for the reconstruction PSNR.
    checkpoint_minutes: how often the training state is saved.
    log_every: steps between CSV rows.
    user_image_fraction: share of each batch drawn from ``--images`` (when given).
    tabletop_fraction: share of each batch drawn from a pool of tabletop-suite renders (0: none).
    tabletop_episodes, tabletop_frames_per_episode, tabletop_seed: the render pool: episodes of
        random tasks and reset seeds, each run for a random number of steps (scripted expert mixed
        with random actions) and captured at random steps from every camera in ``tabletop_cameras``
        at ``tabletop_image_size`` px. It is rendered once (about 2 minutes) and cached in the work
        dir (``renders_train.npz``), outside the phases' time budgets.
    tabletop_perturbation: perturbation YAML of the pool; every ``texture_pool`` is forced to
        ``train`` (the ``eval`` pool is never used for training).
    eval_render_episodes, eval_render_seed: held-out renders with every ``texture_pool`` forced to
        ``eval`` (other reset seeds) for the PSNR/SSIM in the summary (0: none).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stemob.errors import StemobError

DEFAULT_VAE = {
    "block_out_channels": [32, 64, 128],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "sample_size": 96,
}

DEFAULT_UNET = {
    "block_out_channels": [64, 128, 128],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 16,
    "in_channels": 4,
    "out_channels": 4,
    "sample_size": 24,
}


class ConfigError(StemobError):
    """A prior training config is invalid (names the key and what was expected)."""


@dataclass
class PhaseConfig:
    """Settings of one training phase.

    Attributes:
        minutes: time budget of the phase (wall clock, including data generation).
        max_steps: stop after this many optimiser steps (``None``: only the time budget).
        batch_size: images per step.
        image_size: side of the generated (or user) training images.
        crop_size: random square crop taken from each image (``None``: no crop).
        lr: peak AdamW learning rate (linear warm-up, then cosine decay to ``min_lr_ratio * lr``
            over the phase's steps or time, whichever runs out first).
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        warmup_steps: steps of linear learning-rate warm-up.
        weight_decay: AdamW weight decay.
        grad_clip: max gradient norm (0 disables clipping).
        bf16: run forward/backward under CPU bfloat16 autocast (about 1.8x faster here).
    """

    minutes: float = 10.0
    max_steps: int | None = None
    batch_size: int = 8
    image_size: int = 64
    crop_size: int | None = None
    lr: float = 5e-4
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    bf16: bool = True

    def __post_init__(self) -> None:
        if self.minutes < 0 or (self.max_steps is not None and self.max_steps < 0):
            raise ConfigError(
                f"phase minutes and max_steps must be >= 0, got {self.minutes}, {self.max_steps}"
            )
        if self.batch_size < 1 or self.image_size < 8:
            raise ConfigError(
                f"batch_size >= 1 and image_size >= 8 expected, got {self.batch_size}, {self.image_size}"
            )
        if self.crop_size is not None and not 8 <= self.crop_size <= self.image_size:
            raise ConfigError(
                f"crop_size must be None or in [8, image_size={self.image_size}], got {self.crop_size}"
            )
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                f"lr > 0 and 0 <= min_lr_ratio <= 1 expected, got {self.lr}, {self.min_lr_ratio}"
            )


@dataclass
class PriorConfig:
    """The whole recipe (see the module docstring for the keys)."""

    seed: int = 0
    vae: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_VAE))
    unet: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_UNET))
    vae_phase: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(minutes=22.0, crop_size=48, lr=8e-4)
    )
    unet_phase: PhaseConfig = field(
        default_factory=lambda: PhaseConfig(minutes=12.0, batch_size=32, lr=3e-4)
    )
    kl_weight: float = 1e-6
    l1_weight: float = 1.0
    mse_weight: float = 1.0
    scale_images: int = 256
    scale_image_size: int = 64
    eval_images: int = 64
    eval_size: int = 96
    eval_seed: int = 12345
    checkpoint_minutes: float = 2.0
    log_every: int = 10
    user_image_fraction: float = 0.5
    tabletop_fraction: float = 0.0
    tabletop_episodes: int = 300
    tabletop_frames_per_episode: int = 5
    tabletop_seed: int = 100_000
    tabletop_perturbation: str = "configs/perturbation/all.yaml"
    tabletop_image_size: int = 96
    tabletop_cameras: tuple[str, ...] = ("front", "wrist", "overhead")
    eval_render_episodes: int = 0
    eval_render_seed: int = 900_000

    def __post_init__(self) -> None:
        for name in ("vae_phase", "unet_phase"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _from_dict(PhaseConfig, value, name))
        if not 0.0 <= self.tabletop_fraction <= 1.0:
            raise ConfigError(f"tabletop_fraction must be in [0, 1], got {self.tabletop_fraction}")
        self.tabletop_cameras = tuple(self.tabletop_cameras)
        if not 0.0 <= self.user_image_fraction <= 1.0:
            raise ConfigError(
                f"user_image_fraction must be in [0, 1], got {self.user_image_fraction}"
            )
        if self.scale_images < 1 or self.eval_images < 1 or self.log_every < 1:
            raise ConfigError("scale_images, eval_images and log_every must be >= 1")

    def phase(self, name: str) -> PhaseConfig:
        """The settings of phase ``name`` (``vae`` or ``unet``)."""
        return self.vae_phase if name == "vae" else self.unet_phase


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(names)}")
    return cls(**data)


def load_config(path: str | Path) -> PriorConfig:
    """Read and validate a JSON recipe (keys starting with ``_`` are comments)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read prior config {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    data = {k: v for k, v in data.items() if not k.startswith("_")}
    return _from_dict(PriorConfig, data, str(path))
