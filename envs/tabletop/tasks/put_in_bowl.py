"""put_in_bowl: pick the cube (manipulated object) and drop it into the bowl (receiver object)."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.tabletop.tasks.base import Task, free_joint_qpos, sample_separated, yaw_quat
from envs.tabletop.tasks.common import eef_pos, move
from envs.tabletop.tasks.lift_cube import CubeMixin, PickExpert, cube_xml

BOWL_RADIUS = 0.07
BOWL_WALL = 0.03
BOWL_SEGMENTS = 14


def bowl_xml() -> str:
    """A free bowl: a disc and a ring of wall segments (primitives only)."""
    seg = BOWL_RADIUS * np.pi / BOWL_SEGMENTS
    walls = "\n".join(
        f'      <geom type="box" size="0.004 {seg:.4f} {BOWL_WALL / 2}" '
        f'pos="{BOWL_RADIUS * np.cos(a):.4f} {BOWL_RADIUS * np.sin(a):.4f} {BOWL_WALL / 2 + 0.004}" '
        f'euler="0 0 {a:.4f}" mass="0.02" material="mat_receiver_object"/>'
        for a in np.linspace(0, 2 * np.pi, BOWL_SEGMENTS, endpoint=False)
    )
    return f"""
    <body name="bowl" pos="0.5 0.2 0">
      <freejoint name="bowl_joint"/>
      <geom type="cylinder" size="{BOWL_RADIUS + 0.004} 0.004" pos="0 0 0.004" mass="0.1"
            material="mat_receiver_object" contype="0" conaffinity="0"/>
      <geom type="box" size="0.052 0.052 0.004" pos="0 0 0.004" mass="0.0" group="3"
            material="mat_receiver_object"/>
{walls}
    </body>"""


class PutInBowl(CubeMixin, Task):
    """Success: the cube rests inside the bowl's rim (and is no longer held above it)."""

    name = "put_in_bowl"
    max_episode_steps = 160
    roles = {"manipulated_object": ("cube",), "receiver_object": ("bowl",)}
    ranges = {
        "cube_x": (0.38, 0.58), "cube_y": (-0.2, 0.2), "cube_yaw": (-np.pi / 4, np.pi / 4),
        "bowl_x": (0.38, 0.62), "bowl_y": (-0.22, 0.22), "min_distance": 0.16,
    }  # fmt: skip

    def bodies_xml(self) -> str:
        return cube_xml() + bowl_xml()

    def bind(self, model: Any) -> None:
        self.bind_cube(model)
        self.bowl_adr = free_joint_qpos(model, "bowl_joint")

    def bowl_scale(self, env: Any) -> float:
        return env.role_scale.get("receiver_object", 1.0)

    def bowl_pos(self, env: Any) -> np.ndarray:
        return env.data.qpos[self.bowl_adr : self.bowl_adr + 3].copy()

    def place(self, env: Any, rng: np.random.Generator) -> None:
        r = self.ranges
        cube, bowl = sample_separated(
            rng, [(r["cube_x"], r["cube_y"]), (r["bowl_x"], r["bowl_y"])], r["min_distance"]
        )
        self.set_cube(env, cube, rng.uniform(*r["cube_yaw"]))
        env.data.qpos[self.bowl_adr : self.bowl_adr + 3] = [bowl[0], bowl[1], 0.0]
        env.data.qpos[self.bowl_adr + 3 : self.bowl_adr + 7] = yaw_quat(rng.uniform(-np.pi, np.pi))

    def is_success(self, env: Any) -> bool:
        cube, _ = self.cube_pose(env)
        bowl = self.bowl_pos(env)
        inside = np.linalg.norm(cube[:2] - bowl[:2]) < BOWL_RADIUS * self.bowl_scale(env) - 0.01
        resting = cube[2] < bowl[2] + 0.012 + self.cube_half(env) + 0.01
        return bool(inside and resting)

    def occupied(self, env: Any) -> list[tuple[np.ndarray, float]]:
        cube, _ = self.cube_pose(env)
        return [(cube[:2], 0.06), (self.bowl_pos(env)[:2], BOWL_RADIUS * 1.15 + 0.03)]

    def make_expert(self, env: Any) -> PickExpert:
        return BowlExpert(env)


class BowlExpert(PickExpert):
    """Pick the cube, carry it above the bowl, lower it a little and open the gripper."""

    def after_lift(self) -> np.ndarray:
        env, task = self.env, self.env.task
        bowl = task.bowl_pos(env)
        eef = eef_pos(env)
        above = np.array([bowl[0], bowl[1], self.carry_height])
        if np.linalg.norm((above - eef)[:2]) > 0.012:
            return move(env, above, -1.0)
        low = np.array([bowl[0], bowl[1], 0.09])
        if eef[2] > low[2] + 0.01:
            return move(env, low, -1.0, speed=0.03)
        self.goto("release")
        return move(env, low, 1.0)
