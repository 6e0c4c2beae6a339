"""Observation augmentations applied to training batches (the ``obs_aug`` config group).

The baselines of Stem-OB's comparison, usable with any policy:

- ``none`` (``org``): the original observations.
- ``aug``: random crop (a shift of up to ``shift`` pixels after replicate padding, as in DrQ /
  RAD, so the frame keeps its size) and colour jitter (brightness, contrast, saturation, hue): the
  usual practice.
- ``srm``: Spectrum Random Masking (Huang et al., NeurIPS 2022): a random share of each frame's
  Fourier coefficients is zeroed.
- ``mix``: Mix-Spectrum (Lee et al., 2024): each frame's amplitude spectrum is mixed with that of
  another image (a frame of the batch or a texture), keeping its own phase.
- ``ro``: random overlay (Hansen & Wang, ICRA 2021): alpha-blend with random images from the
  ``train`` texture pool (disjoint from the ``eval`` pool that perturbations use).

Every method keeps the policy's default random crop and acts at training time only. The same
random parameters are used for the ``n_obs_steps`` frames of one sample, so motion between them
stays visible. ``make_augment(cfg)`` returns ``None`` for ``none``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from stemob.errors import StemobError

Augment = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class AugmentConfig:
    """Parameters of every method (each reads its own; documented in ``configs/obs_aug``).

    Attributes:
        name: ``none``, ``aug``, ``srm``, ``mix`` or ``ro``.
        keys: image keys to augment (None: every uint8 image key of the batch).
        probability: chance that a sample is augmented.
        shift: ``aug`` random crop: frames are padded by ``shift`` pixels (edge replicated) and
            cropped back to their size at a random offset (0 disables it).
        brightness, contrast, saturation: ``aug`` factors drawn from ``[1 - v, 1 + v]``.
        hue: ``aug`` hue shift drawn from ``[-hue, hue]`` (fraction of a full turn).
        mask_ratio: ``srm`` upper bound of the share of frequency coefficients zeroed.
        mix_alpha: ``mix`` weight of the other amplitude spectrum, drawn from ``[0, mix_alpha]``.
        overlay_alpha: ``ro`` blend weight of the overlay image, drawn from ``[0, overlay_alpha]``.
        pool_size: ``ro``/``mix`` number of ``train``-pool textures to draw from.
        seed: seed of the augmentation RNG (the stream continues across batches).
    """

    name: str = "none"
    keys: list[str] | None = None
    probability: float = 1.0
    shift: int = 4
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    mask_ratio: float = 0.3
    mix_alpha: float = 0.5
    overlay_alpha: float = 0.5
    pool_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise StemobError(f"obs_aug.name {self.name!r}: expected one of {sorted(METHODS)}")
        unit = ("probability", "brightness", "contrast", "saturation", "mask_ratio", "mix_alpha",
                "overlay_alpha")  # fmt: skip
        for key in unit:
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise StemobError(f"obs_aug.{key} must be in [0, 1], got {value!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise StemobError(f"obs_aug.hue must be in [0, 0.5], got {self.hue!r}")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise StemobError(f"obs_aug.shift must be an integer >= 0, got {self.shift!r}")
        if self.pool_size < 1:
            raise StemobError(f"obs_aug.pool_size must be >= 1, got {self.pool_size!r}")


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _rotate_hue(x: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """Rotate hues by ``turn`` (fractions of a turn) about the grey axis (YIQ rotation)."""
    angle = 2 * torch.pi * turn
    cos, sin = torch.cos(angle), torch.sin(angle)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    rot = torch.zeros(turn.shape[0], 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    matrix = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,btjhw->btihw", matrix, x)


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Pad ``(B, T, C, H, W)`` by ``shift`` (edge replicated) and crop each sample back to
    ``H x W`` at a random offset, the same for its ``T`` frames."""
    if shift == 0:
        return x
    b, t, c, h, w = x.shape
    padded = torch.nn.functional.pad(x.reshape(b, t * c, h, w), [shift] * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=gen).tolist()
    out = torch.stack(
        [padded[i, :, y : y + h, x_ : x_ + w] for i, (y, x_) in enumerate(zip(dy, dx, strict=True))]
    )
    return out.reshape(b, t, c, h, w)


class BatchAugment:
    """Augments the uint8 images ``(B, T, 3, H, W)`` of a training batch in place of the originals."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self._pool: torch.Tensor | None = None
        self._pool_amplitude: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The RNG state (saved with the training state for exact resumption)."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    def pool(self, size: int) -> torch.Tensor:
        """``pool_size`` textures of the ``train`` pool as float (N, 3, size, size) in [0, 1]."""
        if self._pool is None or self._pool.shape[-1] != size:
            from PIL import Image

            from envs.perturbations.textures import make_texture

            images = [
                np.asarray(Image.fromarray(make_texture("train", i)).resize((size, size)))
                for i in range(self.config.pool_size)
            ]
            self._pool = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        return self._pool

    def pool_crop(self, h: int, w: int) -> torch.Tensor:
        """The pool textures cropped to ``(N, 3, h, w)``."""
        return self.pool(max(h, w))[:, :, :h, :w]

    def pool_amplitude(self, h: int, w: int) -> torch.Tensor:
        """Amplitude spectra of :meth:`pool_crop` (cached: ``mix`` needs them every batch)."""
        cached = self._pool_amplitude
        if cached is None or cached.shape[-2] != h or cached.shape[-1] != w // 2 + 1:
            self._pool_amplitude = cached = torch.fft.rfft2(self.pool_crop(h, w)).abs()
        return cached

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        keys = cfg.keys or [
            k for k, v in batch["obs"].items() if v.dtype == torch.uint8 and v.dim() == 5
        ]
        obs = dict(batch["obs"])
        for key in keys:
            if key not in obs:
                raise StemobError(f"obs_aug.keys names {key!r}, not in the batch ({sorted(obs)})")
            x = obs[key].float() / 255
            chosen = torch.rand(x.shape[0], generator=self.generator) < cfg.probability
            y = getattr(self, f"_{cfg.name}")(x)
            x = torch.where(chosen[:, None, None, None, None], y, x)
            obs[key] = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return {**batch, "obs": obs}

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        cfg, gen, b = self.config, self.generator, x.shape[0]

        def shape(v: torch.Tensor) -> torch.Tensor:
            return v[:, None, None, None, None]

        x = _random_shift(x, cfg.shift, gen)
        x = x * shape(_uniform(gen, b, 1 - cfg.brightness, 1 + cfg.brightness))
        mean = _grey(x).mean(dim=(-3, -2, -1), keepdim=True)
        x = mean + (x - mean) * shape(_uniform(gen, b, 1 - cfg.contrast, 1 + cfg.contrast))
        grey = _grey(x)
        x = grey + (x - grey) * shape(_uniform(gen, b, 1 - cfg.saturation, 1 + cfg.saturation))
        return _rotate_hue(x.clamp(0, 1), _uniform(gen, b, -cfg.hue, cfg.hue))

    def _srm(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        spectrum = torch.fft.rfft2(x)  # (B, T, 3, H, W//2+1)
        ratio = _uniform(self.generator, b, 0.0, self.config.mask_ratio)
        noise = torch.rand(b, 1, 1, h, w // 2 + 1, generator=self.generator)
        keep = noise >= ratio[:, None, None, None, None]
        keep[..., 0, 0] = True  # the mean colour stays
        return torch.fft.irfft2(spectrum * keep, s=(h, w))

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        gen = self.generator
        amplitudes = self.pool_amplitude(h, w)
        other_amp = amplitudes[torch.randint(len(amplitudes), (b,), generator=gen)][:, None]
        spectrum = torch.fft.rfft2(x)
        lam = _uniform(gen, b, 0.0, self.config.mix_alpha)[:, None, None, None, None]
        amp = (1 - lam) * spectrum.abs() + lam * other_amp
        return torch.fft.irfft2(torch.polar(amp, spectrum.angle()), s=(h, w))

    def _ro(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, h, w = x.shape
        gen = self.generator
        pool = self.pool_crop(h, w)
        overlay = pool[torch.randint(len(pool), (b,), generator=gen)][:, None]
        alpha = _uniform(gen, b, 0.0, self.config.overlay_alpha)[:, None, None, None, None]
        return (1 - alpha) * x + alpha * overlay

    def _none(self, x: torch.Tensor) -> torch.Tensor:
        return x


METHODS = ("none", "aug", "srm", "mix", "ro")


def make_augment(cfg: Mapping[str, Any]) -> Augment | None:
    """The batch augmentation of the ``obs_aug`` section of a run config (None for ``none``)."""
    section = dict(cfg.get("obs_aug") or {"name": "none"})
    known = {f.name for f in fields(AugmentConfig)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise StemobError(f"unknown obs_aug option(s) {unknown}: expected some of {sorted(known)}")
    config = AugmentConfig(**section)
    return None if config.name == "none" else BatchAugment(config)
