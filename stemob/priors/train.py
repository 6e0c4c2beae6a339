"""Training recipe of the embedded prior: a small AutoencoderKL, then an unconditional UNet2DModel.

Run::

    python -m stemob.priors.train --config configs/prior/embedded.json \
        [--out stemob/priors/embedded] [--work_dir runs/prior] [--minutes M] [--resume]

Fine-tune on your own frames (starts from an existing diffusers folder, mixes in procedural images)::

    python -m stemob.priors.train --config configs/prior/finetune.json \
        --init_from stemob/priors/embedded --images my_frames/ --out my_prior --work_dir runs/ft

Phase 1 trains the VAE (4 latent channels, 4x down-sampling) on procedural images mixed with
renders of the tabletop suite (share ``tabletop_fraction``; ``train`` texture pool only) with
L1 + MSE reconstruction loss and a tiny KL weight. Then the VAE's ``scaling_factor`` is set to
1 / std of the latents (``latent_dist.mode()``) of ``scale_images`` procedural images. Phase 2
trains the UNet on the scaled latents (``latent_dist.sample()``) of the same mix with epsilon prediction under
Stable Diffusion's scaled-linear schedule (1000 steps, betas 0.00085..0.012). Each phase stops
at its ``max_steps`` or its time budget, whichever comes first; ``--resume`` continues each
phase to its (possibly raised) limits. The result is written atomically as a diffusers folder in
float16 (``vae/``, ``unet/``, ``scheduler/``, ``model_index.json``, ``training_summary.json``);
a ``README.md`` and a ``samples.png`` already in ``--out`` are kept. To train longer later, raise
the budgets (``--minutes`` or the config) and pass ``--resume``: each phase continues from its
saved step (the ``scaling_factor`` measured after the first VAE phase is kept).

Work dir: ``state.pt`` (models, optimisers, steps, seconds, torch RNG; saved atomically every
``checkpoint_minutes`` and at the end of each phase; loaded with ``weights_only=True``) and
``loss_log.csv`` (phase, step, seconds, loss, l1, mse, kl, lr). Batches are a pure function of
(seed, phase, step), so a resumed run sees the same data as an uninterrupted one.

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

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stemob.errors import StemobError
from stemob.inversion.media import IMAGE_SUFFIXES
from stemob.inversion.model_builder import SD_SCHEDULER
from stemob.priors.procedural import procedural_batch

PHASES = ("vae", "unet")
PHASE_IDS = {"vae": 1, "unet": 2, "scale": 7, "user": 11}
STATE_FILE = "state.pt"
LOG_FILE = "loss_log.csv"
LOG_COLUMNS = ("phase", "step", "seconds", "loss", "l1", "mse", "kl", "lr")
# the shipped scheduler: Stable Diffusion's scaled-linear schedule, with epsilon prediction
SCHEDULER_CONFIG = {
    **{k: v for k, v in SD_SCHEDULER.items() if k != "skip_prk_steps"},
    "prediction_type": "epsilon",
}

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


# ----------------------------------------------------------------------------------------- data


class UserImages:
    """Frames from a folder (recursively), kept in memory with the short side at ``2 * size``."""

    def __init__(self, folder: str | Path, size: int, limit: int = 5000) -> None:
        from PIL import Image

        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(
                f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found"
            )
        self.images: list[np.ndarray] = []
        for path in files[:limit]:
            with Image.open(path) as image:
                image = image.convert("RGB")
                scale = 2 * size / min(image.size)
                if scale < 1:
                    image = image.resize(
                        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.BILINEAR,
                    )
                self.images.append(np.asarray(image))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A random square crop (random scale) resized to ``size``: float32 (size, size, 3) in [0, 1]."""
        from PIL import Image

        image = self.images[int(rng.integers(len(self.images)))]
        h, w = image.shape[:2]
        side = int(rng.integers(max(1, min(h, w) // 2), min(h, w) + 1))
        y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(image[y : y + side, x : x + side]).resize(
            (size, size), Image.BILINEAR
        )
        out = np.asarray(crop, dtype=np.float32) / 255.0
        return out[:, ::-1] if rng.random() < 0.5 else out


def training_batch(
    seed: int,
    phase: str,
    step: int,
    cfg: PhaseConfig,
    user: UserImages | None = None,
    user_fraction: float = 0.0,
    renders: np.ndarray | None = None,
    render_fraction: float = 0.0,
) -> torch.Tensor:
    """The batch of step ``step`` of ``phase``: (B, 3, S, S) float in [-1, 1], a pure function of its inputs.

    ``renders`` (uint8 (N, R, R, 3), R >= the output side) are drawn with share ``render_fraction``
    (random crops to the output side, random horizontal flips).
    """
    rng = np.random.default_rng([seed, PHASE_IDS[phase], step])
    n_user = int(rng.binomial(cfg.batch_size, user_fraction)) if user is not None else 0
    n_render = 0
    if renders is not None and len(renders) and render_fraction > 0:
        n_render = int(rng.binomial(cfg.batch_size - n_user, render_fraction))
    images = procedural_batch(
        rng, cfg.batch_size - n_user - n_render, cfg.image_size, as_float=True
    )
    if n_user:
        extra = np.stack([user.sample(rng, cfg.image_size) for _ in range(n_user)]) * 2.0 - 1.0
        images = np.concatenate([images, extra.astype(np.float32)])
    side = cfg.crop_size if cfg.crop_size is not None else cfg.image_size
    if cfg.crop_size is not None and cfg.crop_size < cfg.image_size:
        images = _crop_batch(images, cfg.crop_size, rng)
    if n_render:
        picked = renders[rng.integers(0, len(renders), size=n_render)]
        picked = _crop_batch(picked, min(side, picked.shape[1]), rng)
        flips = rng.random(n_render) < 0.5
        picked = np.where(flips[:, None, None, None], picked[:, :, ::-1], picked)
        picked = picked.astype(np.float32) / 127.5 - 1.0
        if picked.shape[1] != side:
            raise ConfigError(
                f"renders of {picked.shape[1]} px are smaller than the {side} px batch"
            )
        images = np.concatenate([images, picked])
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


# ------------------------------------------------------------------------------ tabletop renders

TABLETOP_TASKS = ("lift_cube", "push_to_target", "open_drawer", "put_in_bowl")


def perturbation_with_pool(source: str | Path | dict, pool: str) -> dict:
    """The perturbation config ``source`` (YAML path or dict) with every ``texture_pool`` set to ``pool``."""
    import yaml

    if isinstance(source, dict):
        cfg = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():  # relative to the repository root when run from elsewhere
            path = Path(__file__).resolve().parents[2] / source
        try:
            cfg = yaml.safe_load(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read tabletop_perturbation {source}: {error}") from error
    for factor in cfg.get("env", {}).get("scene", {}).get("factors", []):
        if "texture_pool" in factor or factor.get("variation", "").endswith("texture"):
            factor["texture_pool"] = pool
    return cfg


def render_tabletop(
    seed: int,
    episodes: int,
    frames_per_episode: int,
    *,
    pool: str = "train",
    perturbation: str | Path | dict = "configs/perturbation/all.yaml",
    image_size: int = 96,
    cameras: tuple[str, ...] = ("front", "wrist", "overhead"),
    expert_prob: float = 0.8,
    progress: bool = True,
) -> np.ndarray:
    """Renders of the tabletop suite: uint8 (N, S, S, 3), N = episodes * frames_per_episode * cameras.

    Episode ``i`` runs a random task from ``reset(seed=seed + i)`` for a random number of steps
    (each step the scripted expert's action with probability ``expert_prob``, else a random
    action) and captures every camera at ``frames_per_episode`` random steps. All factors of
    ``perturbation`` are applied, with every ``texture_pool`` forced to ``pool``.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import envs  # registers the gymnasium ids

    cfg = perturbation_with_pool(perturbation, pool)
    rng = np.random.default_rng([seed, 21])
    made: dict[str, Any] = {}
    frames: list[np.ndarray] = []
    for episode in tqdm(
        range(episodes), desc=f"render {pool}", disable=not progress, mininterval=5
    ):
        task = TABLETOP_TASKS[int(rng.integers(len(TABLETOP_TASKS)))]
        if task not in made:
            made[task] = gym.make(
                envs.GYM_IDS[task], perturbation=cfg, image_size=image_size, cameras=cameras
            )
        env = made[task]
        obs, _ = env.reset(seed=seed + episode)
        expert = env.unwrapped.task.make_expert(env)
        limit = int(env.unwrapped.task.max_episode_steps)
        length = int(rng.integers(0, limit))
        captures = set(
            rng.choice(length + 1, size=min(frames_per_episode, length + 1), replace=False).tolist()
        )
        for step in range(length + 1):
            if step in captures:
                frames.extend(obs[f"{camera}_image"] for camera in cameras)
            if step == length:
                break
            if rng.random() < expert_prob:
                action = expert.act()
            else:
                space = env.action_space  # drawn from rng (not the space's own RNG): reproducible
                action = rng.uniform(space.low, space.high) * rng.uniform(0.2, 1.0)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                frames.extend(obs[f"{camera}_image"] for camera in cameras)
                break
    for env in made.values():
        env.close()
    return np.stack(frames).astype(np.uint8)


def cached_renders(work_dir: Path, name: str, **kwargs: Any) -> np.ndarray:
    """:func:`render_tabletop` with ``kwargs``, cached in ``work_dir/renders_<name>.npz``."""
    key = json.dumps(kwargs, sort_keys=True, default=str)
    path = work_dir / f"renders_{name}.npz"
    if path.exists():
        with np.load(path) as data:
            if str(data["key"]) == key:
                return data["images"]
    images = render_tabletop(**kwargs)
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=images, key=np.array(key))
    os.replace(tmp, path)
    return images


def _crop_batch(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(images) == 0 or (images.shape[1] == size and images.shape[2] == size):
        return images[:, :size, :size]
    offsets = rng.integers(
        0, [images.shape[1] - size + 1, images.shape[2] - size + 1], size=(len(images), 2)
    )
    return np.stack(
        [im[y : y + size, x : x + size] for im, (y, x) in zip(images, offsets, strict=True)]
    )


# --------------------------------------------------------------------------------------- models


def build_vae(arch: dict[str, Any]) -> torch.nn.Module:
    """A fresh AutoencoderKL from constructor arguments or a saved config."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_config(arch)


def build_unet(arch: dict[str, Any]) -> torch.nn.Module:
    """A fresh unconditional UNet2DModel from constructor arguments or a saved config."""
    from diffusers import UNet2DModel

    return UNet2DModel.from_config(arch)


def noise_scheduler() -> Any:
    """The training noise schedule (DDPM form of :data:`SCHEDULER_CONFIG`)."""
    from diffusers import DDPMScheduler

    keys = (
        "beta_start",
        "beta_end",
        "beta_schedule",
        "num_train_timesteps",
        "prediction_type",
        "clip_sample",
    )
    return DDPMScheduler(**{k: SCHEDULER_CONFIG[k] for k in keys})


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def measure_latent_std(vae: torch.nn.Module, images: torch.Tensor, chunk: int = 32) -> float:
    """Standard deviation of the VAE's latent modes over ``images`` ((N, 3, H, W) in [-1, 1])."""
    vae.eval()
    latents = [
        vae.encode(images[i : i + chunk]).latent_dist.mode() for i in range(0, len(images), chunk)
    ]
    return float(torch.cat(latents).float().std())


@torch.no_grad()
def reconstruction_psnr(vae: torch.nn.Module, images: torch.Tensor, chunk: int = 16) -> float:
    """Mean per-image PSNR (dB, images in [0, 1]) of encode(mode) -> decode on ``images`` in [-1, 1]."""
    vae.eval()
    values = []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        mse = (((rec - x) / 2.0) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        values.append(10.0 * torch.log10(1.0 / mse))
    return float(torch.cat(values).mean())


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of (N, 3, H, W) images in [0, 1] (Gaussian window 11, sigma 1.5, channel mean)."""
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, window, groups=3)

    a, b = a.float(), b.float()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return value.mean(dim=(1, 2, 3))


@torch.no_grad()
def reconstruction_metrics(
    vae: torch.nn.Module, images: torch.Tensor, chunk: int = 16
) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of encode(mode) -> decode on ``images`` in [-1, 1]."""
    vae.eval()
    psnr, sim = [], []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        mse = (((rec - x) / 2.0) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        psnr.append(10.0 * torch.log10(1.0 / mse))
        sim.append(ssim((rec + 1) / 2, (x + 1) / 2))
    return {"psnr_db": float(torch.cat(psnr).mean()), "ssim": float(torch.cat(sim).mean())}


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) to float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0)


def eval_renders(config: PriorConfig, work_dir: Path | None = None) -> np.ndarray:
    """Held-out tabletop renders (uint8): ``eval`` texture pool, reset seeds of their own."""
    kwargs: dict[str, Any] = {
        "seed": config.eval_render_seed,
        "episodes": config.eval_render_episodes,
        "frames_per_episode": 2,
        "pool": "eval",
        "perturbation": config.tabletop_perturbation,
        "image_size": config.tabletop_image_size,
        "cameras": tuple(config.tabletop_cameras),
    }
    if work_dir is None:
        return render_tabletop(**kwargs)
    return cached_renders(work_dir, "eval", **kwargs)


def eval_images(config: PriorConfig) -> torch.Tensor:
    """The held-out procedural images (never seen in training: their own seed)."""
    images = procedural_batch(
        [config.eval_seed, 999], config.eval_images, config.eval_size, as_float=True
    )
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


# -------------------------------------------------------------------------------------- trainer


def _lr_at(cfg: PhaseConfig, step: int, seconds: float) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    fractions = [seconds / (cfg.minutes * 60.0)] if cfg.minutes > 0 else [1.0]
    if cfg.max_steps:
        fractions.append(step / cfg.max_steps)
    frac = min(1.0, max(fractions))
    cosine = 0.5 * (1.0 + math.cos(math.pi * frac))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


class PriorTrainer:
    """Owns the models, optimisers, counters and work dir of one (resumable) training run."""

    def __init__(
        self,
        config: PriorConfig,
        work_dir: str | Path,
        *,
        init_from: str | Path | None = None,
        images: str | Path | None = None,
    ) -> None:
        self.config = config
        self.work_dir = Path(work_dir)
        self.user = UserImages(images, config.vae_phase.image_size) if images else None
        self.renders: np.ndarray | None = None
        if config.tabletop_fraction > 0:
            self.renders = cached_renders(
                self.work_dir,
                "train",
                seed=config.tabletop_seed,
                episodes=config.tabletop_episodes,
                frames_per_episode=config.tabletop_frames_per_episode,
                pool="train",
                perturbation=config.tabletop_perturbation,
                image_size=config.tabletop_image_size,
                cameras=tuple(config.tabletop_cameras),
            )
        self.counters: dict[str, float] = {
            "vae_step": 0,
            "vae_seconds": 0.0,
            "unet_step": 0,
            "unet_seconds": 0.0,
            "vae_loss": float("nan"),
            "unet_loss": float("nan"),
            "scaling_factor": 0.0,
        }
        torch.manual_seed(config.seed)
        self.vae, self.unet = self._initial_models(init_from)
        self.optimizers = {name: self._optimizer(name) for name in PHASES}

    def _initial_models(
        self, init_from: str | Path | None
    ) -> tuple[torch.nn.Module, torch.nn.Module]:
        if init_from is None:
            return build_vae(self.config.vae), build_unet(self.config.unet)
        from diffusers import AutoencoderKL, UNet2DModel

        folder = Path(init_from)
        if not (folder / "vae" / "config.json").is_file():
            raise ConfigError(
                f"--init_from {folder}: expected a diffusers folder with vae/config.json"
            )
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
        self.counters["scaling_factor"] = float(
            vae.config.scaling_factor
        )  # keep it: the UNet was trained on it
        if (folder / "unet" / "config.json").is_file():
            unet = UNet2DModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
        else:
            unet = build_unet(self.config.unet)
        return vae, unet

    def model(self, phase: str) -> torch.nn.Module:
        """The model trained in ``phase``."""
        return self.vae if phase == "vae" else self.unet

    def _optimizer(self, phase: str) -> torch.optim.Optimizer:
        cfg = self.config.phase(phase)
        return torch.optim.AdamW(
            self.model(phase).parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )

    # ---- state
    @property
    def state_path(self) -> Path:
        return self.work_dir / STATE_FILE

    def save_state(self) -> None:
        """Write models, optimisers, counters and the torch RNG to ``state.pt`` atomically."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "vae_arch": json.dumps(dict(self.vae.config), default=str),
            "unet_arch": json.dumps(dict(self.unet.config), default=str),
            "vae": self.vae.state_dict(),
            "unet": self.unet.state_dict(),
            "vae_opt": self.optimizers["vae"].state_dict(),
            "unet_opt": self.optimizers["unet"].state_dict(),
            "counters": dict(self.counters),
            "torch_rng": torch.get_rng_state(),
        }
        tmp = self.state_path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)

    def load_state(self) -> None:
        """Restore everything :meth:`save_state` wrote (architecture included)."""
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.vae = build_vae(json.loads(state["vae_arch"]))
        self.unet = build_unet(json.loads(state["unet_arch"]))
        self.vae.load_state_dict(state["vae"])
        self.unet.load_state_dict(state["unet"])
        self.optimizers = {name: self._optimizer(name) for name in PHASES}
        for name in PHASES:
            self.optimizers[name].load_state_dict(state[f"{name}_opt"])
        self.counters.update(state["counters"])
        torch.set_rng_state(state["torch_rng"])
        _trim_log(self.work_dir / LOG_FILE, {p: int(self.counters[f"{p}_step"]) for p in PHASES})

    # ---- losses
    def _vae_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.vae_phase.bf16):
            posterior = self.vae.encode(x).latent_dist
            rec = self.vae.decode(posterior.sample()).sample
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = posterior.kl().float().mean()
        loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
        return loss, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}

    def _unet_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        bf16 = self.config.unet_phase.bf16
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            latents = self.vae.encode(x).latent_dist.sample()
        latents = latents.float() * self.counters["scaling_factor"]
        noise = torch.randn_like(latents)
        t = torch.randint(0, self._scheduler.config.num_train_timesteps, (len(latents),))
        noisy = self._scheduler.add_noise(latents, noise, t)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = self.unet(noisy, t).sample
        mse = ((pred.float() - noise) ** 2).mean()
        return mse, {"l1": float("nan"), "mse": mse.item(), "kl": float("nan")}

    # ---- loop
    def run_phase(self, phase: str) -> None:
        """Train ``phase`` until its max_steps or time budget; checkpoint on the way and at the end."""
        cfg = self.config.phase(phase)
        model, optimizer = self.model(phase), self.optimizers[phase]
        loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
        loss_fn = self._vae_loss if phase == "vae" else self._unet_loss
        if phase == "unet":
            self._scheduler = noise_scheduler()
            self.vae.eval().requires_grad_(False)
        model.train().requires_grad_(True)
        step, seconds = (
            int(self.counters[f"{phase}_step"]),
            float(self.counters[f"{phase}_seconds"]),
        )
        budget = cfg.minutes * 60.0
        rows: list[list[Any]] = []
        last_save = time.monotonic()
        bar = tqdm(
            total=cfg.max_steps, initial=step, desc=f"{phase}", mininterval=2.0, dynamic_ncols=True
        )
        while seconds < budget and (cfg.max_steps is None or step < cfg.max_steps):
            start = time.monotonic()
            x = training_batch(
                self.config.seed,
                phase,
                step,
                cfg,
                self.user,
                self.config.user_image_fraction,
                self.renders,
                self.config.tabletop_fraction,
            )
            lr = _lr_at(cfg, step, seconds)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, parts = loss_fn(x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            loss_value = loss.item()
            step += 1
            seconds += time.monotonic() - start
            self.counters.update(
                {f"{phase}_step": step, f"{phase}_seconds": seconds, f"{phase}_loss": loss_value}
            )
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_value:.4f}", min=f"{seconds / 60:.1f}/{cfg.minutes:.1f}", refresh=False
            )
            if step % self.config.log_every == 0:
                rows.append(
                    [
                        phase,
                        step,
                        round(seconds, 2),
                        loss_value,
                        parts["l1"],
                        parts["mse"],
                        parts["kl"],
                        lr,
                    ]
                )
            if time.monotonic() - last_save >= self.config.checkpoint_minutes * 60.0:
                self._checkpoint(rows)
                last_save = time.monotonic()
        bar.close()
        self._checkpoint(rows)
        model.eval().requires_grad_(False)

    def _checkpoint(self, rows: list[list[Any]]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _append_log(self.work_dir / LOG_FILE, rows)
        rows.clear()
        self.save_state()

    def measure_scaling(self) -> float:
        """Set the VAE's scaling_factor to 1 / std of latent modes of procedural images (once)."""
        if self.counters["scaling_factor"] <= 0:
            cfg = self.config
            images = procedural_batch(
                [cfg.seed, PHASE_IDS["scale"]],
                cfg.scale_images,
                cfg.scale_image_size,
                as_float=True,
            )
            std = measure_latent_std(
                self.vae, torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
            )
            self.counters["scaling_factor"] = 1.0 / max(std, 1e-6)
            self.save_state()
        self.vae.register_to_config(scaling_factor=float(self.counters["scaling_factor"]))
        return float(self.counters["scaling_factor"])


def _append_log(path: Path, rows: list[list[Any]]) -> None:
    if not rows:
        return
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(LOG_COLUMNS)
        writer.writerows(rows)


def _trim_log(path: Path, steps: dict[str, int]) -> None:
    """Drop log rows written after the last saved state (so a resumed run does not duplicate them)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [
        r for r in rows[1:] if len(r) >= 2 and r[0] in steps and int(r[1]) <= steps[r[0]]
    ]
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------- export


def export_folder(trainer: PriorTrainer, out: str | Path, summary: dict[str, Any]) -> Path:
    """Write the float16 diffusers folder to ``out`` atomically; returns it. Adds the PSNR to ``summary``."""
    from diffusers import AutoencoderKL, DDIMScheduler

    out = Path(out).resolve()
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    copy.deepcopy(trainer.vae).to(torch.float16).save_pretrained(
        tmp / "vae", safe_serialization=True
    )
    copy.deepcopy(trainer.unet).to(torch.float16).save_pretrained(
        tmp / "unet", safe_serialization=True
    )
    DDIMScheduler.from_config(SCHEDULER_CONFIG).save_pretrained(tmp / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    shipped = AutoencoderKL.from_pretrained(tmp, subfolder="vae", torch_dtype=torch.float32)
    summary["eval_psnr_db"] = round(reconstruction_psnr(shipped, eval_images(trainer.config)), 3)
    if trainer.config.eval_render_episodes > 0:
        renders = eval_renders(trainer.config, trainer.work_dir)
        metrics = reconstruction_metrics(shipped, to_tensor(renders))
        summary["eval_renders"] = len(renders)
        summary["eval_render_psnr_db"] = round(metrics["psnr_db"], 3)
        summary["eval_render_ssim"] = round(metrics["ssim"], 4)
    summary["weights_bytes"] = sum(p.stat().st_size for p in tmp.rglob("*.safetensors"))
    (tmp / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for keep in ("README.md", "samples.png"):
        if (out / keep).is_file():
            shutil.copy2(out / keep, tmp / keep)
    old = out.parent / f".{out.name}.old{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _summary(
    trainer: PriorTrainer, init_from: str | Path | None, images: str | Path | None
) -> dict[str, Any]:
    c = trainer.counters
    return {
        "version": "v1" if init_from is None else "fine-tuned",
        "init_from": str(init_from) if init_from else None,
        "user_images": str(images) if images else None,
        "vae_steps": int(c["vae_step"]),
        "vae_minutes": round(c["vae_seconds"] / 60, 2),
        "vae_final_loss": c["vae_loss"],
        "unet_steps": int(c["unet_step"]),
        "unet_minutes": round(c["unet_seconds"] / 60, 2),
        "unet_final_loss": c["unet_loss"],
        "scaling_factor": c["scaling_factor"],
        "vae_parameters": count_parameters(trainer.vae),
        "unet_parameters": count_parameters(trainer.unet),
        "eval": f"{trainer.config.eval_images} held-out procedural images at {trainer.config.eval_size}x{trainer.config.eval_size}",
        "tabletop_renders": 0 if trainer.renders is None else len(trainer.renders),
        "torch_threads": torch.get_num_threads(),
        "config": dataclasses.asdict(trainer.config),
    }


def train(
    config: PriorConfig,
    out: str | Path,
    work_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    minutes: float | None = None,
    init_from: str | Path | None = None,
    images: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) both phases and export the folder; returns the training summary."""
    if minutes is not None:  # split a total budget over the phases in the config's proportions
        total = config.vae_phase.minutes + config.unet_phase.minutes
        for cfg in (config.vae_phase, config.unet_phase):
            cfg.minutes = minutes * (cfg.minutes / total if total > 0 else 0.5)
    work = Path(work_dir)
    if (work / STATE_FILE).exists() and not (resume or overwrite):
        raise ConfigError(
            f"{work / STATE_FILE} exists: pass --resume to continue it or --overwrite to start over"
        )
    if overwrite and not resume:
        for name in (STATE_FILE, LOG_FILE):
            (work / name).unlink(missing_ok=True)
    trainer = PriorTrainer(config, work, init_from=init_from, images=images)
    if resume and trainer.state_path.exists():
        trainer.load_state()
    trainer.run_phase("vae")
    trainer.measure_scaling()
    trainer.run_phase("unet")
    summary = _summary(trainer, init_from, images)
    export_folder(trainer, out, summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", required=True, help="JSON recipe, e.g. configs/prior/embedded.json"
    )
    parser.add_argument("--out", default="stemob/priors/embedded", help="diffusers folder to write")
    parser.add_argument("--work_dir", default="runs/prior", help="training state and loss log")
    parser.add_argument(
        "--minutes", type=float, default=None, help="total time budget, split over the phases"
    )
    parser.add_argument("--resume", action="store_true", help="continue the state in --work_dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard a state in --work_dir and start over"
    )
    parser.add_argument(
        "--init_from", default=None, help="start from this diffusers folder (vae/, unet/)"
    )
    parser.add_argument(
        "--images", default=None, help="folder of your own frames mixed into every batch"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    try:
        summary = train(
            load_config(args.config),
            args.out,
            args.work_dir,
            resume=args.resume,
            overwrite=args.overwrite,
            minutes=args.minutes,
            init_from=args.init_from,
            images=args.images,
        )
    except StemobError as error:
        sys.exit(f"error: {error}")
    shown = {k: v for k, v in summary.items() if k != "config"}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
