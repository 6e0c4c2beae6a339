"""Normalisation statistics (min-max and mean-std per key), computed once and handed to the policy.

Statistics are per feature dimension for low-dim keys and actions, and per colour channel for
images (in raw 0..255 units). They serialise to plain JSON lists for checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from stemob.data.episodes import is_image
from stemob.errors import StemobError

MODES = ("min_max", "mean_std", "identity")
_EPS = 1e-8


@dataclass
class KeyStats:
    """Statistics of one key, each an array of the key's feature shape (or ``(3,)`` for images)."""

    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("min", "max", "mean", "std")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeyStats:
        missing = {"min", "max", "mean", "std"} - set(data)
        if missing:
            raise StemobError(f"normalisation stats lack {sorted(missing)}")
        return cls(
            **{k: np.asarray(data[k], dtype=np.float64) for k in ("min", "max", "mean", "std")}
        )


def image_stats(images: np.ndarray, channel_axis: int = -1) -> KeyStats:
    """Exact per-channel statistics of uint8 images from 256-bin histograms (fast, no floats)."""
    channels = images.shape[channel_axis]
    stats = []
    values = np.arange(256, dtype=np.float64)
    for c in range(channels):
        counts = np.bincount(np.take(images, c, axis=channel_axis).ravel(), minlength=256)
        total = max(int(counts.sum()), 1)
        mean = float((counts * values).sum() / total)
        var = float((counts * (values - mean) ** 2).sum() / total)
        present = np.flatnonzero(counts)
        low, high = (present[0], present[-1]) if present.size else (0, 0)
        stats.append((low, high, mean, np.sqrt(var)))
    low, high, mean, std = (np.array(v, dtype=np.float64) for v in zip(*stats, strict=True))
    return KeyStats(low, high, mean, std)


def channel_stats(maps: np.ndarray) -> KeyStats:
    """Per-channel statistics of float ``(N, C, h, w)`` maps (Stem-OB latents), one channel at a
    time in float64."""
    stats = []
    for c in range(maps.shape[1]):
        values = maps[:, c].astype(np.float64)
        stats.append((values.min(), values.max(), values.mean(), values.std()))
    low, high, mean, std = (np.array(v, dtype=np.float64) for v in zip(*stats, strict=True))
    return KeyStats(low, high, mean, std)


def key_stats(array: np.ndarray) -> KeyStats:
    """Statistics of one ``(N, ...)`` array; uint8 ``(N, H, W, 3)`` images reduce per channel."""
    if is_image(array):
        return image_stats(array, channel_axis=-1)
    values = np.asarray(array, dtype=np.float64)
    return KeyStats(values.min(0), values.max(0), values.mean(0), values.std(0))


def compute_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, KeyStats]:
    """Statistics of every array in ``arrays`` (``{'action': ..., 'robot0_eef_pos': ...}``)."""
    return {key: key_stats(value) for key, value in arrays.items()}


class Normalizer:
    """Maps values to a normalised range and back with stored statistics.

    ``min_max`` maps [min, max] to [-1, 1] (a constant dimension maps to 0); ``mean_std`` maps to
    zero mean and unit variance (a constant dimension keeps std 1). Works on numpy arrays and torch
    tensors (whose last dimension is the feature dimension).
    """

    def __init__(self, stats: Mapping[str, KeyStats], modes: Mapping[str, str] | None = None):
        self.stats = dict(stats)
        self.modes = {k: "min_max" for k in self.stats} | dict(modes or {})
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise StemobError(
                    f"normalisation mode of {key!r} is {mode!r}: expected one of {MODES}"
                )
            if key not in self.stats:
                raise StemobError(f"no normalisation stats for {key!r}")

    def _scale_offset(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.stats:
            raise StemobError(f"no normalisation stats for {key!r} (have {sorted(self.stats)})")
        s, mode = self.stats[key], self.modes[key]
        if mode == "min_max":
            span = s.max - s.min
            scale = np.where(span > _EPS, 2.0 / np.maximum(span, _EPS), 1.0)
            offset = np.where(span > _EPS, -1.0 - s.min * scale, -s.min)
        elif mode == "mean_std":
            scale = 1.0 / np.where(s.std > _EPS, s.std, 1.0)
            offset = -s.mean * scale
        else:
            scale, offset = np.ones_like(s.mean), np.zeros_like(s.mean)
        return scale, offset

    @staticmethod
    def _like(value: Any, array: np.ndarray) -> Any:
        if isinstance(value, np.ndarray):
            return array.astype(
                value.dtype if np.issubdtype(value.dtype, np.floating) else np.float32
            )
        import torch

        return torch.as_tensor(
            array, dtype=value.dtype if value.is_floating_point() else None, device=value.device
        )

    def normalize(self, key: str, value: Any) -> Any:
        """``value * scale + offset`` for ``key``."""
        scale, offset = self._scale_offset(key)
        if not isinstance(value, np.ndarray):
            value = value.float() if not value.is_floating_point() else value
        return value * self._like(value, scale) + self._like(value, offset)

    def unnormalize(self, key: str, value: Any) -> Any:
        """The inverse of :meth:`normalize`."""
        scale, offset = self._scale_offset(key)
        return (value - self._like(value, offset)) / self._like(value, scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for checkpoints)."""
        return {
            "stats": {k: v.to_dict() for k, v in self.stats.items()},
            "modes": dict(self.modes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalizer:
        stats = {k: KeyStats.from_dict(v) for k, v in data["stats"].items()}
        return cls(stats, data.get("modes"))
