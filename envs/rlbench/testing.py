"""A fake RLBench (+ Colosseum) backend for testing :mod:`envs.rlbench` without CoppeliaSim.

It mirrors, signature for signature, the subset of the API that the adapter calls, as found in

- stepjam/RLBench at commit 7c3f425f4a0b6b5ce001ba7246354eb3c70555be (the commit Colosseum's
  installation guide pins; the same signatures hold at 02720bba4c73fe02eb75df946b8791b806028a9d,
  where ``Environment.__init__`` gained ``arm_max_velocity``/``arm_max_acceleration``):
  ``rlbench.environment.Environment(action_mode, dataset_root='', obs_config=..., headless=False,
  static_positions=False, robot_setup='panda', randomize_every=None, frequency=1,
  visual_randomization_config=None, dynamics_randomization_config=None,
  attach_grasped_objects=True, shaped_rewards=False)`` with ``launch()``, ``shutdown()``,
  ``get_task(task_class) -> TaskEnvironment``; ``TaskEnvironment.get_name()``,
  ``sample_variation()``, ``set_variation(v)`` (raises past ``variation_count()``),
  ``variation_count()``, ``reset(demo=None) -> (descriptions, Observation)``,
  ``step(action) -> (Observation, reward, terminate)`` (reward = float(success) without shaped
  rewards; raises before ``reset``), ``reset_to_demo(demo)`` (``demo.restore_state()``, variation
  from ``demo._observations[0].misc['variation_index']``, then ``reset(demo)``);
  ``rlbench.demo.Demo(observations, random_seed=None, num_reset_attempts=None)`` whose
  ``restore_state()`` is ``np.random.set_state(random_seed)``;
  ``rlbench.observation_config.CameraConfig(rgb=True, ..., image_size=(128, 128), ...)`` with
  ``set_all(value)`` and ``ObservationConfig(left_shoulder_camera=None, right_shoulder_camera=None,
  overhead_camera=None, wrist_camera=None, front_camera=None, joint_velocities=True, ...,
  gripper_open=True, gripper_pose=True, ...)``; ``MoveArmThenGripper(arm_action_mode,
  gripper_action_mode)`` (arm action first, then the gripper's); ``JointPosition(absolute_mode=
  True)``; ``EndEffectorPoseViaPlanning(absolute_mode=True, frame='world',
  collision_checking=False)`` (raises ``InvalidActionError`` when no path is found);
  ``Discrete(attach_grasped_objects=True, detach_before_open=True)`` (> 0.5 opens);
  ``rlbench.utils.name_to_task_class(task_file)`` (raises ``InvalidTaskName``);
  ``rlbench.backend.exceptions.InvalidActionError``. Observation images are uint8 (H, W, 3),
  ``gripper_open`` a float 0/1, ``gripper_pose`` x y z qx qy qz qw, ``misc`` holds
  ``<cam>_camera_extrinsics`` (camera to world), ``<cam>_camera_intrinsics`` (negative fx, fy)
  and ``variation_index``.
- robot-colosseum/robot-colosseum at commit 098a910ae1d490524adb49b8d50735b00a1a62de:
  ``colosseum.TASKS_PY_FOLDER``/``TASKS_TTM_FOLDER``,
  ``colosseum.rlbench.extensions.environment.EnvironmentExt(action_mode, dataset_root='',
  obs_config=..., headless=False, ..., path_task_ttms=..., env_config=DictConfig({}))`` (reads
  ``env_config.scene.factors``; each factor's draws come from ``default_rng(seed)`` at every
  episode), ``colosseum.rlbench.utils.name_to_class(task_name, tasks_py_folder) -> type | None``.

No code is copied; the simulation is a toy: a 7-joint arm whose joints jump to their targets,
one object placed with ``np.random`` at reset, success once joint 0 passes 1.0 rad, images
whose pixel values encode the object position, joint 0, the gripper and the Colosseum
``object_color``/``light_color`` draws.

    with fake_rlbench() as fake:
        env = RLBenchEnv("open_drawer", perturbation=...)   # goes to the fake
        fake.launched[-1].env_config                        # what Colosseum was given
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

RLBENCH_COMMIT = "7c3f425f4a0b6b5ce001ba7246354eb3c70555be"
COLOSSEUM_COMMIT = "098a910ae1d490524adb49b8d50735b00a1a62de"
FAKE_TASKS = ("open_drawer", "move_hanger", "basketball_in_hoop", "close_box")
_CAMS = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")


class InvalidActionError(Exception):
    """rlbench.backend.exceptions.InvalidActionError."""


class InvalidTaskName(Exception):
    """rlbench.utils.InvalidTaskName."""


class CameraConfig:
    def __init__(
        self,
        rgb: bool = True,
        rgb_noise: Any = None,
        depth: bool = True,
        depth_noise: Any = None,
        point_cloud: bool = True,
        mask: bool = True,
        image_size: tuple[int, int] = (128, 128),
        render_mode: Any = None,
        masks_as_one_channel: bool = True,
        depth_in_meters: bool = False,
    ) -> None:
        self.rgb, self.depth, self.point_cloud, self.mask = rgb, depth, point_cloud, mask
        self.image_size = image_size

    def set_all(self, value: bool) -> None:
        self.rgb = self.depth = self.point_cloud = self.mask = value


class ObservationConfig:
    def __init__(
        self,
        left_shoulder_camera: CameraConfig | None = None,
        right_shoulder_camera: CameraConfig | None = None,
        overhead_camera: CameraConfig | None = None,
        wrist_camera: CameraConfig | None = None,
        front_camera: CameraConfig | None = None,
        joint_velocities: bool = True,
        joint_velocities_noise: Any = None,
        joint_positions: bool = True,
        joint_positions_noise: Any = None,
        joint_forces: bool = True,
        joint_forces_noise: Any = None,
        gripper_open: bool = True,
        gripper_pose: bool = True,
        gripper_matrix: bool = False,
        gripper_joint_positions: bool = False,
        gripper_touch_forces: bool = False,
        wrist_camera_matrix: bool = False,
        record_gripper_closing: bool = False,
        task_low_dim_state: bool = False,
    ) -> None:
        given = locals()
        for cam in _CAMS:
            setattr(self, f"{cam}_camera", given[f"{cam}_camera"] or CameraConfig())
        self.joint_positions, self.gripper_open = joint_positions, gripper_open
        self.gripper_pose = gripper_pose


class Observation:
    """rlbench.backend.observation.Observation (the fields the adapter reads)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class Demo:
    def __init__(
        self, observations: list, random_seed: Any = None, num_reset_attempts: Any = None
    ) -> None:
        self._observations = observations
        self.random_seed = random_seed
        self.num_reset_attempts = num_reset_attempts

    def __len__(self) -> int:
        return len(self._observations)

    def restore_state(self) -> None:
        np.random.set_state(self.random_seed)


class JointPosition:
    def __init__(self, absolute_mode: bool = True) -> None:
        self._absolute_mode = absolute_mode

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        assert np.shape(action) == (7,), np.shape(action)
        scene.joints = np.array(action if self._absolute_mode else scene.joints + action, float)


class EndEffectorPoseViaPlanning:
    def __init__(
        self, absolute_mode: bool = True, frame: str = "world", collision_checking: bool = False
    ) -> None:
        if frame not in ("world", "end effector"):
            raise ValueError("Expected frame to one of: 'world, 'end effector'")
        self._absolute_mode = absolute_mode

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        assert np.shape(action) == (7,), np.shape(action)
        assert abs(np.linalg.norm(action[3:]) - 1.0) < 1e-3, "quaternion not unit length"
        if np.linalg.norm(action[:3]) > 1.5:
            raise InvalidActionError("A path could not be found.")
        scene.eef = np.array(action, float)
        scene.joints[0] = float(action[0])  # toy kinematics: x drives joint 0


class Discrete:
    def __init__(
        self, attach_grasped_objects: bool = True, detach_before_open: bool = True
    ) -> None:
        pass

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        assert np.shape(action) == (1,), np.shape(action)
        if 0.0 > action[0] > 1.0:  # the condition RLBench has (never true)
            raise InvalidActionError("Gripper action expected to be within 0 and 1.")
        scene.gripper = float(action[0] > 0.5)


class MoveArmThenGripper:
    def __init__(self, arm_action_mode: Any, gripper_action_mode: Any) -> None:
        self.arm_action_mode = arm_action_mode
        self.gripper_action_mode = gripper_action_mode

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        self.arm_action_mode.action(scene, np.array(action[:7]))
        self.gripper_action_mode.action(scene, np.array(action[7:]))


class _Task:
    """A toy task; subclasses per name (``OpenDrawer``...) made by ``name_to_task_class``."""

    name = "task"
    variations = 3

    def __init__(self, pyrep: Any = None, robot: Any = None) -> None:
        pass

    def get_name(self) -> str:
        return self.name

    def variation_count(self) -> int:
        return self.variations


def _task_class(name: str) -> type:
    return type("".join(w.title() for w in name.split("_")), (_Task,), {"name": name})


def name_to_task_class(task_file: str) -> type:
    name = task_file.replace(".py", "")
    if name not in FAKE_TASKS:
        raise InvalidTaskName(f"The task file '{name}' does not exist or cannot be compiled.")
    return _task_class(name)


class _Scene:
    def __init__(self, obs_config: ObservationConfig, factors: list[dict]) -> None:
        self.obs_config = obs_config
        self.factors = [f for f in factors if f.get("enabled", True)]
        self.rngs = [np.random.default_rng(f.get("seed")) for f in self.factors]
        self.joints = np.zeros(7)
        self.gripper = 1.0
        self.eef = np.array([0.3, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        self.object_xy = np.zeros(2)
        self.tint = np.zeros(3)
        self.light = 1.0
        self.variation = 0

    def init_episode(self, variation: int) -> list[str]:
        self.variation = variation
        self.joints = np.zeros(7)
        self.gripper = 1.0
        self.object_xy = np.random.uniform(-0.2, 0.2, 2)
        self.tint, self.light = np.zeros(3), 1.0
        for f, rng in zip(self.factors, self.rngs, strict=True):
            if f["variation"] == "object_color":
                self.tint = rng.uniform(*f.get("color_range", [[0, 0, 0], [1, 1, 1]]))
            elif f["variation"] == "light_color":
                self.light = float(rng.uniform(*f["color_range"])[0])
        return [f"variation {variation}"]

    def observation(self) -> Observation:
        fields: dict[str, Any] = {"misc": {"variation_index": self.variation}}
        for cam in _CAMS:
            cfg = getattr(self.obs_config, f"{cam}_camera")
            img = None
            if cfg.rgb:
                h, w = cfg.image_size
                img = np.zeros((h, w, 3), np.uint8)
                img[..., 0] = int(np.clip(128 + 300 * self.object_xy[0], 0, 255))
                img[..., 1] = int(np.clip(40 * self.joints[0] + 100, 0, 255))
                img[..., 2] = int(np.clip(255 * self.tint.mean() * self.light, 0, 255))
                img[: h // 2, : w // 2] = 255 * self.gripper  # top-left marks upright frames
                ext = np.eye(4)
                ext[:3, 3] = [1.0, 0.0, 1.0]
                fields["misc"][f"{cam}_camera_extrinsics"] = ext
                fields["misc"][f"{cam}_camera_intrinsics"] = np.array(
                    [[-100.0, 0, w / 2], [0, -100.0, h / 2], [0, 0, 1]]
                )
            fields[f"{cam}_rgb"] = img
        fields["joint_positions"] = self.joints.copy()
        fields["gripper_open"] = self.gripper
        fields["gripper_pose"] = self.eef.copy()
        return Observation(**fields)


class TaskEnvironment:
    def __init__(self, scene: _Scene, task: _Task, action_mode: Any) -> None:
        self._scene, self._task, self._action_mode = scene, task, action_mode
        self._variation_number = 0
        self._reset_called = False

    def get_name(self) -> str:
        return self._task.get_name()

    def sample_variation(self) -> int:
        self._variation_number = np.random.randint(0, self._task.variation_count())
        return self._variation_number

    def set_variation(self, v: int) -> None:
        if v >= self.variation_count():
            raise RuntimeError(f"Requested variation {v}, but there are only fewer.")
        self._variation_number = v

    def variation_count(self) -> int:
        return self._task.variation_count()

    def reset(self, demo: Any = None) -> tuple[list[str], Observation]:
        desc = self._scene.init_episode(self._variation_number)
        self._reset_called = True
        return desc, self._scene.observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        if not self._reset_called:
            raise RuntimeError("Call 'reset' before calling 'step' on a task.")
        self._action_mode.action(self._scene, action)
        success = bool(self._scene.joints[0] > 1.0)
        return self._scene.observation(), float(success), success

    def reset_to_demo(self, demo: Demo) -> tuple[list[str], Observation]:
        demo.restore_state()
        self.set_variation(demo._observations[0].misc["variation_index"])
        return self.reset(demo)


class Environment:
    def __init__(
        self,
        action_mode: Any,
        dataset_root: str = "",
        obs_config: ObservationConfig | None = None,
        headless: bool = False,
        static_positions: bool = False,
        robot_setup: str = "panda",
        randomize_every: Any = None,
        frequency: int = 1,
        visual_randomization_config: Any = None,
        dynamics_randomization_config: Any = None,
        attach_grasped_objects: bool = True,
        shaped_rewards: bool = False,
    ) -> None:
        self._action_mode = action_mode
        self._obs_config = obs_config or ObservationConfig()
        self._headless = headless
        self._pyrep: Any = None
        self.factors: list[dict] = []
        _STATE.launched.append(self)

    def launch(self) -> None:
        if self._pyrep is not None:
            raise RuntimeError("Already called launch!")
        self._pyrep = object()

    def shutdown(self) -> None:
        self._pyrep = None
        _STATE.shutdowns += 1

    def get_task(self, task_class: type) -> TaskEnvironment:
        if self._pyrep is None:
            self.launch()
        scene = _Scene(self._obs_config, self.factors)
        return TaskEnvironment(scene, task_class(), self._action_mode)


class EnvironmentExt(Environment):
    def __init__(
        self,
        action_mode: Any,
        dataset_root: str = "",
        obs_config: ObservationConfig | None = None,
        headless: bool = False,
        static_positions: bool = False,
        robot_setup: str = "panda",
        randomize_every: Any = None,
        use_variations: bool = True,
        frequency: int = 1,
        vis_random_config: Any = None,
        dyn_random_config: Any = None,
        attach_grasped_objects: bool = True,
        shaped_rewards: bool = False,
        path_task_ttms: str = "",
        env_config: Any = None,
    ) -> None:
        super().__init__(action_mode, dataset_root, obs_config, headless)
        self.env_config = env_config
        self.path_task_ttms = path_task_ttms
        scene = env_config["scene"] if env_config is not None and "scene" in env_config else {}
        self.factors = [dict(f) for f in (scene.get("factors") or [])]


def name_to_class(task_name: str, tasks_py_folder: str = "") -> type | None:
    return _task_class(task_name) if task_name in FAKE_TASKS else None


class _FakeState:
    def __init__(self) -> None:
        self.launched: list[Environment] = []
        self.shutdowns = 0


_STATE = _FakeState()


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__file__ = f"<fake {name}>"
    return mod


def _fake_modules(colosseum: bool) -> dict[str, types.ModuleType]:
    mods = {
        "rlbench": _module("rlbench"),
        "rlbench.environment": _module("rlbench.environment", Environment=Environment),
        "rlbench.observation_config": _module(
            "rlbench.observation_config",
            ObservationConfig=ObservationConfig,
            CameraConfig=CameraConfig,
        ),
        "rlbench.action_modes": _module("rlbench.action_modes"),
        "rlbench.action_modes.action_mode": _module(
            "rlbench.action_modes.action_mode", MoveArmThenGripper=MoveArmThenGripper
        ),
        "rlbench.action_modes.arm_action_modes": _module(
            "rlbench.action_modes.arm_action_modes",
            JointPosition=JointPosition,
            EndEffectorPoseViaPlanning=EndEffectorPoseViaPlanning,
        ),
        "rlbench.action_modes.gripper_action_modes": _module(
            "rlbench.action_modes.gripper_action_modes", Discrete=Discrete
        ),
        "rlbench.demo": _module("rlbench.demo", Demo=Demo),
        "rlbench.backend": _module("rlbench.backend"),
        "rlbench.backend.exceptions": _module(
            "rlbench.backend.exceptions", InvalidActionError=InvalidActionError
        ),
        "rlbench.utils": _module(
            "rlbench.utils", name_to_task_class=name_to_task_class, InvalidTaskName=InvalidTaskName
        ),
    }
    if colosseum:
        mods["colosseum"] = _module(
            "colosseum", TASKS_PY_FOLDER="<fake tasks>", TASKS_TTM_FOLDER="<fake ttms>"
        )
        mods["colosseum.rlbench"] = _module("colosseum.rlbench")
        mods["colosseum.rlbench.extensions"] = _module("colosseum.rlbench.extensions")
        mods["colosseum.rlbench.extensions.environment"] = _module(
            "colosseum.rlbench.extensions.environment", EnvironmentExt=EnvironmentExt
        )
        mods["colosseum.rlbench.utils"] = _module(
            "colosseum.rlbench.utils", name_to_class=name_to_class
        )
        if importlib.util.find_spec("omegaconf") is None:
            # Colosseum depends on omegaconf (through hydra-core); a plain dict stands in here.
            omegaconf = types.SimpleNamespace(create=lambda d: d)
            mods["omegaconf"] = _module("omegaconf", OmegaConf=omegaconf)
    return mods


@contextlib.contextmanager
def fake_rlbench(colosseum: bool = True) -> Iterator[_FakeState]:
    """Install the fake ``rlbench`` (and ``colosseum``) modules for the duration of the block."""
    global _STATE
    mods = _fake_modules(colosseum)
    saved = {name: sys.modules.get(name) for name in mods}
    previous, _STATE = _STATE, _FakeState()
    sys.modules.update(mods)
    try:
        yield _STATE
    finally:
        _STATE = previous
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


__all__ = ["COLOSSEUM_COMMIT", "FAKE_TASKS", "RLBENCH_COMMIT", "fake_rlbench"]
