"""open_drawer: hook the drawer's handle with the closed gripper and pull the drawer open."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.tabletop.tasks.base import Task, yaw_quat
from envs.tabletop.tasks.common import Expert, eef_pos, move, yaw_error

HOOK_HEIGHT = 0.05
GAP = 0.04
"""Free space between the drawer front and the handle bar (m)."""


def _box(pos: tuple, size: tuple, material: str) -> str:
    p = " ".join(f"{v:g}" for v in pos)
    s = " ".join(f"{v:g}" for v in size)
    return f'<geom type="box" pos="{p}" size="{s}" material="{material}"/>'


class OpenDrawer(Task):
    """Success: the drawer is pulled out by more than 10 cm."""

    name = "open_drawer"
    max_episode_steps = 120
    roles = {"manipulated_object": ("drawer",), "receiver_object": ("cabinet",)}
    size_roles = {"manipulated_object": ("handle",), "receiver_object": ("cabinet",)}
    ranges = {"cabinet_x": (0.62, 0.7), "cabinet_y": (-0.15, 0.15), "cabinet_yaw": (-0.3, 0.3)}
    open_distance = 0.10

    def bodies_xml(self) -> str:
        ro, mo = "mat_receiver_object", "mat_manipulated_object"
        cabinet = "\n      ".join(
            [
                _box((0, 0, 0.005), (0.1, 0.12, 0.005), ro),
                _box((0, 0, 0.115), (0.1, 0.12, 0.005), ro),
                _box((0, 0.115, 0.06), (0.1, 0.005, 0.055), ro),
                _box((0, -0.115, 0.06), (0.1, 0.005, 0.055), ro),
                _box((0.095, 0, 0.06), (0.005, 0.11, 0.055), ro),
            ]
        )
        drawer = "\n        ".join(
            [
                _box((-0.095, 0, 0.06), (0.005, 0.108, 0.048), mo),
                _box((0, 0, 0.016), (0.09, 0.1, 0.005), mo),
                _box((0, 0.1, 0.04), (0.09, 0.004, 0.02), mo),
                _box((0, -0.1, 0.04), (0.09, 0.004, 0.02), mo),
                _box((0.086, 0, 0.04), (0.004, 0.1, 0.02), mo),
            ]
        )
        handle = "\n          ".join(
            [  # in the handle's frame (on the drawer front)
                _box((-GAP - 0.005, 0, 0), (0.005, 0.05, 0.005), mo),
                _box((-GAP / 2, 0.045, 0), (GAP / 2, 0.005, 0.005), mo),
                _box((-GAP / 2, -0.045, 0), (GAP / 2, 0.005, 0.005), mo),
            ]
        )
        return f"""
    <body name="cabinet" mocap="true" pos="0.66 0 0">
      {cabinet}
      <body name="drawer">
        <joint name="drawer" type="slide" axis="-1 0 0" range="0 0.16" damping="3"/>
        {drawer}
        <body name="handle" pos="-0.1 0 0.07">
          <site name="hook" pos="{-GAP / 2} 0 0" size="0.005" rgba="0 0 0 0"/>
          {handle}
        </body>
      </body>
    </body>"""

    def bind(self, model: Any) -> None:
        self.mocap = int(model.body_mocapid[model.body("cabinet").id])
        self.drawer_adr = int(model.jnt_qposadr[model.joint("drawer").id])
        self.hook = model.site("hook").id

    def place(self, env: Any, rng: np.random.Generator) -> None:
        r = self.ranges
        env.data.mocap_pos[self.mocap] = [
            rng.uniform(*r["cabinet_x"]),
            rng.uniform(*r["cabinet_y"]),
            0.0,
        ]
        env.data.mocap_quat[self.mocap] = yaw_quat(rng.uniform(*r["cabinet_yaw"]))

    def opening(self, env: Any) -> float:
        return float(env.data.qpos[self.drawer_adr])

    def is_success(self, env: Any) -> bool:
        return self.opening(env) > self.open_distance

    def frame(self, env: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """(hook point, pull direction (unit, world xy), cabinet yaw)."""
        q = env.data.mocap_quat[self.mocap]
        yaw = float(2 * np.arctan2(q[3], q[0]))
        pull = np.array([-np.cos(yaw), -np.sin(yaw)])
        return env.data.site_xpos[self.hook].copy(), pull, yaw

    def occupied(self, env: Any) -> list[tuple[np.ndarray, float]]:
        c = env.data.mocap_pos[self.mocap][:2]
        _, pull, _ = self.frame(env)
        return [(c, 0.2), (c + pull * 0.2, 0.12)]

    def make_expert(self, env: Any) -> Expert:
        return DrawerExpert(env)


class DrawerExpert(Expert):
    """Closed gripper above the gap behind the handle, lower into it, pull along the drawer axis."""

    def act(self) -> np.ndarray:
        env, task = self.env, self.env.task
        hook, pull, yaw = task.frame(env)
        eef = eef_pos(env)
        finger_yaw = yaw + np.pi / 2  # fingers along the handle bar: thin side in the gap
        low = np.array([hook[0], hook[1], HOOK_HEIGHT])
        self.count += 1
        if self.phase == "approach":
            goal = np.array([hook[0], hook[1], 0.2])
            if np.linalg.norm(goal - eef) < 0.01 and yaw_error(env, finger_yaw, np.pi) < 0.04:
                self.goto("lower")
            return move(env, goal, -1.0, finger_yaw, period=np.pi)
        if self.phase == "lower":
            if np.linalg.norm((low - eef)[:2]) > 0.02:
                self.goto("approach")
            elif abs(low[2] - eef[2]) < 0.008:
                self.goto("pull")
            return move(env, low, -1.0, finger_yaw, period=np.pi, speed=0.03)
        if eef[2] > HOOK_HEIGHT + 0.03:
            self.goto("approach")
        goal = low.copy()
        goal[:2] += pull * 0.04
        return move(env, goal, -1.0, finger_yaw, period=np.pi, speed=0.025)
