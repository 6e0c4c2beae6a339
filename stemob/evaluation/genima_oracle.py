"""GENIMA's controller evaluated on oracle targets: the spheres drawn from the scripted expert.

At each decision the wrapper copies the simulator state, lets the task's scripted expert act
``horizon`` steps ahead (physics only, no rendering), reads the arm's joint and gripper poses
there, restores the state, and draws those poses as GENIMA's spheres on every camera's current
frame (``<cam>_target``). The controller (an ACT trained on ``<cam>_target`` keys of a GENIMA
dataset, :mod:`stemob.genima.dataset`) then runs its chunk open loop, so its success measures the
controller alone, apart from any diffusion agent. ``python eval.py checkpoint=<controller>
genima_oracle.horizon=20`` turns it on (tabletop suite).

Targets are redrawn every ``horizon`` steps (the controller's execution horizon); the expert that
looks ahead is the one that looked ahead last time, advanced by those steps, so its state machine
follows the episode. Between decisions the last targets are returned (the controller executes its
chunk without looking). ``background="texture"`` (``genima_oracle.background``) puts the spheres
on a random texture instead of the frame, as in the controller's training inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from stemob.errors import StemobError
from stemob.evaluation.genima_targets import TargetSchedule
from stemob.genima.dataset import check_background, on_random_texture
from stemob.genima.targets import TargetStyle, draw_spheres, target_spheres


def _clone_expert(expert: Any) -> Any:
    """A copy of a scripted expert that shares its env but none of its own state."""
    clone = copy.copy(expert)
    clone.__dict__ = {
        k: (v if k == "env" else copy.deepcopy(v)) for k, v in expert.__dict__.items()
    }
    return clone


class OracleTargets(TargetSchedule):
    """Adds ``<cam>_target``: the camera's frame with the expert's pose ``horizon`` steps ahead
    drawn as GENIMA's spheres (a tabletop env in ``joint_position`` action mode)."""

    def __init__(
        self,
        env: gym.Env,
        horizon: int = 20,
        style: TargetStyle | None = None,
        background: str = "scene",
    ) -> None:
        base = env.unwrapped
        if not hasattr(base, "task") or not hasattr(base.task, "make_expert"):
            raise StemobError(
                f"genima_oracle needs a tabletop env with a scripted expert, got {type(base).__name__}"
            )
        if getattr(base, "action_mode", None) != "joint_position":
            raise StemobError(
                "genima_oracle: the env must use action_mode=joint_position (GENIMA's controller "
                f"outputs joint positions), got {getattr(base, 'action_mode', None)!r}"
            )
        self.cameras = list(base.cameras)
        super().__init__(env, self.cameras, horizon, "genima_oracle")
        self.style = style or TargetStyle()
        self.background = check_background(background, "genima_oracle.background")
        self._expert: Any = None
        self.target_pose: dict[str, np.ndarray] = {}
        """The pose drawn in the current targets (see :meth:`_look`)."""

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        base = self.env.unwrapped
        self._expert = base.task.make_expert(base)
        return super().reset(**kwargs)

    def _look(self) -> tuple[dict[str, np.ndarray], Any]:
        """The expert's pose ``horizon`` steps ahead of the current state, which is restored
        (``joint_world_pos`` (7, 3), ``gripper_world_pos`` (3,), ``gripper_open`` (1,)), and the
        expert as it is after looking (advanced ``horizon`` steps)."""
        base = self.env.unwrapped
        state = base.get_state()
        goal = (base.controller.goal_pos.copy(), base.controller.goal_quat.copy())
        expert = _clone_expert(self._expert)
        try:
            for _ in range(self.horizon):
                base.simulate(base.ee_to_joint_action(expert.act()))
            poses = base.joint_world_poses()
            gripper_open = base.gripper_open()
        finally:
            base.set_state(state)
            base.controller.goal_pos, base.controller.goal_quat = goal
        pose = {
            "joint_world_pos": poses["joint_world_pos"],
            "gripper_world_pos": poses["gripper_world_pos"],
            "gripper_open": gripper_open,
        }
        return pose, expert

    def draw(
        self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any], seed: int
    ) -> dict[str, np.ndarray]:
        pose, self._expert = self._look()  # the episode advances as far before the next
        self.target_pose = pose
        cameras = info.get("cameras") or {
            c: self.env.unwrapped.camera_params(c) for c in self.cameras
        }
        targets = {}
        for index, cam in enumerate(self.cameras):
            spheres = target_spheres(
                pose["gripper_world_pos"],
                float(pose["gripper_open"][0]),
                pose["joint_world_pos"],
                cam,
                self.style,
            )
            params = cameras[cam]
            image, mask = draw_spheres(
                obs[f"{cam}_image"], spheres, params["intrinsics"], params["extrinsics"]
            )
            if self.background == "texture":  # the same texture per (episode, drawing, view)
                image = on_random_texture(image, mask, seed, view=index)
            targets[f"{cam}_target"] = image
        return targets


@dataclass
class OracleEnvFactory:
    """``(env_args, perturbation) -> OracleTargets(env)``: picklable, so the envs may run in
    their own processes (``eval.py env_processes=true``)."""

    horizon: int = 20
    style: TargetStyle = field(default_factory=TargetStyle)
    background: str = "scene"

    def __call__(self, env_args: Mapping[str, Any], perturbation: Any) -> OracleTargets:
        from stemob.evaluation.rollout import default_env_factory

        env = default_env_factory(env_args, perturbation)
        return OracleTargets(env, self.horizon, self.style, self.background)

    def describe(self) -> dict[str, Any]:
        """What a resumed evaluation must match (the background only when it is not the scene,
        so evaluations from before the option resume)."""
        out = {"horizon": self.horizon, "style": repr(self.style)}
        return out if self.background == "scene" else {**out, "background": self.background}
