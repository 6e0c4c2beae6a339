"""Sequence sampling: which frames and actions a training sample uses, with edge padding.

A sample is anchored at an episode step ``t`` (the *current* step). It holds the observations of
steps ``t - n_obs_steps + 1 .. t`` and the actions of steps ``t - n_obs_steps + 1 ..
t - n_obs_steps + horizon`` (the action window starts at the first observation step). Steps outside
the episode are filled with the nearest frame (edge padding) and flagged in ``*_is_pad``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stemob.errors import StemobError


@dataclass(frozen=True)
class Windows:
    """Flat indices into the concatenated episodes, for a batch of samples."""

    obs_index: np.ndarray  # (B, n_obs_steps) int64
    obs_is_pad: np.ndarray  # (B, n_obs_steps) bool
    action_index: np.ndarray  # (B, horizon) int64
    action_is_pad: np.ndarray  # (B, horizon) bool
    episode: np.ndarray  # (B,) episode position (in the sampler's episode list)
    obs_step: np.ndarray  # (B, n_obs_steps) the clipped step inside the episode


class SequenceSampler:
    """Every step of the chosen episodes is one sample.

    Args:
        lengths: steps per episode (of all episodes, in storage order).
        n_obs_steps: observation frames per sample (>= 1).
        horizon: actions per sample (>= n_obs_steps is usual, >= 1 required).
        episodes: which episodes (indices into ``lengths``) to draw samples from (default: all).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        n_obs_steps: int,
        horizon: int,
        episodes: Sequence[int] | None = None,
    ) -> None:
        if n_obs_steps < 1 or horizon < 1:
            raise StemobError(
                f"n_obs_steps and horizon must be >= 1, got {n_obs_steps} and {horizon}"
            )
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if (self.lengths < 1).any():
            raise StemobError("every episode needs at least one step")
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.n_obs_steps = n_obs_steps
        self.horizon = horizon
        chosen = np.arange(len(self.lengths)) if episodes is None else np.asarray(episodes)
        self.episodes = chosen.astype(np.int64)
        counts = self.lengths[self.episodes]
        self._sample_episode = np.repeat(self.episodes, counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._sample_step = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts, counts)

    def __len__(self) -> int:
        return int(self._sample_step.shape[0])

    def windows(self, samples: np.ndarray | Sequence[int]) -> Windows:
        """Indices and padding masks of a batch of samples (vectorised, no per-sample loop)."""
        samples = np.asarray(samples, dtype=np.int64)
        if samples.size and (samples.min() < 0 or samples.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        episode = self._sample_episode[samples]
        current = self._sample_step[samples]
        first = current - (self.n_obs_steps - 1)
        length = self.lengths[episode][:, None]
        offset = self.offsets[episode][:, None]
        obs_steps = first[:, None] + np.arange(self.n_obs_steps)
        act_steps = first[:, None] + np.arange(self.horizon)
        obs_clipped = np.clip(obs_steps, 0, length - 1)
        act_clipped = np.clip(act_steps, 0, length - 1)
        return Windows(
            obs_index=obs_clipped + offset,
            obs_is_pad=obs_steps != obs_clipped,
            action_index=act_clipped + offset,
            action_is_pad=act_steps != act_clipped,
            episode=episode,
            obs_step=obs_clipped,
        )


def split_episodes(count: int, val_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded train/validation split by episode (at least one of each when both are asked for)."""
    if not 0.0 <= val_ratio < 1.0:
        raise StemobError(f"val_ratio must be in [0, 1), got {val_ratio}")
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * val_ratio))
    if val_ratio > 0 and count > 1:
        n_val = min(max(n_val, 1), count - 1)
    elif count <= 1:
        n_val = 0
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
