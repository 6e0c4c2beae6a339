"""The per-episode schedule that GENIMA's target wrappers share.

GENIMA's controller reads ``<cam>_target`` images: the spheres of the next joint-action drawn on
the camera's frame. They are drawn at reset and every ``horizon`` steps (the controller's
execution horizon); between drawings the last targets are returned, since the controller runs its
chunk open loop. :class:`TargetSchedule` keeps that schedule and the seed of each drawing
(:func:`stemob.genima.agent.drawing_seed` of the episode's reset seed and the drawing's index);
the oracle (:mod:`stemob.evaluation.genima_oracle`) and the diffusion agent
(:mod:`stemob.evaluation.genima_drawn`) only say how one drawing is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.genima.agent import drawing_seed


class TargetSchedule(gym.Wrapper):
    """Adds ``<cam>_target`` for each of ``cameras``, made by :meth:`draw` at reset and every
    ``horizon`` steps; ``option`` names the config section in errors (``genima_oracle``)."""

    def __init__(self, env: gym.Env, cameras: Sequence[str], horizon: int, option: str) -> None:
        super().__init__(env)
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise StemobError(f"{option}.horizon must be a positive integer, got {horizon!r}")
        spaces = dict(env.observation_space.spaces)
        for cam in cameras:
            spaces[f"{cam}_target"] = spaces[f"{cam}_image"]
        self.observation_space = gym.spaces.Dict(spaces)
        self.horizon = horizon
        self._since, self._draws, self._seed_base = 0, 0, 0
        self._targets: dict[str, np.ndarray] = {}

    def draw(
        self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any], seed: int
    ) -> dict[str, np.ndarray]:
        """The ``<cam>_target`` images for the current observation; ``seed`` is the drawing's."""
        raise NotImplementedError

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._since, self._draws = 0, 0
        self._seed_base = int(kwargs.get("seed") or 0)
        return self._observe(obs, info, refresh=True), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._since += 1
        refresh = self._since % self.horizon == 0
        return self._observe(obs, info, refresh), reward, terminated, truncated, info

    def _observe(
        self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any], refresh: bool
    ) -> dict[str, np.ndarray]:
        if refresh or not self._targets:
            self._targets = self.draw(obs, info, drawing_seed(self._seed_base, self._draws))
            self._draws += 1
        return {**obs, **self._targets}
