"""RLBenchEnv: a gymnasium adapter over RLBench's ``Environment``/``TaskEnvironment``.

rlbench, pyrep and colosseum are imported only when an :class:`RLBenchEnv` is built (never by
``import envs`` or ``import envs.rlbench``); a missing install raises one :class:`StemobError`
with the install steps (:data:`INSTALL_HELP`).

Actions (``action_mode``), the same layouts as the RLBench reader in ``stemob.data.rlbench``:

- ``joint_position`` (default, as GENIMA): 7 absolute joint targets + gripper, through
  ``MoveArmThenGripper(JointPosition(absolute_mode=True), Discrete())``; the gripper opens
  above 0.5 and closes below (RLBench's ``gripper_open`` is 0 or 1).
- ``gripper_pose``: end-effector pose ``x, y, z, qx, qy, qz, qw`` (world frame, quaternion
  normalised here) + gripper, through ``EndEffectorPoseViaPlanning(absolute_mode=True)``.

Observations: ``<camera>_image`` (uint8 HxWx3, upright, as RLBench returns it) for each of
``front``, ``wrist``, ``left_shoulder``, ``right_shoulder``, ``overhead`` requested;
``joint_positions`` (7), ``gripper_open`` (1), ``eef_pos`` (3), ``eef_quat`` (4, w x y z) and
``gripper_pose`` (7, RLBench's x y z qx qy qz qw, as the reader stores it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.options import camera_names, check_choice
from stemob.errors import StemobError

RLBENCH_PIN = "8fc31bfa9120f4c4cdcd7aac53342b676141fe9d"
"""The RLBench commit the backend is written for (envs/rlbench/README.md, "Install")."""
COLOSSEUM_PIN = "098a910ae1d490524adb49b8d50735b00a1a62de"
COLOSSEUM_ENVIRONMENT_ARGS = (12, 13)
"""``Environment.__init__`` parameter counts (with ``self``) Colosseum's EnvironmentExt takes."""
ENV_TYPE = "stemob_rlbench"
"""robomimic ``env_args['type']`` of this backend."""
CAMERAS = ("front", "wrist", "left_shoulder", "right_shoulder", "overhead")
ACTION_MODES = ("joint_position", "gripper_pose")
IMAGE_SUFFIXES = ("image", "rgb")

INSTALL_HELP = """\
the RLBench backend needs CoppeliaSim 4.1, PyRep and RLBench (and Colosseum for perturbations);
{missing}. Install them (see envs/rlbench/README.md):
  1. CoppeliaSim 4.1 (EDU, Ubuntu 20.04 build); then
       export COPPELIASIM_ROOT=/path/to/CoppeliaSim_Edu_V4_1_0_Ubuntu20_04
       export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$COPPELIASIM_ROOT
       export QT_QPA_PLATFORM_PLUGIN_PATH=$COPPELIASIM_ROOT
  2. pip install git+https://github.com/stepjam/PyRep.git
  3. pip install gymnasium git+https://github.com/stepjam/RLBench.git@8fc31bfa9120f4c4cdcd7aac53342b676141fe9d
     (8fc31bfa: the last commit Colosseum accepts, with 8-dim demo actions, joint_poses and
     the reset_to_demo fix; its rlbench/__init__.py imports gymnasium, only a setup.py extra)
  4. (perturbations) pip install hydra-core omegaconf
       git+https://github.com/robot-colosseum/robot-colosseum.git@098a910ae1d490524adb49b8d50735b00a1a62de
     (Colosseum's setup.cfg declares no dependencies; hydra-core is in its requirements.txt)
  Headless machines: run under `xvfb-run -a -s "-screen 0 1400x900x24" python ...`."""


@dataclass
class Backend:
    """The RLBench (and optionally Colosseum) names the adapter uses, imported lazily."""

    Environment: Any
    ObservationConfig: Any
    CameraConfig: Any
    MoveArmThenGripper: Any
    JointPosition: Any
    EndEffectorPoseViaPlanning: Any
    Discrete: Any
    Demo: Any
    InvalidActionError: type
    name_to_task_class: Any
    colosseum: Any = None
    """``None``, or a namespace with ``EnvironmentExt``, ``name_to_class``, ``tasks_py_folder``,
    ``tasks_ttm_folder`` and ``to_config`` (OmegaConf.create)."""


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StemobError(
            INSTALL_HELP.format(missing=f"importing {module!r} failed ({exc})")
        ) from exc


def load_backend(colosseum: bool = False) -> Backend:
    """Import rlbench (and colosseum when asked); a clear StemobError when they are missing."""
    env_mod = _import("rlbench.environment")
    obs_mod = _import("rlbench.observation_config")
    am = _import("rlbench.action_modes.action_mode")
    arm = _import("rlbench.action_modes.arm_action_modes")
    grip = _import("rlbench.action_modes.gripper_action_modes")
    backend = Backend(
        Environment=env_mod.Environment,
        ObservationConfig=obs_mod.ObservationConfig,
        CameraConfig=obs_mod.CameraConfig,
        MoveArmThenGripper=am.MoveArmThenGripper,
        JointPosition=arm.JointPosition,
        EndEffectorPoseViaPlanning=arm.EndEffectorPoseViaPlanning,
        Discrete=grip.Discrete,
        Demo=_import("rlbench.demo").Demo,
        InvalidActionError=_import("rlbench.backend.exceptions").InvalidActionError,
        name_to_task_class=_import("rlbench.utils").name_to_task_class,
    )
    if colosseum:
        count = len(inspect.signature(backend.Environment.__init__).parameters)
        if count not in COLOSSEUM_ENVIRONMENT_ARGS:
            raise StemobError(
                f"Colosseum's EnvironmentExt accepts an RLBench Environment.__init__ with 12 "
                f"(PerAct's fork) or 13 parameters (colosseum/rlbench/extensions/environment.py:"
                f"53-88 at 098a910), this RLBench has {count}: RLBench 02720bba (HEAD) added "
                f"arm_max_velocity and arm_max_acceleration. Install the pin instead:\n"
                f"  pip install git+https://github.com/stepjam/RLBench.git@{RLBENCH_PIN}"
            )
        root = _import("colosseum")
        omegaconf = _import("omegaconf")
        backend.colosseum = _ColosseumNames(
            EnvironmentExt=_import("colosseum.rlbench.extensions.environment").EnvironmentExt,
            name_to_class=_import("colosseum.rlbench.utils").name_to_class,
            tasks_py_folder=root.TASKS_PY_FOLDER,
            tasks_ttm_folder=root.TASKS_TTM_FOLDER,
            to_config=omegaconf.OmegaConf.create,
        )
    return backend


@dataclass
class _ColosseumNames:
    EnvironmentExt: Any
    name_to_class: Any
    tasks_py_folder: str
    tasks_ttm_folder: str
    to_config: Any


def colosseum_available() -> bool:
    """Whether ``colosseum`` can be imported (without importing it)."""
    return importlib.util.find_spec("colosseum") is not None


def _has_enabled_factors(perturbation: Any) -> bool:
    from envs.perturbations.config import load_config

    _, factors = load_config(perturbation)
    return any(f.enabled for f in factors)


class RLBenchEnv(gym.Env):
    """One RLBench task as a gymnasium env (Colosseum perturbations when given).

    Args:
        task: RLBench task file name (``open_drawer``, ``move_hanger``, ...).
        cameras: names among :data:`CAMERAS`.
        image_size: side of the square images RLBench renders.
        action_mode: ``joint_position`` or ``gripper_pose`` (module docstring).
        perturbation: a Colosseum-style YAML path or its dict (roles resolved per task by
            :func:`envs.rlbench.targets.resolve_colosseum_config`), or None.
        colosseum: use Colosseum's ``EnvironmentExt`` and task files: None = when a
            perturbation with enabled factors is given; True = always; False = never
            (then a perturbation with enabled factors is refused).
        variation: the task variation, or -1 to sample one at every reset.
        max_episode_steps: truncation limit.
        headless: run CoppeliaSim without its window (use ``xvfb-run`` on servers).
        image_suffix: ``image`` (``front_image``, as the tabletop suite) or ``rgb``
            (``front_rgb``, as the RLBench reader names frames).
        terminate_on_success: end the episode when RLBench reports the task done.
        backend: an already imported :class:`Backend` (tests pass a fake one).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        task: str = "open_drawer",
        cameras: Sequence[str] = ("front", "wrist"),
        image_size: int = 128,
        action_mode: str = "joint_position",
        perturbation: str | Path | dict | None = None,
        colosseum: bool | None = None,
        variation: int = 0,
        max_episode_steps: int = 200,
        headless: bool = True,
        image_suffix: str = "image",
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
        backend: Backend | None = None,
    ) -> None:
        from envs.perturbations.config import load_config
        from envs.rlbench.targets import resolve_colosseum_config

        cameras = camera_names(cameras, CAMERAS)
        check_choice("action_mode", action_mode, ACTION_MODES)
        if image_suffix not in IMAGE_SUFFIXES:
            raise StemobError(f"image_suffix must be one of {IMAGE_SUFFIXES}, got {image_suffix!r}")
        if int(image_size) < 8:
            raise StemobError(f"image_size must be >= 8, got {image_size}")
        if int(max_episode_steps) < 1:
            raise StemobError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.task_name = task
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.action_mode = action_mode
        self.variation = int(variation)
        self.max_episode_steps = int(max_episode_steps)
        self.headless = bool(headless)
        self.image_suffix = image_suffix
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.perturbation_source, _ = load_config(perturbation)
        enabled = _has_enabled_factors(perturbation) if perturbation is not None else False
        if colosseum is None:
            colosseum = enabled
        if enabled and not colosseum:
            raise StemobError(
                f"option perturbation: enabled factors need Colosseum (colosseum=False given) "
                f"for RLBench task {task!r}"
            )
        self.use_colosseum = bool(colosseum)
        self.colosseum_config = (
            resolve_colosseum_config(perturbation, task) if self.use_colosseum else None
        )
        self.backend = backend or load_backend(colosseum=self.use_colosseum)
        self._launch()

        s = self.image_size
        spaces: dict[str, gym.Space] = {
            self.image_key(c): gym.spaces.Box(0, 255, (s, s, 3), np.uint8) for c in self.cameras
        }
        spaces["joint_positions"] = gym.spaces.Box(-2 * np.pi, 2 * np.pi, (7,), np.float32)
        spaces["gripper_open"] = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        spaces["eef_pos"] = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
        spaces["eef_quat"] = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        spaces["gripper_pose"] = gym.spaces.Box(-np.inf, np.inf, (7,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        if action_mode == "joint_position":
            low = np.array([-2 * np.pi] * 7 + [0.0], np.float32)
        else:
            low = np.array([-np.inf] * 3 + [-1.0] * 4 + [0.0], np.float32)
        high = -low
        high[-1] = 1.0
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.steps = 0
        self.descriptions: list[str] = []
        self._last_obs: dict[str, np.ndarray] | None = None

    # ---------------------------------------------------------------- setup
    def image_key(self, camera: str) -> str:
        """Observation key of ``camera``'s image (``front_image`` or ``front_rgb``)."""
        return f"{camera}_{self.image_suffix}"

    def _obs_config(self) -> Any:
        b = self.backend
        configs = {}
        for cam in CAMERAS:
            cfg = b.CameraConfig(image_size=(self.image_size, self.image_size))
            cfg.set_all(False)
            cfg.rgb = cam in self.cameras
            configs[f"{cam}_camera"] = cfg
        return b.ObservationConfig(
            **configs,
            joint_velocities=False,
            joint_positions=True,
            joint_forces=False,
            gripper_open=True,
            gripper_pose=True,
        )

    def _action_mode(self) -> Any:
        b = self.backend
        if self.action_mode == "joint_position":
            arm = b.JointPosition(absolute_mode=True)
        else:
            arm = b.EndEffectorPoseViaPlanning(absolute_mode=True)
        return b.MoveArmThenGripper(arm_action_mode=arm, gripper_action_mode=b.Discrete())

    _running = 0
    """RLBenchEnvs launched and not closed in this process (PyRep allows one)."""

    def _launch(self) -> None:
        if RLBenchEnv._running:
            raise StemobError(
                "an RLBench env is already running in this process, and PyRep drives one "
                "CoppeliaSim per process (PyRep README.md:185-187): close it first, or run each "
                "env in its own process (envs.subprocess_env.SubprocessEnv; eval.py does this for "
                "RLBench)"
            )
        b = self.backend
        kwargs = {
            "action_mode": self._action_mode(),
            "obs_config": self._obs_config(),
            "headless": self.headless,
        }
        if self.use_colosseum:
            c = b.colosseum
            task_class = c.name_to_class(self.task_name, c.tasks_py_folder)
            if task_class is None:
                raise StemobError(
                    f"option task: Colosseum has no task {self.task_name!r} in {c.tasks_py_folder}"
                )
            self.sim = c.EnvironmentExt(
                **kwargs,
                path_task_ttms=c.tasks_ttm_folder,
                env_config=c.to_config(self.colosseum_config),
            )
        else:
            try:
                task_class = b.name_to_task_class(self.task_name)
            except Exception as exc:  # rlbench.utils.InvalidTaskName
                raise StemobError(
                    f"option task: RLBench has no task {self.task_name!r} ({exc})"
                ) from exc
            self.sim = b.Environment(**kwargs)
        self.sim.launch()
        RLBenchEnv._running += 1
        try:
            self.task_env = self.sim.get_task(task_class)
            count = self.task_env.variation_count()
            if self.variation >= count:
                raise StemobError(
                    f"option variation: task {self.task_name!r} has {count} variations, "
                    f"got {self.variation}"
                )
        except BaseException:
            self.close()  # a refused env must not keep the process's one simulator
            raise

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that recreate this env (robomimic's ``env_kwargs``)."""
        return {
            "task": self.task_name,
            "cameras": list(self.cameras),
            "image_size": self.image_size,
            "action_mode": self.action_mode,
            "perturbation": self.perturbation_source,
            "colosseum": self.use_colosseum,
            "variation": self.variation,
            "max_episode_steps": self.max_episode_steps,
            "image_suffix": self.image_suffix,
            "terminate_on_success": self.terminate_on_success,
        }

    @property
    def env_args(self) -> dict[str, Any]:
        """robomimic's ``{env_name, type, env_kwargs}`` for this env."""
        return {
            "env_name": f"rlbench/{self.task_name}",
            "type": ENV_TYPE,
            "env_kwargs": self.env_kwargs,
        }

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode. RLBench places objects with numpy's global RNG, so ``seed``
        seeds ``np.random`` itself. ``options={'demo': episode}`` restores a recorded
        episode's initial state instead (see :meth:`reset_to_demo`)."""
        super().reset(seed=seed)
        if options and options.get("demo") is not None:
            return self.reset_to_demo(options["demo"])
        if seed is not None:
            np.random.seed(int(seed) % 2**32)
        if self.variation >= 0:
            self.task_env.set_variation(self.variation)
        else:
            self.task_env.sample_variation()
        descriptions, obs = self.task_env.reset()
        return self._start(descriptions, obs)

    def reset_to_demo(self, demo: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset to the initial state of a recorded episode (e.g. a validation episode).

        ``demo`` is an ``episode<N>`` folder, its ``low_dim_obs.pkl`` (read with the restricted
        unpickler of ``stemob.data.rlbench``) or a Demo object. The steps are RLBench's own
        ``TaskEnvironment.reset_to_demo`` (``rlbench/task_environment.py:165-169``, every
        commit): numpy's RNG state saved with the demo is restored, the demo's variation
        (``misc['variation_index']`` of its first frame) is set and ``reset(demo)`` replays the
        placement. They are done here rather than through the task environment's method
        because Colosseum's ``TaskEnvironmentExt.reset_to_demo`` (098a910,
        ``colosseum/rlbench/extensions/task_environment.py:83-85``) is only
        ``restore_state(); reset()``: it keeps whatever variation was set and ignores the
        demo's ``num_reset_attempts``. With RLBench 8fc31bfa (the pin) the placement is
        replayed exactly; 7c3f425 stops at the first collision-free placement and can differ
        from the demo's when its earlier placements failed validation (``scene.py:114-148``).
        Colosseum's own factors are drawn from their own generators in episode order, so the
        perturbation is not the demo's.
        """
        demo = self._as_demo(demo)
        variation = self._demo_variation(demo)
        demo.restore_state()
        self.task_env.set_variation(variation)
        descriptions, obs = self.task_env.reset(demo)
        return self._start(descriptions, obs)

    def _demo_variation(self, demo: Any) -> int:
        misc = getattr(demo._observations[0], "misc", None) or {}
        if "variation_index" not in misc:
            raise StemobError(
                "demo: key 'variation_index' is missing from its first frame's misc: RLBench "
                "writes it from 411105cb on; the demo's variation cannot be restored"
            )
        variation = int(misc["variation_index"])
        count = self.task_env.variation_count()
        if not 0 <= variation < count:
            raise StemobError(
                f"demo: variation_index {variation}, but task {self.task_name!r} has {count}"
            )
        return variation

    def _as_demo(self, demo: Any) -> Any:
        from stemob.data.rlbench import safe_load

        where = "demo"
        if isinstance(demo, str | Path):
            path = Path(demo)
            if path.is_dir():
                path = path / "low_dim_obs.pkl"
            if not path.is_file():
                raise StemobError(f"{path}: no RLBench episode here (expected low_dim_obs.pkl)")
            where = str(path)
            demo = safe_load(path)
        observations = getattr(demo, "_observations", None)
        seed_state = getattr(demo, "random_seed", None)
        if not observations:
            raise StemobError(f"{where}: not an RLBench Demo (no observations)")
        if seed_state is None:
            raise StemobError(
                f"{where}: key 'random_seed' is missing: the episode was saved without numpy's "
                f"RNG state, so its initial state cannot be restored"
            )
        if isinstance(demo, self.backend.Demo):
            return demo
        return self.backend.Demo(
            list(observations), seed_state, getattr(demo, "num_reset_attempts", None)
        )

    def _start(self, descriptions: Any, obs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        self.steps = 0
        self.descriptions = [str(d) for d in (descriptions or [])]
        self._last_obs = self._convert(obs)
        return self._last_obs, self._info(obs, success=False)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise StemobError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        if self._last_obs is None:
            raise StemobError("call reset() before step()")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        if self.action_mode == "gripper_pose":
            norm = np.linalg.norm(a[3:7])
            a[3:7] = a[3:7] / norm if norm > 1e-8 else np.array([0.0, 0.0, 0.0, 1.0])
        self.steps += 1
        truncated = self.steps >= self.max_episode_steps
        try:
            obs, reward, terminate = self.task_env.step(a)
        except self.backend.InvalidActionError as exc:
            info = {"is_success": False, "invalid_action": str(exc)}
            return self._last_obs, 0.0, True, truncated, info
        success = float(reward) >= 1.0
        self._last_obs = self._convert(obs)
        terminated = bool(terminate) and (self.terminate_on_success or not success)
        return self._last_obs, float(success), terminated, truncated, self._info(obs, success)

    def render(self) -> np.ndarray:
        """The first requested camera's latest image."""
        if self._last_obs is None:
            raise StemobError("call reset() before render()")
        return self._last_obs[self.image_key(self.cameras[0])]

    def close(self) -> None:
        sim = getattr(self, "sim", None)
        if sim is not None:
            self.sim = None
            RLBenchEnv._running -= 1
            sim.shutdown()

    # ---------------------------------------------------------------- observations
    def _convert(self, o: Any) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            img = getattr(o, f"{cam}_rgb", None)
            if img is None:
                raise StemobError(f"RLBench returned no image for camera {cam!r}")
            img = np.asarray(img)
            if img.dtype != np.uint8:
                img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            out[self.image_key(cam)] = np.ascontiguousarray(img[..., :3])
        pose = np.asarray(o.gripper_pose, np.float32).reshape(7)
        out["joint_positions"] = np.asarray(o.joint_positions, np.float32).reshape(7)
        out["gripper_open"] = np.array([float(o.gripper_open)], np.float32)
        out["eef_pos"] = pose[:3].copy()
        out["eef_quat"] = pose[[6, 3, 4, 5]].copy()
        out["gripper_pose"] = pose
        return out

    def _info(self, o: Any, success: bool) -> dict[str, Any]:
        info: dict[str, Any] = {
            "is_success": bool(success),
            "descriptions": list(self.descriptions),
        }
        misc = getattr(o, "misc", None) or {}
        if "variation_index" in misc:
            info["variation"] = int(misc["variation_index"])
        cams = {}
        for cam in self.cameras:
            ext, intr = misc.get(f"{cam}_camera_extrinsics"), misc.get(f"{cam}_camera_intrinsics")
            if ext is not None and intr is not None:
                cams[cam] = camera_params_opencv(np.asarray(intr), np.asarray(ext))
        if cams:
            info["cameras"] = cams
        return info


def camera_params_opencv(intrinsics: np.ndarray, extrinsics: np.ndarray) -> dict[str, np.ndarray]:
    """PyRep camera matrices -> the tabletop suite's convention (``intrinsics`` 3x3 with
    positive focal lengths, ``extrinsics`` 4x4 world to camera, OpenCV axes); the conversion is
    :func:`stemob.data.rlbench.pyrep_camera_to_opencv`."""
    from stemob.data.rlbench import pyrep_camera_to_opencv

    k, e = pyrep_camera_to_opencv(intrinsics, extrinsics)
    return {"intrinsics": k, "extrinsics": e}


def make_env_from_args(env_args: dict[str, Any], **overrides: Any) -> RLBenchEnv:
    """An :class:`RLBenchEnv` from robomimic ``env_args`` (``type`` ``stemob_rlbench``)."""
    if env_args.get("type") != ENV_TYPE:
        raise StemobError(f"env_args type {env_args.get('type')!r} is not {ENV_TYPE!r}")
    kwargs = {**(env_args.get("env_kwargs") or {}), **overrides}
    if "task" not in kwargs:
        name = str(env_args.get("env_name", ""))
        kwargs["task"] = name.split("/", 1)[-1]
    return RLBenchEnv(**kwargs)
