"""Normalisation inside a policy, from statistics saved in its checkpoint.

The policy takes the statistics as plain data: ``stemob.data``'s ``Normalizer.to_dict()`` output
(``{'stats': {...}, 'modes': {...}}``), a mapping ``{key: KeyStats}`` or a mapping
``{key: {'min', 'max', 'mean', 'std'}}``. It keeps them as JSON-ready lists of floats, so policies do
not import ``stemob.data`` (which pulls in the dataset readers) and a checkpoint is plain JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from stemob.errors import StemobError

NORM_MODES = ("min_max", "mean_std", "identity")
_FIELDS = ("min", "max", "mean", "std")
_EPS = 1e-8

Stats = dict[str, dict[str, list[float]]]


def stats_to_dict(stats: Any) -> Stats:
    """Plain ``{key: {'min': [...], 'max': [...], 'mean': [...], 'std': [...]}}`` from any accepted form."""
    if stats is None:
        return {}
    if isinstance(stats, Mapping) and "stats" in stats and isinstance(stats["stats"], Mapping):
        stats = stats["stats"]
    if not isinstance(stats, Mapping):
        raise StemobError(f"normalisation stats must be a mapping of keys, got {type(stats)}")
    out: Stats = {}
    for key, value in stats.items():
        if not isinstance(value, Mapping):
            value = {f: getattr(value, f, None) for f in _FIELDS}
        missing = [f for f in _FIELDS if value.get(f) is None]
        if missing:
            raise StemobError(f"normalisation stats of {key!r} lack {missing}")
        out[str(key)] = {
            f: np.asarray(value[f], dtype=np.float64).reshape(-1).tolist() for f in _FIELDS
        }
    return out


def scale_offset(stats: Mapping[str, list[float]], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` with ``normalised = value * scale + offset`` (as in ``stemob.data``)."""
    lo, hi = np.asarray(stats["min"]), np.asarray(stats["max"])
    mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
    if mode == "min_max":
        span = hi - lo
        scale = np.where(span > _EPS, 2.0 / np.maximum(span, _EPS), 1.0)
        offset = np.where(span > _EPS, -1.0 - lo * scale, -lo)
    elif mode == "mean_std":
        scale = 1.0 / np.where(std > _EPS, std, 1.0)
        offset = -mean * scale
    elif mode == "identity":
        scale, offset = np.ones_like(mean), np.zeros_like(mean)
    else:
        raise StemobError(f"normalisation mode {mode!r}: expected one of {NORM_MODES}")
    return scale, offset


class FeatureNormalizer(nn.Module):
    """Affine normalisation of several keys along a feature axis (last axis, or channels of images).

    Scales are non-persistent buffers rebuilt from the JSON stats, so the weights file holds no
    copy that could disagree with the recorded statistics. Keys without stats: images map 0..255 to
    [-1, 1], other keys pass through unchanged.
    """

    def __init__(self, stats: Stats, modes: Mapping[str, str], image_keys: list[str]) -> None:
        super().__init__()
        self.image_keys = set(image_keys)
        self.keys = list(modes)
        for key, mode in modes.items():
            if key in stats:
                scale, offset = scale_offset(stats[key], mode)
            elif key in self.image_keys:
                scale, offset = np.full(3, 2.0 / 255.0), np.full(3, -1.0)
            else:
                scale, offset = np.ones(1), np.zeros(1)
            self.register_buffer(
                _name(key, "scale"), torch.tensor(scale, dtype=torch.float32), False
            )
            self.register_buffer(
                _name(key, "offset"), torch.tensor(offset, dtype=torch.float32), False
            )

    def _params(self, key: str, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, offset = getattr(self, _name(key, "scale")), getattr(self, _name(key, "offset"))
        shape = (-1, 1, 1) if key in self.image_keys else (-1,)
        return scale.view(shape).to(like.device), offset.view(shape).to(like.device)

    def normalize(self, key: str, value: torch.Tensor, channels: bool = False) -> torch.Tensor:
        """Normalise ``value``; ``channels``: the feature axis is -3 (``(..., C, H, W)`` maps)."""
        scale, offset = self._params(key, value)
        if channels and scale.dim() == 1:
            scale, offset = scale.view(-1, 1, 1), offset.view(-1, 1, 1)
        return value.float() * scale + offset

    def unnormalize(self, key: str, value: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize` (feature axis last)."""
        scale, offset = self._params(key, value)
        return (value - offset) / scale


def _name(key: str, what: str) -> str:
    return f"{what}__{key.replace('.', '_')}"
