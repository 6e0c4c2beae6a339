"""push_to_target: push the puck (manipulated object) onto the target disc (receiver object)."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.tabletop.tasks.base import Task, free_joint_qpos, sample_separated
from envs.tabletop.tasks.common import Expert, eef_pos, move

PUCK_RADIUS = 0.03
PUCK_HALF = 0.015
TARGET_RADIUS = 0.05
PUSH_HEIGHT = 0.02


class PushToTarget(Task):
    """Success: the puck's centre is within 3 cm of the target's centre."""

    name = "push_to_target"
    max_episode_steps = 120
    roles = {"manipulated_object": ("puck",), "receiver_object": ("target",)}
    ranges = {
        "puck_x": (0.4, 0.55), "puck_y": (-0.15, 0.15),
        "target_x": (0.35, 0.62), "target_y": (-0.2, 0.2), "distance": (0.1, 0.25),
    }  # fmt: skip
    tolerance = 0.03

    def bodies_xml(self) -> str:
        return f"""
    <body name="puck" pos="0.5 0 {PUCK_HALF}">
      <freejoint name="puck_joint"/>
      <geom name="puck" type="cylinder" size="{PUCK_RADIUS} {PUCK_HALF}" mass="0.08"
            friction="0.4 0.005 0.0001" material="mat_manipulated_object"/>
    </body>
    <body name="target" mocap="true" pos="0.5 0.2 0">
      <geom name="target" type="cylinder" size="{TARGET_RADIUS} 0.001" pos="0 0 0.001"
            contype="0" conaffinity="0" material="mat_receiver_object"/>
    </body>"""

    def bind(self, model: Any) -> None:
        self.puck_adr = free_joint_qpos(model, "puck_joint")
        self.mocap = int(model.body_mocapid[model.body("target").id])

    def puck_pos(self, env: Any) -> np.ndarray:
        return env.data.qpos[self.puck_adr : self.puck_adr + 3].copy()

    def target_pos(self, env: Any) -> np.ndarray:
        return env.data.mocap_pos[self.mocap].copy()

    def place(self, env: Any, rng: np.random.Generator) -> None:
        r = self.ranges
        half = PUCK_HALF * env.role_scale.get("manipulated_object", 1.0)
        for _ in range(200):
            puck, target = sample_separated(
                rng,
                [(r["puck_x"], r["puck_y"]), (r["target_x"], r["target_y"])],
                r["distance"][0],
            )
            if np.linalg.norm(puck - target) <= r["distance"][1]:
                break
        env.data.qpos[self.puck_adr : self.puck_adr + 7] = [*puck, half, 1, 0, 0, 0]
        env.data.mocap_pos[self.mocap] = [target[0], target[1], 0.0]

    def is_success(self, env: Any) -> bool:
        d = self.puck_pos(env)[:2] - self.target_pos(env)[:2]
        return bool(np.linalg.norm(d) < self.tolerance)

    def occupied(self, env: Any) -> list[tuple[np.ndarray, float]]:
        puck, target = self.puck_pos(env)[:2], self.target_pos(env)[:2]
        out = [(target, TARGET_RADIUS + 0.04)]
        # Keep the whole pushing corridor (and the approach behind the puck) clear.
        for t in np.linspace(-0.4, 1.0, 8):
            out.append((puck + t * (target - puck), 0.07))
        return out

    def make_expert(self, env: Any) -> Expert:
        return PushExpert(env)


class PushExpert(Expert):
    """Close the gripper, go behind the puck on the target line, lower, push; realign if needed."""

    def act(self) -> np.ndarray:
        env, task = self.env, self.env.task
        puck, target = task.puck_pos(env), task.target_pos(env)
        scale = env.role_scale.get("manipulated_object", 1.0)
        radius = PUCK_RADIUS * scale
        d = target[:2] - puck[:2]
        dist = float(np.linalg.norm(d))
        d = d / max(dist, 1e-6)
        eef = eef_pos(env)
        behind = puck[:2] - d * (radius + 0.03)
        self.count += 1
        if self.phase == "approach":
            goal = np.array([*behind, 0.1])
            if np.linalg.norm(goal - eef) < 0.01:
                self.goto("lower")
            return move(env, goal, -1.0)
        if self.phase == "lower":
            goal = np.array([*behind, PUSH_HEIGHT])
            if np.linalg.norm(goal - eef) < 0.008:
                self.goto("push")
            return move(env, goal, -1.0, speed=0.03)
        # push: aim the hand at the target through the puck, re-approach if off the line.
        rel = puck[:2] - eef[:2]
        lateral = abs(rel[0] * d[1] - rel[1] * d[0])
        if lateral > 0.015 or float(rel @ d) < 0:
            self.goto("retreat")
        if self.phase == "retreat":
            if eef[2] > 0.08:
                self.goto("approach")
            return move(env, eef + [0, 0, 0.05], -1.0)
        goal_xy = eef[:2] + d * min(0.02, dist + 0.005)
        side = np.array([-d[1], d[0]])
        goal_xy += side * float(rel @ side) * 0.5
        return move(env, np.array([*goal_xy, PUSH_HEIGHT]), -1.0, speed=0.02)
