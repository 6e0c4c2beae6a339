"""A fake RLBench (+ Colosseum) backend for testing :mod:`envs.rlbench` without CoppeliaSim.

Re-derived from the real sources, commit by commit (read with ``git show <commit>:<path>``; no
code copied). Each behaviour below names where it comes from:

stepjam/RLBench at 8fc31bfa (``RLBENCH_PIN``, what envs/rlbench/README.md installs), 7c3f425
(Colosseum's documented pin) and 02720bba (HEAD):

- ``rlbench.environment.Environment.__init__``: 13 parameters counting ``self`` at 7c3f425 and
  8fc31bfa (``environment.py:29-42``); 15 at 02720bba, which adds ``arm_max_velocity`` and
  ``arm_max_acceleration`` (``environment.py:30-45``, commit 4c35bc63). ``launch()``,
  ``shutdown()``, ``get_task(task_class)``.
- One simulator per process: PyRep drives one CoppeliaSim library through module-level state
  (``pyrep/backend/sim.py:2``, ``pyrep/pyrep.py:94-103``; README.md:185-187 "Each PyRep instance
  needs its own process"). The fake refuses a second launched ``Environment`` in a process.
- ``TaskEnvironment.reset(demo=None)`` (``task_environment.py:75-90``): a demo with
  ``num_reset_attempts`` places objects in "demo" mode. 7c3f425 still tries up to 40 placements
  and stops at the first one, skipping ``task.validate()`` (``scene.py:114-148``), so a demo
  whose earlier placements failed validation replays differently; 8fc31bfa and 02720bba
  re-sample exactly ``num_reset_attempts`` times (commit c7c50edb) and replay it. Here a
  placement "fails validation" when the object's x is above 0.1.
- ``TaskEnvironment.reset_to_demo(demo)`` (``task_environment.py:165-169``, every commit):
  ``demo.restore_state()``, ``set_variation(demo._observations[0].misc['variation_index'])``,
  ``reset(demo)``. ``Demo.restore_state()`` is ``np.random.set_state(random_seed)``
  (``demo.py:17-20``); ``random_seed`` is numpy's state before the live demo's reset and
  ``num_reset_attempts`` the placements it took (``task_environment.py:149-154``,
  ``scene.py:444/452``).
- ``TaskEnvironment.step``: the action mode, then ``task.success()`` once; reward
  ``float(success)`` (``task_environment.py:95-109``).
- ``JointPosition(absolute_mode=True)`` (``arm_action_modes.py:97-134``): sets the joint targets,
  runs exactly one ``scene.step()`` and sets the targets back to the reached positions, so the
  arm moves only as far as one 50 ms physics step takes it. Here: at most
  :data:`MAX_JOINT_STEP` rad per joint per step.
- ``Discrete()`` gripper (``gripper_action_modes.py:40-89``): ``action > 0.5`` opens; a change
  actuates over several physics steps (counted in ``scene.physics_steps``), 10 more after
  opening; success is not checked during them.
- ``EndEffectorPoseViaPlanning`` raises ``InvalidActionError`` when no path is found.
- Observation ``misc`` (``scene.py:_get_misc``): ``<cam>_camera_{extrinsics,intrinsics,near,
  far}`` (camera to world; PyRep's negative fx, fy), ``variation_index``; live demos record the
  commanded joint targets: ``executed_demo_joint_position_action`` (7 joints, only after path
  steps) at 7c3f425, ``joint_position_action`` (7 joints + gripper) from 790a90ed;
  ``joint_poses`` (7 x [x y z qx qy qz qw]) from 8fc31bfa.

robot-colosseum/robot-colosseum at 098a910 (``COLOSSEUM_COMMIT``) and 9141099 (GENIMA's pin):

- ``EnvironmentExt.__init__`` counts ``Environment.__init__``'s parameters: 12 (PerAct's fork)
  or 13 (upstream), anything else raises ``RuntimeError('Unexpected number of arguments in
  Environment.__init__')`` (``colosseum/rlbench/extensions/environment.py:53-88`` at 098a910,
  51-86 at 9141099). Reads ``env_config.scene.factors``; each factor draws from its own
  ``default_rng(seed)`` once per episode (``variations/variation.py:46-50``), whatever numpy's
  global state, so ``restore_state()`` does not bring a perturbation back.
- At 098a910 ``get_task`` returns a ``TaskEnvironmentExt`` whose ``reset_to_demo`` is only
  ``demo.restore_state(); return self.reset()`` (``extensions/task_environment.py:83-85``):
  neither the demo's variation nor its placement count is used. 9141099 has no such class and
  uses RLBench's ``TaskEnvironment``.

The simulation is a toy: a 7-joint arm, one object placed with ``np.random`` at reset, success
once joint 0 passes 1.0 rad, images whose pixel values encode the object position, joint 0, the
gripper and the Colosseum ``object_color``/``light_color`` draws.

    with fake_rlbench() as fake:
        env = RLBenchEnv("open_drawer", perturbation=...)   # goes to the fake
        fake.launched[-1].env_config                        # what Colosseum was given

For processes of their own (``SubprocessEnv``), :func:`fake_env_factory` installs the fake in the
child and builds the env there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

RLBENCH_PIN = "8fc31bfa"
RLBENCH_COMMITS = ("7c3f425", "8fc31bfa", "02720bba")
COLOSSEUM_COMMIT = "098a910ae1d490524adb49b8d50735b00a1a62de"
COLOSSEUM_COMMITS = ("098a910", "9141099")
FAKE_TASKS = ("open_drawer", "move_hanger", "basketball_in_hoop", "close_box")
_CAMS = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")
MAX_JOINT_STEP = 0.1
"""rad a joint moves in one 50 ms physics step (Panda joints: about 2.2 rad/s)."""
GRIPPER_STEPS = 5
"""Physics steps a gripper actuation takes in the fake."""
_MAX_RESET_ATTEMPTS = 40


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
    """rlbench.demo.Demo."""

    def __init__(
        self, observations: list, random_seed: Any = None, num_reset_attempts: Any = None
    ) -> None:
        self._observations = observations
        self.random_seed = random_seed
        self.num_reset_attempts = num_reset_attempts

    def __len__(self) -> int:
        return len(self._observations)

    def __getitem__(self, i: int) -> Any:
        return self._observations[i]

    def restore_state(self) -> None:
        np.random.set_state(self.random_seed)


# pickles made inside the fake name the real modules, as RLBench's own files do
Demo.__module__ = "rlbench.demo"
Observation.__module__ = "rlbench.backend.observation"


class JointPosition:
    def __init__(self, absolute_mode: bool = True) -> None:
        self._absolute_mode = absolute_mode

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        assert np.shape(action) == (7,), np.shape(action)
        target = np.array(action if self._absolute_mode else scene.joints + action, float)
        scene.step_arm(target)


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
        target = scene.joints.copy()
        target[0] = float(action[0])  # toy kinematics: x drives joint 0; the path is followed
        while not np.allclose(scene.joints, target):
            scene.step_arm(target)


class Discrete:
    def __init__(
        self, attach_grasped_objects: bool = True, detach_before_open: bool = True
    ) -> None:
        pass

    def action(self, scene: _Scene, action: np.ndarray) -> None:
        assert np.shape(action) == (1,), np.shape(action)
        if 0.0 > action[0] > 1.0:  # the condition RLBench has (never true)
            raise InvalidActionError("Gripper action expected to be within 0 and 1.")
        opened = float(action[0] > 0.5)
        if opened != scene.gripper:
            scene.physics_steps += GRIPPER_STEPS + (10 if opened else 0)
            scene.gripper = opened


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

    def success(self, scene: _Scene) -> bool:
        return bool(scene.joints[0] > 1.0)


def _task_class(name: str) -> type:
    return type("".join(w.title() for w in name.split("_")), (_Task,), {"name": name})


def name_to_task_class(task_file: str) -> type:
    name = task_file.replace(".py", "")
    if name not in FAKE_TASKS:
        raise InvalidTaskName(f"The task file '{name}' does not exist or cannot be compiled.")
    return _task_class(name)


class _Scene:
    def __init__(self, obs_config: ObservationConfig, factors: list[dict], commit: str) -> None:
        self.obs_config = obs_config
        self.commit = commit
        self.factors = [f for f in factors if f.get("enabled", True)]
        self.rngs = [np.random.default_rng(f.get("seed")) for f in self.factors]
        self.joints = np.zeros(7)
        self.gripper = 1.0
        self.eef = np.array([0.3, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        self.object_xy = np.zeros(2)
        self.tint = np.zeros(3)
        self.light = 1.0
        self.variation = 0
        self.attempts = 0
        self.physics_steps = 0
        self.recording = False
        self.last_target: np.ndarray | None = None

    def step_arm(self, target: np.ndarray) -> None:
        """One physics step toward ``target`` (JointPosition's single ``scene.step()``)."""
        self.joints = self.joints + np.clip(target - self.joints, -MAX_JOINT_STEP, MAX_JOINT_STEP)
        self.physics_steps += 1
        self.last_target = np.array(target, float)

    def init_episode(
        self, variation: int, max_attempts: int = _MAX_RESET_ATTEMPTS, place_demo: bool = False
    ) -> list[str]:
        self.variation = variation
        self.joints = np.zeros(7)
        self.gripper = 1.0
        self.tint, self.light = np.zeros(3), 1.0
        for f, rng in zip(self.factors, self.rngs, strict=True):  # Colosseum: before placement
            if f["variation"] == "object_color":
                self.tint = rng.uniform(*f.get("color_range", [[0, 0, 0], [1, 1, 1]]))
            elif f["variation"] == "light_color":
                self.light = float(rng.uniform(*f["color_range"])[0])
        self.attempts = 0
        while self.attempts < max_attempts:
            self.object_xy = np.random.uniform(-0.2, 0.2, 2)
            self.attempts += 1
            if place_demo and self.commit == "7c3f425":
                break  # the first collision-free placement, validate() skipped
            if place_demo:
                continue  # 8fc31bfa / 02720bba: exactly num_reset_attempts draws
            if self.object_xy[0] <= 0.1:  # task.validate() passes
                break
        else:
            if not place_demo:
                raise RuntimeError("Could not place the task in the scene.")
        return [f"variation {variation}"]

    def observation(self) -> Observation:
        misc: dict[str, Any] = {"variation_index": self.variation}
        fields: dict[str, Any] = {"misc": misc}
        for cam in _CAMS:
            cfg = getattr(self.obs_config, f"{cam}_camera")
            img = None
            h, w = cfg.image_size
            if cfg.rgb:
                img = np.zeros((h, w, 3), np.uint8)
                img[..., 0] = int(np.clip(128 + 300 * self.object_xy[0], 0, 255))
                img[..., 1] = int(np.clip(40 * self.joints[0] + 100, 0, 255))
                img[..., 2] = int(np.clip(255 * self.tint.mean() * self.light, 0, 255))
                img[: h // 2, : w // 2] = 255 * self.gripper  # top-left marks upright frames
            ext = np.eye(4)
            ext[:3, 3] = [1.0, 0.0, 1.0]
            misc[f"{cam}_camera_extrinsics"] = ext
            misc[f"{cam}_camera_intrinsics"] = np.array(
                [[-100.0, 0, w / 2], [0, -100.0, h / 2], [0, 0, 1]]
            )
            misc[f"{cam}_camera_near"], misc[f"{cam}_camera_far"] = 0.01, 4.5
            fields[f"{cam}_rgb"] = img
        if self.commit != "7c3f425":
            misc["joint_poses"] = [
                np.array([0.1 * j, 0.0, 0.8 + 0.05 * q, 0.0, 0.0, 0.0, 1.0])
                for j, q in enumerate(self.joints)
            ]
        if self.recording and self.last_target is not None:
            if self.commit == "7c3f425":
                misc["executed_demo_joint_position_action"] = self.last_target.copy()
                self.last_target = None  # consumed by this observation (scene.py:548-551)
            else:
                misc["joint_position_action"] = np.append(self.last_target, self.gripper)
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
        place_demo = demo is not None and getattr(demo, "num_reset_attempts", None) is not None
        if place_demo and self._scene.commit != "7c3f425":
            attempts = int(demo.num_reset_attempts)
        else:
            attempts = _MAX_RESET_ATTEMPTS
        desc = self._scene.init_episode(self._variation_number, attempts, place_demo)
        self._reset_called = True
        self._scene.last_target = None
        return desc, self._scene.observation()

    def step(self, action: np.ndarray) -> tuple[Observation, float, bool]:
        if not self._reset_called:
            raise RuntimeError("Call 'reset' before calling 'step' on a task.")
        self._action_mode.action(self._scene, action)
        success = self._task.success(self._scene)
        return self._scene.observation(), float(success), success

    def reset_to_demo(self, demo: Demo) -> tuple[list[str], Observation]:
        demo.restore_state()
        self.set_variation(demo._observations[0].misc["variation_index"])
        return self.reset(demo)

    def get_demos(self, amount: int, live_demos: bool = False) -> list[Demo]:
        """Live demos only: a scripted path that drives joint 0 past 1.0 rad, closing the gripper
        half way (``scene.get_demo`` records an observation after every path step)."""
        if not live_demos:
            raise RuntimeError("the fake holds no stored demos")
        demos = []
        for _ in range(amount):
            random_seed = np.random.get_state()
            self.reset()
            scene = self._scene
            observations = [scene.observation()]
            scene.recording = True
            target = np.linspace(1.2, 0.3, 7)  # joint 0 (the task's) to 1.2 rad
            while not self._task.success(scene):
                scene.step_arm(target)
                observations.append(scene.observation())
                if scene.joints[0] > 0.5 and scene.gripper == 1.0:  # gripper: no arm target
                    scene.gripper = 0.0
                    scene.last_target = scene.last_target if scene.commit != "7c3f425" else None
                    observations.append(scene.observation())
            scene.recording = False
            demos.append(Demo(observations, random_seed, scene.attempts))
        return demos


class TaskEnvironmentExt(TaskEnvironment):
    """colosseum.rlbench.extensions.task_environment.TaskEnvironmentExt (098a910 only)."""

    def reset_to_demo(self, demo: Demo) -> tuple[list[str], Observation]:
        demo.restore_state()
        return self.reset()


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
        self.task_environment_class: type = TaskEnvironment
        _STATE.launched.append(self)

    def launch(self) -> None:
        if self._pyrep is not None:
            raise RuntimeError("Already called launch!")
        if _STATE.running:
            raise RuntimeError(
                "a CoppeliaSim instance is already running in this process: PyRep allows one "
                "per process (PyRep README.md:185-187)"
            )
        self._pyrep = object()
        _STATE.running += 1

    def shutdown(self) -> None:
        if self._pyrep is not None:
            _STATE.running -= 1
        self._pyrep = None
        _STATE.shutdowns += 1

    def get_task(self, task_class: type) -> TaskEnvironment:
        if self._pyrep is None:
            self.launch()
        scene = _Scene(self._obs_config, self.factors, _STATE.rlbench_commit)
        return self.task_environment_class(scene, task_class(), self._action_mode)


def _head_init(
    self: Any,
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
    arm_max_velocity: float = 1.0,
    arm_max_acceleration: float = 4.0,
) -> None:
    Environment.__init__(self, action_mode, dataset_root, obs_config, headless)


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
        import inspect

        base = sys.modules["rlbench.environment"].Environment
        count = len(inspect.signature(base.__init__).parameters)
        if count not in (12, 13):
            raise RuntimeError("Unexpected number of arguments in Environment.__init__")
        base.__init__(self, action_mode, dataset_root, obs_config, headless)
        self.env_config = env_config
        self.path_task_ttms = path_task_ttms
        scene = env_config["scene"] if env_config is not None and "scene" in env_config else {}
        self.factors = [dict(f) for f in (scene.get("factors") or [])]
        if _STATE.colosseum_commit == "098a910":
            self.task_environment_class = TaskEnvironmentExt


def name_to_class(task_name: str, tasks_py_folder: str = "") -> type | None:
    return _task_class(task_name) if task_name in FAKE_TASKS else None


class _FakeState:
    def __init__(self, rlbench_commit: str = RLBENCH_PIN, colosseum_commit: str = "098a910"):
        self.launched: list[Environment] = []
        self.shutdowns = 0
        self.running = 0
        self.rlbench_commit = rlbench_commit
        self.colosseum_commit = colosseum_commit


_STATE = _FakeState()
_INSTALLED: list[Any] = []


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__file__ = f"<fake {name}>"
    return mod


def _fake_modules(colosseum: bool, rlbench_commit: str) -> dict[str, types.ModuleType]:
    environment = Environment
    if rlbench_commit == "02720bba":  # two more arm parameters (4c35bc63)
        environment = type("Environment", (Environment,), {"__init__": _head_init})
    mods = {
        "rlbench": _module("rlbench"),
        "rlbench.environment": _module("rlbench.environment", Environment=environment),
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
        "rlbench.backend.observation": _module(
            "rlbench.backend.observation", Observation=Observation
        ),
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
def fake_rlbench(
    colosseum: bool = True, rlbench_commit: str = RLBENCH_PIN, colosseum_commit: str = "098a910"
) -> Iterator[_FakeState]:
    """Install the fake ``rlbench`` (and ``colosseum``) modules, behaving like the given commits
    (:data:`RLBENCH_COMMITS`, :data:`COLOSSEUM_COMMITS`), for the duration of the block."""
    global _STATE
    if rlbench_commit not in RLBENCH_COMMITS or colosseum_commit not in COLOSSEUM_COMMITS:
        raise ValueError(f"unknown commit {rlbench_commit!r} / {colosseum_commit!r}")
    mods = _fake_modules(colosseum, rlbench_commit)
    saved = {name: sys.modules.get(name) for name in mods}
    previous, _STATE = _STATE, _FakeState(rlbench_commit, colosseum_commit)
    sys.modules.update(mods)
    try:
        yield _STATE
    finally:
        _STATE = previous
        adapter = sys.modules.get("envs.rlbench.env")
        if adapter is not None:  # the block's simulators end with it, as with a process's
            adapter.RLBenchEnv._running = 0
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def fake_env_factory(env_args: dict[str, Any], perturbation: Any = None) -> Any:
    """``(env_args, perturbation) -> RLBenchEnv`` on the fake, installed for good in this
    process: the picklable factory of subprocess envs in tests (each child has its own fake)."""
    from envs.rlbench.env import make_env_from_args

    colosseum = perturbation is not None or bool(env_args.get("env_kwargs", {}).get("colosseum"))
    fake = fake_rlbench(colosseum=colosseum)
    fake.__enter__()  # stays installed: the child process exists for this env only
    _INSTALLED.append(fake)  # (a collected generator would run its exit and uninstall it)
    overrides = {} if perturbation is None else {"perturbation": perturbation}
    return make_env_from_args(dict(env_args), **overrides)


__all__ = [
    "COLOSSEUM_COMMIT",
    "FAKE_TASKS",
    "MAX_JOINT_STEP",
    "RLBENCH_PIN",
    "fake_env_factory",
    "fake_rlbench",
]
