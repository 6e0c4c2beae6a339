"""Environments: the embedded MuJoCo tabletop suite and Colosseum-style perturbations.

Importing ``envs`` registers the gymnasium ids ``tabletop/LiftCube-v0``,
``tabletop/PushToTarget-v0``, ``tabletop/OpenDrawer-v0`` and ``tabletop/PutInBowl-v0``.
``envs`` may use ``stemob.inversion`` (the test-time observation wrapper) and ``stemob.data``.
"""

from __future__ import annotations

import gymnasium as gym

from envs.tabletop.tasks import TASKS

GYM_IDS = {
    "lift_cube": "tabletop/LiftCube-v0",
    "push_to_target": "tabletop/PushToTarget-v0",
    "open_drawer": "tabletop/OpenDrawer-v0",
    "put_in_bowl": "tabletop/PutInBowl-v0",
}


def _register() -> None:
    for task, env_id in GYM_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="envs.tabletop.env:TabletopEnv",
            kwargs={"task": task},
            max_episode_steps=TASKS[task].max_episode_steps,
        )


_register()

__all__ = ["GYM_IDS"]
