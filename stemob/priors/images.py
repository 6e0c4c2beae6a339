"""Training images of the embedded prior: procedural images, user frames and tabletop renders.

Every batch is a pure function of (seed, phase, step), so a resumed run sees the same data.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stemob.inversion.media import IMAGE_SUFFIXES
from stemob.priors.config import ConfigError, PhaseConfig, PriorConfig
from stemob.priors.procedural import procedural_batch

PHASE_IDS = {"vae": 1, "unet": 2, "scale": 7, "user": 11}
"""Seeds of each data stream (with the config's seed and the step)."""


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
