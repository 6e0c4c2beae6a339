"""lift_cube: grasp the cube and lift it 8 cm above the table."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.tabletop.tasks.base import Task, free_joint_qpos, quat_yaw, yaw_quat
from envs.tabletop.tasks.common import Expert, eef_pos, move, yaw_error

CUBE_HALF = 0.02


def cube_xml(name: str = "cube", role: str = "manipulated_object") -> str:
    """A free 4 cm cube."""
    return f"""
    <body name="{name}" pos="0.5 0 {CUBE_HALF}">
      <freejoint name="{name}_joint"/>
      <geom name="{name}" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05"
            friction="1.2 0.005 0.0001" material="mat_{role}"/>
    </body>"""


class CubeMixin:
    """A task with a free cube as the manipulated object."""

    def bind_cube(self, model: Any) -> None:
        self.cube_adr = free_joint_qpos(model, "cube_joint")
        self.cube_body = model.body("cube").id

    def cube_half(self, env: Any) -> float:
        return CUBE_HALF * env.role_scale.get("manipulated_object", 1.0)

    def set_cube(self, env: Any, xy: np.ndarray, yaw: float) -> None:
        adr = self.cube_adr
        env.data.qpos[adr : adr + 3] = [xy[0], xy[1], self.cube_half(env)]
        env.data.qpos[adr + 3 : adr + 7] = yaw_quat(yaw)

    def cube_pose(self, env: Any) -> tuple[np.ndarray, float]:
        adr = self.cube_adr
        return env.data.qpos[adr : adr + 3].copy(), quat_yaw(env.data.qpos[adr + 3 : adr + 7])


class LiftCube(CubeMixin, Task):
    """Lift the cube so that its centre is more than 10 cm above the table."""

    name = "lift_cube"
    max_episode_steps = 100
    roles = {"manipulated_object": ("cube",), "receiver_object": ()}
    ranges = {"cube_x": (0.4, 0.6), "cube_y": (-0.1, 0.1), "cube_yaw": (-np.pi / 4, np.pi / 4)}
    lift_height = 0.10

    def bodies_xml(self) -> str:
        return cube_xml()

    def bind(self, model: Any) -> None:
        self.bind_cube(model)

    def place(self, env: Any, rng: np.random.Generator) -> None:
        r = self.ranges
        xy = np.array([rng.uniform(*r["cube_x"]), rng.uniform(*r["cube_y"])])
        self.set_cube(env, xy, rng.uniform(*r["cube_yaw"]))

    def is_success(self, env: Any) -> bool:
        return bool(self.cube_pose(env)[0][2] > self.lift_height)

    def occupied(self, env: Any) -> list[tuple[np.ndarray, float]]:
        return [(self.cube_pose(env)[0][:2], 0.06)]

    def make_expert(self, env: Any) -> Expert:
        return PickExpert(env)


class PickExpert(Expert):
    """Approach above the cube aligned with its yaw, descend, close, lift (then ``after_lift``)."""

    hover = 0.10
    carry_height = 0.16

    def pick(self) -> np.ndarray | None:
        """The grasp phases; returns None once the cube is held up at carry height."""
        env, task = self.env, self.env.task
        pos, yaw = task.cube_pose(env)
        eef = eef_pos(env)
        self.count += 1
        if self.phase == "approach":
            target = pos + [0, 0, self.hover]
            if (
                np.linalg.norm((target - eef)[:2]) < 0.008
                and abs(target[2] - eef[2]) < 0.02
                and yaw_error(env, yaw) < 0.05
            ):
                self.goto("descend")
            return move(env, target, 1.0, yaw)
        if self.phase == "descend":
            target = pos.copy()
            if np.linalg.norm((target - eef)[:2]) > 0.02:
                self.goto("approach")
            elif np.linalg.norm(target - eef) < 0.006 or self.count > 20:
                self.goto("close")
            return move(env, target, 1.0, yaw, speed=0.03)
        if self.phase == "close":
            if self.count >= 6:
                self.goto("lift")
            return move(env, eef, -1.0)
        dropped = pos[2] < task.cube_half(env) + 0.01 and eef[2] > task.cube_half(env) + 0.05
        if self.phase in ("lift", "carry") and dropped:
            self.goto("approach")  # dropped or missed: try again
            return move(env, eef + [0, 0, 0.03], 1.0)
        if self.phase == "lift":
            if eef[2] > self.carry_height - 0.01:
                self.goto("carry")
                return None
            return move(env, np.array([eef[0], eef[1], self.carry_height]), -1.0)
        return None

    def act(self) -> np.ndarray:
        action = self.pick()
        if action is None:
            action = self.after_lift()
        return action

    def after_lift(self) -> np.ndarray:
        """What to do with the cube held up (lift_cube: keep holding it up)."""
        eef = eef_pos(self.env)
        return move(self.env, [eef[0], eef[1], self.carry_height + 0.03], -1.0)
