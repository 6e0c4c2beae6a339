"""Colosseum's 14 perturbation factors for the tabletop suite (config, factors, textures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from envs.perturbations.config import FactorConfig, load_config, parse_config, strip_stemob_keys
from envs.perturbations.factors import SNAPSHOT_FIELDS, Resolver, apply_factor

SCENE_STAGE = ("distractor_object",)


class PerturbationSet:
    """The enabled factors of one config, bound to one env; resampled at every reset."""

    def __init__(self, env: Any, cfg: dict | None, factors: list[FactorConfig]) -> None:
        self.source = cfg
        self.factors = [f for f in factors if f.enabled]
        self._defaults = {k: getattr(env.model, k).copy() for k in SNAPSHOT_FIELDS}
        self._dirty: set[int] = set()
        self._touched: set[int] = set()
        self._validate_targets(env)

    @classmethod
    def load(cls, source: str | Path | dict | None, env: Any) -> PerturbationSet:
        """Parse and validate ``source`` (YAML path, dict or None) for ``env``."""
        cfg, factors = load_config(source)
        return cls(env, cfg, factors)

    def _where(self, i: int) -> str:
        return f"perturbation: env.scene.factors[{i}] ({self.factors[i].name}).targets"

    def _validate_targets(self, env: Any) -> None:
        res = Resolver(env)
        for i, f in enumerate(self.factors):
            for t in f.targets:
                if f.variation == "camera_pose":
                    res.cameras(t, self._where(i))
                elif f.variation == "light_color" or f.variation == "distractor_object":
                    continue
                else:
                    res.geoms(t, self._where(i))

    def restore(self, env: Any, upload: bool = True) -> None:
        """Put every perturbed model array back to its compiled value.

        With ``upload=False`` the textures reach the GPU at the next ``apply_model``.
        """
        env.role_scale.clear()
        if not self.factors:
            return
        for k, v in self._defaults.items():
            getattr(env.model, k)[...] = v
        self._dirty |= self._touched
        if upload:
            self._upload(env)

    def _upload(self, env: Any) -> None:
        ctx = getattr(env.renderer, "_mjr_context", None)
        if ctx is not None:
            self._touched |= self._dirty
            for tex in sorted(self._dirty):
                mujoco.mjr_uploadTexture(env.model, ctx, tex)
        self._dirty.clear()

    def _rng(self, f: FactorConfig, reset_seed: int) -> np.random.Generator:
        return np.random.default_rng([f.seed, int(reset_seed)])

    def apply_model(self, env: Any, reset_seed: int) -> None:
        """Apply the factors that act before the objects are placed (all but distractors)."""
        for i, f in enumerate(self.factors):
            if f.variation not in SCENE_STAGE:
                apply_factor(env, f, self._rng(f, reset_seed), self._where(i), self._dirty)
        self._upload(env)

    def apply_scene(self, env: Any, reset_seed: int) -> None:
        """Apply the factors that need the objects' positions (distractors)."""
        for i, f in enumerate(self.factors):
            if f.variation in SCENE_STAGE:
                apply_factor(env, f, self._rng(f, reset_seed), self._where(i), self._dirty)


__all__ = ["FactorConfig", "PerturbationSet", "load_config", "parse_config", "strip_stemob_keys"]
