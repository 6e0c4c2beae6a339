"""Tiny synthetic batches in the batch contract, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def synthetic_batch(
    obs_shapes: dict[str, list[int]],
    action_dim: int,
    batch: int,
    n_obs_steps: int,
    horizon: int,
    latent_keys: tuple[str, ...] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """A batch whose actions are smooth curves that depend on the sample (so that a policy can
    learn them from the observations): blocky uint8 images, low-dim state, padding flags."""
    g = torch.Generator().manual_seed(seed)
    obs: dict[str, torch.Tensor] = {}
    for key, shape in obs_shapes.items():
        if key in latent_keys:
            obs[key] = torch.randn(batch, n_obs_steps, *shape, generator=g)
        elif len(shape) == 3:
            c, h, w = shape
            coarse = torch.randint(
                0, 256, (batch, n_obs_steps, c, max(1, h // 4), max(1, w // 4)), generator=g
            )
            img = coarse.repeat_interleave(4, -2).repeat_interleave(4, -1)[..., :h, :w]
            obs[key] = img.to(torch.uint8).contiguous()
        else:
            obs[key] = torch.randn(batch, n_obs_steps, *shape, generator=g)
    phase = torch.rand(batch, 1, action_dim, generator=g) * 2 * np.pi
    t = torch.linspace(0, 1, horizon)[None, :, None]
    action = torch.sin(2 * np.pi * t + phase) + 0.1 * torch.arange(action_dim)
    return {
        "obs": obs,
        "action": action.float(),
        "action_is_pad": torch.zeros(batch, horizon, dtype=torch.bool),
    }


def batch_stats(batch: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Normalisation stats of a synthetic batch (per feature; images per channel in 0..255)."""
    out: dict[str, dict[str, list[float]]] = {}

    def describe(values: torch.Tensor) -> dict[str, list[float]]:
        v = values.double()
        return {
            "min": v.min(0).values.tolist(),
            "max": v.max(0).values.tolist(),
            "mean": v.mean(0).tolist(),
            "std": v.std(0, unbiased=False).tolist(),
        }

    out["action"] = describe(batch["action"].reshape(-1, batch["action"].shape[-1]))
    for key, value in batch["obs"].items():
        if value.dim() == 5:  # (B, T, C, H, W): per channel
            out[key] = describe(value.movedim(2, -1).reshape(-1, value.shape[2]))
        else:
            out[key] = describe(value.reshape(-1, value.shape[-1]))
    return out
