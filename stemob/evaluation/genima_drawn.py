"""GENIMA's closed loop on the tabletop suite: the diffusion agent draws the targets, the controller
follows them.

Every ``horizon`` steps the wrapper tiles the current camera images (the views and grid the
drawer's GENIMA dataset used), lets the drawer (:class:`stemob.genima.drawer.TargetDrawer`) draw the
target spheres on them in its DDIM steps, and hands each view back as ``<cam>_target``; the
controller (``policy=genima_controller``) then runs its 20-step chunk open loop. Between drawings
the last targets are returned. ``python eval.py checkpoint=<controller>
genima_agent.drawer=<drawer run> genima_agent.horizon=20`` turns it on; compare with
``genima_oracle.horizon=20`` (the expert's own targets) to separate the two stages.
``genima_agent.background=texture`` shows the controller the drawn spheres on a random texture
(:class:`stemob.genima.agent.TargetPainter`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.genima.agent import TargetPainter, drawer_checkpoint, drawer_layout, drawing_seed

__all__ = ["DrawnEnvFactory", "DrawnTargets", "drawer_layout"]


class DrawnTargets(gym.Wrapper):
    """Adds ``<cam>_target``: the painter's targets on the current frames, redrawn every
    ``horizon`` steps (:class:`stemob.genima.agent.TargetPainter`; its ``drawing_ms`` times them)."""

    def __init__(self, env: gym.Env, painter: TargetPainter, horizon: int = 20) -> None:
        super().__init__(env)
        if not isinstance(horizon, int) or horizon < 1:
            raise StemobError(f"genima_agent.horizon must be a positive integer, got {horizon!r}")
        spaces = dict(env.observation_space.spaces)
        missing = [k for k in painter.image_keys if k not in spaces]
        if missing:
            raise StemobError(
                f"genima_agent: the drawer was trained on camera(s) {missing} that the env does not "
                f"render (it has {sorted(k for k in spaces if k.endswith('_image'))})"
            )
        for cam in painter.cameras:
            spaces[f"{cam}_target"] = spaces[f"{cam}_image"]
        self.observation_space = gym.spaces.Dict(spaces)
        self.painter, self.horizon = painter, horizon
        self._since, self._draws, self._seed_base = 0, 0, 0
        self._targets: dict[str, np.ndarray] = {}

    @property
    def drawing_ms(self) -> list[float]:
        return self.painter.drawing_ms

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._since, self._draws = 0, 0
        self._seed_base = int(kwargs.get("seed") or 0)
        return self._observe(obs, True), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._since += 1
        return (
            self._observe(obs, self._since % self.horizon == 0),
            reward,
            terminated,
            truncated,
            info,
        )

    def _observe(self, obs: dict[str, np.ndarray], refresh: bool) -> dict[str, np.ndarray]:
        if refresh or not self._targets:  # the same noise per (episode seed, drawing)
            self._targets = self.painter.paint(obs, seed=drawing_seed(self._seed_base, self._draws))
            self._draws += 1
        return {**obs, **self._targets}


@dataclass
class DrawnEnvFactory:
    """``(env_args, perturbation) -> DrawnTargets(env)``, loading the drawer in the env's process."""

    drawer: str
    horizon: int = 20
    background: str = "scene"

    def __call__(self, env_args: Any, perturbation: Any) -> DrawnTargets:
        from stemob.evaluation.rollout import default_env_factory

        painter = TargetPainter.load(self.drawer, background=self.background)
        return DrawnTargets(default_env_factory(env_args, perturbation), painter, self.horizon)

    def describe(self) -> dict[str, Any]:
        """What a resumed evaluation must match (the drawer's weights by their digest)."""
        import hashlib

        digest = hashlib.sha256()
        for path in sorted((drawer_checkpoint(self.drawer) / "denoiser").glob("*")):
            digest.update(path.read_bytes())
        out = {"drawer": str(self.drawer), "weights": digest.hexdigest()[:16],
               "horizon": self.horizon}  # fmt: skip
        return out if self.background == "scene" else {**out, "background": self.background}
