"""Procedural textures drawn from two disjoint pools (``train`` and ``eval``).

A texture is fully determined by (pool, index). The pools use disjoint seed ranges, so an
evaluation texture is never one that training (or the embedded prior's data) could have seen.
"""

from __future__ import annotations

import numpy as np

from stemob.errors import StemobError

POOL_SIZE = 1000
POOL_SEED_BASE = {"train": 1_000_000, "eval": 2_000_000}
KINDS = ("checker", "stripes", "dots", "noise", "marble")


def texture_seed(pool: str, index: int) -> int:
    """The generator seed of texture ``index`` of ``pool``."""
    if pool not in POOL_SEED_BASE:
        raise StemobError(f"unknown texture_pool {pool!r}: expected 'train' or 'eval'")
    if not 0 <= index < POOL_SIZE:
        raise StemobError(f"texture index {index} outside [0, {POOL_SIZE})")
    return POOL_SEED_BASE[pool] + int(index)


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1] (bilinear upsampling of a random grid)."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    f = f * f * (3 - 2 * f)
    a = grid[i][:, i] * (1 - f)[None, :] + grid[i][:, i + 1] * f[None, :]
    b = grid[i + 1][:, i] * (1 - f)[None, :] + grid[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


def make_texture(pool: str, index: int, size: int = 64) -> np.ndarray:
    """Texture ``index`` of ``pool`` as a uint8 (size, size, 3) image."""
    rng = np.random.default_rng(texture_seed(pool, index))
    kind = KINDS[int(rng.integers(len(KINDS)))]
    c0, c1 = rng.random(3), rng.random(3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    if kind == "checker":
        k = int(rng.choice([2, 4, 8]))
        t = ((np.floor(xx * k) + np.floor(yy * k)) % 2).astype(float)
    elif kind == "stripes":
        ang = rng.uniform(0, np.pi)
        freq = int(rng.integers(2, 9))
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)))
        t = t if rng.random() < 0.5 else (t > 0.5).astype(float)
    elif kind == "dots":
        k = int(rng.integers(3, 9))
        r = rng.uniform(0.15, 0.45)
        d = np.hypot((xx * k) % 1 - 0.5, (yy * k) % 1 - 0.5)
        t = (d < r).astype(float)
    elif kind == "noise":
        t = _noise(rng, size, int(rng.integers(3, 12)))
    else:
        n = _noise(rng, size, 4)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * rng.uniform(1, 4) + 3 * n))
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    grain = 0.06 * (rng.random((size, size, 1)) - 0.5)
    return (np.clip(img + grain, 0, 1) * 255).astype(np.uint8)
