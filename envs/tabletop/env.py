"""TabletopEnv: the gymnasium environment of the embedded MuJoCo tabletop suite."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.options import camera_names, check_choice
from envs.tabletop.robot import (
    ARM_JOINTS,
    FINGER_MAX,
    HOME_GUESS,
    ArmController,
    RobotIndex,
)
from envs.tabletop.scene import CAMERAS, build_scene_xml
from envs.tabletop.tasks import make_task
from stemob.errors import StemobError

ACTION_MODES = ("ee_delta", "joint_position")
CONTROL_HZ = 20
MAX_DPOS = 0.05
"""Largest end-effector translation per step (m, per axis)."""
MAX_DROT = 0.5
"""Largest rotation per step (rad, per axis-angle component)."""
HOME_POS = np.array([0.45, 0.0, 0.25])
DOWN_QUAT = np.array([0.0, 0.0, 1.0, 0.0])
STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
"""What ``get_state``/``set_state`` save: qpos, qvel, act, ctrl, mocap poses, time, warm start."""
_HOME_CACHE: dict[str, np.ndarray] = {}


class TabletopEnv(gym.Env):
    """A 7-DoF arm on a table with one task, rendered from fixed and wrist cameras.

    Args:
        task: ``lift_cube``, ``push_to_target``, ``open_drawer`` or ``put_in_bowl``.
        perturbation: a Colosseum-style YAML path, its parsed dict, or None.
        image_size: side of the square RGB images.
        cameras: names among ``front``, ``wrist``, ``overhead``.
        action_mode: ``ee_delta`` (dx, dy, dz, rx, ry, rz, gripper) or ``joint_position``
            (7 absolute joint targets, gripper); gripper -1 closes and +1 opens.
        terminate_on_success: end the episode as soon as the task is done.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str = "lift_cube",
        perturbation: str | Path | dict | None = None,
        image_size: int = 96,
        cameras: Sequence[str] = ("front", "wrist"),
        action_mode: str = "ee_delta",
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        from envs.perturbations import PerturbationSet

        cameras = camera_names(cameras, CAMERAS)
        check_choice("action_mode", action_mode, ACTION_MODES)
        if int(image_size) < 8:
            raise StemobError(f"image_size must be >= 8, got {image_size}")
        self.task_name = task
        self.task = make_task(task)
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.action_mode = action_mode
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.xml = build_scene_xml(self.task.bodies_xml(), self.task.role_rgba, self.image_size)
        self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        self.idx = RobotIndex.from_model(self.model)
        self.n_substeps = int(round(1.0 / (CONTROL_HZ * self.model.opt.timestep)))
        self.home = self._home()
        self.controller = ArmController(self.model, self.home)
        self.renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self.role_scale: dict[str, float] = {}
        self.perturbations = PerturbationSet.load(perturbation, self)
        self.reset_seed = 0

        s = self.image_size
        spaces: dict[str, gym.Space] = {
            f"{c}_image": gym.spaces.Box(0, 255, (s, s, 3), np.uint8) for c in self.cameras
        }
        spaces["joint_positions"] = gym.spaces.Box(
            self.idx.low.astype(np.float32), self.idx.high.astype(np.float32), dtype=np.float32
        )
        spaces["gripper_open"] = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        spaces["eef_pos"] = gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
        spaces["eef_quat"] = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        if action_mode == "ee_delta":
            high = np.array([MAX_DPOS] * 3 + [MAX_DROT] * 3 + [1.0], np.float32)
            self.action_space = gym.spaces.Box(-high, high, dtype=np.float32)
        else:
            low = np.concatenate([self.idx.low, [-1.0]]).astype(np.float32)
            high = np.concatenate([self.idx.high, [1.0]]).astype(np.float32)
            self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

    # ---------------------------------------------------------------- setup
    def _home(self) -> np.ndarray:
        if "home" not in _HOME_CACHE:
            ctrl = ArmController(self.model, HOME_GUESS, iterations=60, damping=0.02)
            _HOME_CACHE["home"] = ctrl.solve(HOME_GUESS, HOME_POS, DOWN_QUAT)
        return _HOME_CACHE["home"].copy()

    @property
    def env_args(self) -> dict[str, Any]:
        """robomimic's ``{env_name, type, env_kwargs}`` for this env."""
        from envs import GYM_IDS
        from envs.record import ENV_TYPE

        return {
            "env_name": GYM_IDS[self.task_name],
            "type": ENV_TYPE,
            "env_kwargs": self.env_kwargs,
        }

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that recreate this env (robomimic's ``env_kwargs``)."""
        return {
            "task": self.task_name,
            "action_mode": self.action_mode,
            "cameras": list(self.cameras),
            "image_size": self.image_size,
            "perturbation": self.perturbations.source,
            "terminate_on_success": self.terminate_on_success,
        }

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.reset_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        self.perturbations.restore(self, upload=False)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self.idx.qpos] = self.home
        self.data.qpos[self.idx.finger_qpos] = FINGER_MAX
        self.data.ctrl[self.idx.act] = self.home
        self.data.ctrl[self.idx.finger_act] = FINGER_MAX
        self.perturbations.apply_model(self, self.reset_seed)
        self.task.place(self, self.np_random)
        mujoco.mj_forward(self.model, self.data)
        self.perturbations.apply_scene(self, self.reset_seed)
        mujoco.mj_forward(self.model, self.data)
        self.controller.sync_goal(self.data)
        self.steps = 0
        return self._obs(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        self.simulate(action)
        self.steps += 1
        success = self.task.is_success(self)
        obs, info = self._obs(), self._info()
        return obs, float(success), bool(success and self.terminate_on_success), False, info

    def simulate(self, action: np.ndarray) -> None:
        """Apply one action and advance the physics by one control step, without rendering or
        bookkeeping (what :meth:`step` does first; look-ahead planners call it alone)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:  # before clipping, whose broadcast would hide it
            raise StemobError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        if self.action_mode == "ee_delta":
            q = self.controller.apply_delta(self.data, a[:3], a[3:6])
        else:
            q = a[:7]
        self.data.ctrl[self.idx.act] = q
        self.data.ctrl[self.idx.finger_act] = self.gripper_target(a[-1])
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        # mj_step leaves poses one substep stale: refresh them for rendering and observations.
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)
        if self.action_mode != "ee_delta":
            self.controller.sync_goal(self.data)

    @staticmethod
    def gripper_target(command: float) -> float:
        """Finger position target for a gripper command in [-1, 1] (closing squeezes a little)."""
        return float((command + 1.0) / 2.0 * (FINGER_MAX + 0.01) - 0.01)

    def ee_to_joint_action(self, action: np.ndarray) -> np.ndarray:
        """Joint-position action equivalent to an ``ee_delta`` action from the current state."""
        high = np.array([MAX_DPOS] * 3 + [MAX_DROT] * 3 + [1.0])
        a = np.clip(np.asarray(action, float), -high, high)
        saved = (self.controller.goal_pos.copy(), self.controller.goal_quat.copy())
        q = self.controller.apply_delta(self.data, a[:3], a[3:6])
        self.controller.goal_pos, self.controller.goal_quat = saved
        return np.concatenate([q, [a[-1]]]).astype(np.float32)

    def render(self) -> np.ndarray:
        """The first requested camera's image."""
        return self.render_camera(self.cameras[0])

    def render_camera(self, camera: str) -> np.ndarray:
        """A fresh upright RGB image (H, W, 3) uint8 from ``camera``."""
        self.renderer.update_scene(self.data, camera=camera)
        return self.renderer.render()

    def close(self) -> None:
        if getattr(self, "renderer", None) is not None:
            self.renderer.close()
            self.renderer = None

    # ---------------------------------------------------------------- state
    @property
    def max_episode_steps(self) -> int:
        """The task's step limit."""
        return int(self.task.max_episode_steps)

    def make_expert(self) -> Any:
        """The task's scripted expert for the current episode."""
        return self.task.make_expert(self)

    def get_state(self) -> np.ndarray:
        """The simulator state (``mjSTATE_INTEGRATION``) as a flat float64 array."""
        out = np.empty(mujoco.mj_stateSize(self.model, STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, out, STATE_SPEC)
        return out

    def set_state(self, state: np.ndarray) -> None:
        """Restore a state from ``get_state`` (then recompute positions)."""
        mujoco.mj_setState(self.model, self.data, np.asarray(state, np.float64), STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        self.controller.sync_goal(self.data)

    def is_success(self) -> bool:
        return self.task.is_success(self)

    def observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The observation and info of the current state (after :meth:`set_state`)."""
        return self._obs(), self._info()

    # ---------------------------------------------------------------- observations
    def _obs(self) -> dict[str, np.ndarray]:
        obs = {f"{c}_image": self.render_camera(c) for c in self.cameras}
        pos, quat = self.controller.eef_pose(self.data)
        obs["joint_positions"] = self.data.qpos[self.idx.qpos].astype(np.float32)
        obs["gripper_open"] = self.gripper_open()
        obs["eef_pos"] = pos.astype(np.float32)
        obs["eef_quat"] = quat.astype(np.float32)
        return obs

    def gripper_open(self) -> np.ndarray:
        """How far the fingers are open, ``(1,)`` in [0, 1] (the ``gripper_open`` observation)."""
        fingers = self.data.qpos[self.idx.finger_qpos]
        return np.array([np.clip(fingers.mean() / FINGER_MAX, 0, 1)], np.float32)

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.task.is_success(self),
            "cameras": {c: self.camera_params(c) for c in self.cameras},
            **self.joint_world_poses(),
        }

    def camera_params(self, camera: str) -> dict[str, np.ndarray]:
        """Intrinsics (3x3, pixels) and OpenCV-convention extrinsics (4x4 world->camera)."""
        from envs.cameras import mujoco_camera_params

        return mujoco_camera_params(self.model, self.data, camera, self.image_size)

    def joint_world_poses(self) -> dict[str, np.ndarray]:
        """World positions (7, 3) and quaternions (7, 4) of the arm's joints, and the gripper's."""
        jids = [self.model.joint(n).id for n in ARM_JOINTS]
        bodies = self.model.jnt_bodyid[jids]
        pos, quat = self.controller.eef_pose(self.data)
        return {
            "joint_world_pos": self.data.xanchor[jids].copy(),
            "joint_world_quat": self.data.xquat[bodies].copy(),
            "gripper_world_pos": pos,
            "gripper_world_quat": quat,
        }
