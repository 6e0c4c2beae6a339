"""GENIMA's closed loop on the tabletop suite: the diffusion agent draws the targets, the controller
follows them.

Every ``horizon`` steps the wrapper tiles the current camera images (the views and grid the
drawer's GENIMA dataset used), lets the drawer (:class:`stemob.genima.drawer.TargetDrawer`) draw the
target spheres on them in its DDIM steps, and hands each view back as ``<cam>_target``; the
controller (``policy=genima_controller``) then runs its 20-step chunk open loop. Between drawings
the last targets are returned. ``python eval.py checkpoint=<controller>
genima_agent.drawer=<drawer run> genima_agent.horizon=20`` turns it on; compare with
``genima_oracle.horizon=20`` (the expert's own targets) to separate the two stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.genima.targets import tile, untile


class DrawnTargets(gym.Wrapper):
    """Adds ``<cam>_target``: the drawer's targets on the current frames, redrawn every
    ``horizon`` steps. ``drawing_ms`` collects the time of each drawing."""

    def __init__(self, env: gym.Env, drawer: Any, cameras: list[str], grid: tuple[int, int],
                 horizon: int = 20, seed: int = 0) -> None:  # fmt: skip
        super().__init__(env)
        if not isinstance(horizon, int) or horizon < 1:
            raise StemobError(f"genima_agent.horizon must be a positive integer, got {horizon!r}")
        spaces = dict(env.observation_space.spaces)
        missing = [c for c in cameras if f"{c}_image" not in spaces]
        if missing:
            raise StemobError(
                f"genima_agent: the drawer was trained on camera(s) {missing} that the env does not "
                f"render (it has {sorted(k for k in spaces if k.endswith('_image'))})"
            )
        for cam in cameras:
            spaces[f"{cam}_target"] = spaces[f"{cam}_image"]
        self.observation_space = gym.spaces.Dict(spaces)
        self.drawer, self.cameras, self.grid = drawer, list(cameras), tuple(grid)
        self.horizon, self.seed = horizon, int(seed)
        self._since, self._draws = 0, 0
        self._targets: dict[str, np.ndarray] = {}
        self.drawing_ms: list[float] = []

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._since = 0
        self._draws = 0
        self._seed_base = int(kwargs.get("seed") or 0)
        return self._observe(obs, True), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._since += 1
        return self._observe(obs, self._since % self.horizon == 0), reward, terminated, truncated, info

    def _observe(self, obs: dict[str, np.ndarray], refresh: bool) -> dict[str, np.ndarray]:
        out = dict(obs)
        if refresh or not self._targets:
            tiled = tile([obs[f"{c}_image"] for c in self.cameras], self.grid)
            started = time.perf_counter()
            seed = self.seed + 1000 * self._seed_base + self._draws  # same per episode seed
            drawn = self.drawer.draw(tiled[None], seed=seed)[0]
            self.drawing_ms.append(1000 * (time.perf_counter() - started))
            self._draws += 1
            views = untile(drawn, len(self.cameras), self.grid)
            self._targets = {f"{c}_target": v for c, v in zip(self.cameras, views, strict=True)}
        out.update(self._targets)
        return out


def drawer_layout(drawer_dir: str | Path) -> tuple[list[str], tuple[int, int]]:
    """The cameras (tile order) and grid of the GENIMA dataset a drawer was trained on."""
    import json

    import h5py

    state = Path(drawer_dir) / "latest" / "train_state.pt"
    if not state.is_file():
        raise StemobError(f"{drawer_dir}: no latest/train_state.pt (a stemob-genima-drawer run)")
    import torch

    dataset = Path(torch.load(state, weights_only=True)["settings"]["dataset"])
    if not dataset.is_file():
        raise StemobError(f"{drawer_dir} was trained on {dataset}, which is gone (its views are read there)")
    with h5py.File(dataset, "r") as h5:
        config = json.loads(h5["data"].attrs["genima"])["config"]
        first = next(iter(h5["data"].values()))["obs"]
        cameras = config.get("cameras") or sorted(
            k[: -len("_target")] for k in first if k.endswith("_target") and k != "tiled_target"
        )
    grid = tuple(config["grid"]) if config.get("grid") else (1, len(cameras))
    return list(cameras), grid


@dataclass
class DrawnEnvFactory:
    """``(env_args, perturbation) -> DrawnTargets(env)``, loading the drawer in the env's process."""

    drawer: str
    horizon: int = 20

    def __call__(self, env_args: Any, perturbation: Any) -> DrawnTargets:
        from stemob.evaluation.rollout import default_env_factory
        from stemob.genima.drawer import TargetDrawer

        cameras, grid = drawer_layout(self.drawer)
        drawer = TargetDrawer.load(Path(self.drawer) / "latest")
        drawer.denoiser.eval()
        env = default_env_factory(env_args, perturbation)
        return DrawnTargets(env, drawer, cameras, grid, self.horizon)

    def describe(self) -> dict[str, Any]:
        """What a resumed evaluation must match (the drawer's weights by their digest)."""
        import hashlib

        digest = hashlib.sha256()
        for path in sorted((Path(self.drawer) / "latest" / "denoiser").glob("*")):
            digest.update(path.read_bytes())
        return {"drawer": str(self.drawer), "weights": digest.hexdigest()[:16],
                "horizon": self.horizon}  # fmt: skip
