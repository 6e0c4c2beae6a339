"""Stem-OB inversion settings, under the names used everywhere (CLI, configs, checkpoints, caches)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from stemob.errors import StemobError

MODES = ("ddpm", "ddim")
EMBEDDED = "embedded"
INTERPOLATIONS = ("bilinear", "nearest")
ROUNDINGS = ("round", "truncate")
_LATER_DEFAULTS = {"interpolation": "bilinear", "short_side": None, "rounding": "round"}
"""Fields added after caches and checkpoints were first written: left out of ``to_dict`` (and the
digest) at their defaults, so those keep their names and verify unchanged."""


@dataclass(frozen=True)
class InversionSettings:
    """What defines an inversion result.

    Attributes:
        mode: ``ddpm`` (forward-noise the VAE latent, no UNet; the reference default) or ``ddim``
            (deterministic DDIM inversion with the model's UNet).
        pretrained: a diffusers model folder, a hub id already in the local cache, or ``embedded``
            (the small prior shipped with stemob).
        num_steps: N, the length of the inference schedule the inversion step is taken from.
        inversion_steps: k, how many of the N steps to invert (0 = a plain VAE round trip).
        resolution: side of the square the frames are resized to before encoding; ``None`` keeps the
            frame size (padded up to a multiple the model accepts). Outputs always have the input size.
        seed: base seed of the per-frame noise (``None``: fresh noise on every call).
        interpolation: how frames are resized to the model's size and back: ``bilinear``
            (antialiased) or ``nearest`` (pixel centres, as Pillow's NEAREST: the reference's).
        short_side: resize so the shorter side has this many pixels, keeping the aspect ratio
            (the reference's ddim CLI: 256); exclusive with ``resolution``.
        rounding: decoded pixels to uint8 by ``round`` or ``truncate`` (the reference's
            ``astype(np.uint8)``).
    """

    mode: str = "ddpm"
    pretrained: str = EMBEDDED
    num_steps: int = 50
    inversion_steps: int = 15
    resolution: int | None = None
    seed: int | None = 0
    interpolation: str = "bilinear"
    short_side: int | None = None
    rounding: str = "round"

    def __post_init__(self) -> None:
        for name in ("interpolation", "rounding"):  # None (a config's null): the default
            if getattr(self, name) is None:
                object.__setattr__(self, name, _LATER_DEFAULTS[name])
        if self.mode not in MODES:
            raise StemobError(
                f"unknown inversion mode {self.mode!r}: expected one of {', '.join(MODES)}"
            )
        if (
            not isinstance(self.num_steps, int)
            or isinstance(self.num_steps, bool)
            or self.num_steps < 1
        ):
            raise StemobError(f"num_steps must be a positive integer, got {self.num_steps!r}")
        k = self.inversion_steps
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= self.num_steps:
            raise StemobError(
                f"inversion_steps must be an integer with 0 <= inversion_steps <= num_steps "
                f"({self.num_steps}), got {k!r}"
            )
        if self.resolution is not None and (
            not isinstance(self.resolution, int)
            or isinstance(self.resolution, bool)
            or self.resolution < 8
        ):
            raise StemobError(
                f"resolution must be None or an integer >= 8, got {self.resolution!r}"
            )
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise StemobError(f"seed must be an integer or None, got {self.seed!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise StemobError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if self.rounding not in ROUNDINGS:
            raise StemobError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.short_side is not None and (
            not isinstance(self.short_side, int)
            or isinstance(self.short_side, bool)
            or self.short_side < 8
        ):
            raise StemobError(
                f"short_side must be None or an integer >= 8, got {self.short_side!r}"
            )
        if self.short_side is not None and self.resolution is not None:
            raise StemobError("resolution and short_side exclude each other: set one of them")
        if not isinstance(self.pretrained, str) or not self.pretrained:
            raise StemobError(
                f"pretrained must name a folder, a hub id or 'embedded', got {self.pretrained!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the canonical names (JSON-serialisable); the fields added later are
        left out at their defaults (:data:`_LATER_DEFAULTS`)."""
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionSettings:
        """Build from a dict (a config group, a checkpoint's record); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StemobError(
                f"unknown Stem-OB setting(s) {unknown}: expected some of {sorted(names)}"
            )
        return cls(**data)

    @property
    def noisy(self) -> bool:
        """Whether the inversion draws noise (ddpm with k > 0): DDIM inversion and k = 0 (the
        plain VAE round trip) give the same frames under every seed."""
        return self.mode == "ddpm" and self.inversion_steps > 0

    def draw(self, index: int) -> InversionSettings:
        """The settings of noise draw ``index`` (0: these): the same inversion with its noise
        seeded by ``seed + index``, so M draws of a dataset are M caches (``dataset.stemob_draws``)."""
        if index == 0:
            return self
        if self.seed is None:
            raise StemobError("several noise draws need a seed (stemob.seed is null)")
        return dataclasses.replace(self, seed=self.seed + index)

    def digest(self) -> str:
        """A short stable hash of the settings (names caches, so several settings coexist)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
