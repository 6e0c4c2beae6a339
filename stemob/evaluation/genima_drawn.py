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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.evaluation.genima_targets import TargetSchedule
from stemob.genima.agent import TargetPainter, drawer_checkpoint, drawer_layout

__all__ = ["DrawnEnvFactory", "DrawnTargets", "drawer_layout"]


class DrawnTargets(TargetSchedule):
    """Adds ``<cam>_target``: the painter's targets on the current frames, redrawn every
    ``horizon`` steps (:class:`stemob.genima.agent.TargetPainter`; its ``drawing_ms`` times them)."""

    def __init__(self, env: gym.Env, painter: TargetPainter, horizon: int = 20) -> None:
        spaces = env.observation_space.spaces
        missing = [k for k in painter.image_keys if k not in spaces]
        if missing:
            raise StemobError(
                f"genima_agent: the drawer was trained on camera(s) {missing} that the env does not "
                f"render (it has {sorted(k for k in spaces if k.endswith('_image'))})"
            )
        super().__init__(env, painter.cameras, horizon, "genima_agent")
        self.painter = painter

    @property
    def drawing_ms(self) -> list[float]:
        return self.painter.drawing_ms

    def draw(
        self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any], seed: int
    ) -> dict[str, np.ndarray]:  # the same noise per (episode seed, drawing)
        return self.painter.paint(obs, seed=seed)


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
