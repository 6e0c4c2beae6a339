"""RobosuiteEnv: a robosuite 1.5 env rebuilt from robomimic ``env_args``, as a gymnasium env.

Observations: robosuite's own keys (``<camera>_image`` uint8 HxWx3 made upright whatever
``robosuite.macros.IMAGE_CONVENTION`` says, ``robot0_eef_pos``, ``robot0_eef_quat``,
``robot0_gripper_qpos``, ...; ``object-state`` also as ``object``, robomimic's name) plus the
tabletop suite's ``joint_positions``, ``eef_pos``, ``eef_quat`` (w, x, y, z) and ``gripper_open``
(the fingers' spread over the Panda's 0.08 m). ``info`` holds ``is_success`` (the task's
``_check_success``), the cameras' matrices (``cameras``) and the arm's joint and gripper world
poses, as the tabletop suite's (so ``envs.rerender`` adds them to robosuite demos and GENIMA's
targets can be drawn from the file).

Old (robosuite <= 1.4) ``controller_configs`` in ``env_kwargs`` are converted with robosuite's
``refactor_composite_controller_config``. ``reset(seed=s)`` reseeds the env's own generator
(object placement, initial joint noise) so episode i is the same for every method.
Rendering: shadows, reflections and offscreen multisampling off unless ``fast_render=False``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.robosuite.types import ROBOSUITE_TYPE
from stemob.errors import StemobError

INSTALL_HELP = (
    "the robosuite backend needs the optional extra: pip install -e '.[robosuite]' "
    "(robosuite 1.5.x, numpy<2; mujoco stays 3.3.0)"
)
_FORCED = ("has_renderer", "has_offscreen_renderer", "use_camera_obs", "ignore_done")


def _import_robosuite() -> Any:
    try:
        import robosuite
    except ImportError as exc:
        raise StemobError(f"{INSTALL_HELP} ({exc})") from exc
    return robosuite


def _register_mimicgen(env_name: str) -> None:
    """MimicGen's envs (``Stack_D0``...) exist once ``mimicgen`` is imported; import it then."""
    import importlib.util

    from robosuite.environments.base import REGISTERED_ENVS

    if env_name not in REGISTERED_ENVS and importlib.util.find_spec("mimicgen") is not None:
        import mimicgen  # noqa: F401  (registers its environments with robosuite)


class RobosuiteEnv(gym.Env):
    """A robosuite task rebuilt from a robomimic/MimicGen dataset's ``env_args``.

    Args:
        env_name: robosuite env name (``Lift``, ``PickPlaceCan``, MimicGen's ``Stack_D0``...).
        env_kwargs: robosuite keyword arguments as stored in ``env_args['env_kwargs']``.
        cameras: camera names to render (default: ``env_kwargs['camera_names']``); empty for none.
        image_size: square image side (default: ``env_kwargs['camera_heights']``).
        perturbation: a Colosseum-style YAML path or its dict (supported factors only).
        fast_render: shadows, reflections and multisampling off (much faster on CPU).
        visual_mesh_cell: if set (metres), render the visual-only meshes with their vertices
            clustered on a grid of this size (:mod:`envs.robosuite.meshes`); physics unchanged.
            Off by default: frames differ slightly from robosuite's.
        hard_reset: reload the model at every reset (robosuite's default; slow). Off here.
        max_episode_steps: truncation limit (default: ``env_kwargs['horizon']`` or 500).
        terminate_on_success: end the episode when the task is done.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        env_name: str,
        env_kwargs: dict[str, Any] | None = None,
        cameras: Sequence[str] | str | None = None,
        image_size: int | None = None,
        perturbation: str | Path | dict | None = None,
        fast_render: bool = True,
        visual_mesh_cell: float | None = None,
        hard_reset: bool = False,
        max_episode_steps: int | None = None,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        from envs.robosuite.meshes import checked_cell
        from envs.robosuite.perturb import RobosuitePerturbations

        robosuite = _import_robosuite()
        from robosuite.controllers.composite.composite_controller_factory import (
            refactor_composite_controller_config,
        )

        self.env_name = str(env_name)
        self.source_kwargs = copy.deepcopy(dict(env_kwargs or {}))
        kwargs = copy.deepcopy(self.source_kwargs)
        kwargs.pop("env_name", None)
        if isinstance(cameras, str):
            cameras = [c for c in cameras.split(",") if c]
        if cameras is None:
            cameras = kwargs.get("camera_names", []) if kwargs.get("use_camera_obs", True) else []
            cameras = [cameras] if isinstance(cameras, str) else list(cameras)
        self.cameras = tuple(cameras)
        size = image_size if image_size is not None else kwargs.get("camera_heights", 84)
        if isinstance(size, list | tuple):
            size = size[0]
        if int(size) < 8:
            raise StemobError(f"image_size must be >= 8, got {size}")
        self.image_size = int(size)
        self.perturbations = RobosuitePerturbations(perturbation, self.env_name)
        self.visual_mesh_cell = None if visual_mesh_cell is None else checked_cell(visual_mesh_cell)
        robots = kwargs.get("robots", "Panda")
        robot = robots if isinstance(robots, str) else robots[0]
        if kwargs.get("controller_configs") is None:  # robosuite's default, written out
            from robosuite.controllers import load_composite_controller_config

            kwargs["controller_configs"] = load_composite_controller_config(robot=robot)
            self.source_kwargs["controller_configs"] = copy.deepcopy(kwargs["controller_configs"])
        kwargs["controller_configs"] = refactor_composite_controller_config(
            kwargs["controller_configs"], robot, ["right"]
        )
        # robosuite draws build-time randomness (Lift's cube size, 0.020-0.022 m) from an
        # unseeded generator: seeded here, so every env of a run (each factor, each sub-env of
        # an evaluation) builds the same scene; reset(seed=...) reseeds the generator after.
        kwargs.setdefault("seed", 0)
        kwargs.update(
            has_renderer=False,
            has_offscreen_renderer=bool(self.cameras),
            use_camera_obs=bool(self.cameras),
            ignore_done=True,
            hard_reset=bool(hard_reset),
        )
        if self.cameras:
            kwargs.update(
                camera_names=list(self.cameras),
                camera_heights=self.image_size,
                camera_widths=self.image_size,
                camera_depths=False,
            )
        _register_mimicgen(self.env_name)
        try:
            self.env = robosuite.make(self.env_name, **kwargs)
        except Exception as exc:  # robosuite raises plain Exceptions for bad names/kwargs
            raise StemobError(
                f"env_args: robosuite could not build {self.env_name!r} from env_kwargs "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.fast_render = bool(fast_render)
        self._ctx = None
        self.mesh_stats = None  # envs.robosuite.meshes.ClusterStats once visual_mesh_cell applies
        self._prepare_render()
        self.perturbations.validate(self.env)
        self.flip = robosuite.macros.IMAGE_CONVENTION == "opengl"
        horizon = kwargs.get("horizon", 500)
        self.max_episode_steps = int(max_episode_steps or horizon)
        self.terminate_on_success = terminate_on_success
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": int(kwargs.get("control_freq", 20))}
        self.steps = 0
        self.reset_seed = 0
        low, high = self.env.action_spec
        self.action_space = gym.spaces.Box(
            np.asarray(low, np.float32), np.asarray(high, np.float32), dtype=np.float32
        )
        obs = self._convert(self.env._get_observations(force_update=True))
        self.observation_space = gym.spaces.Dict(
            {
                k: gym.spaces.Box(0, 255, v.shape, np.uint8)
                if v.dtype == np.uint8
                else gym.spaces.Box(-np.inf, np.inf, v.shape, np.float32)
                for k, v in obs.items()
            }
        )

    # ---------------------------------------------------------------- setup
    def _prepare_render(self) -> None:
        """Shadows, reflections and multisampling off and, with ``visual_mesh_cell``, the visual
        meshes clustered (recreating the GL context once per compiled model)."""
        import mujoco

        ctx = getattr(self.env.sim, "_render_context_offscreen", None)
        coarse = self.visual_mesh_cell is not None
        if ctx is None or ctx is self._ctx or not (self.fast_render or coarse):
            self._ctx = ctx
            return
        model = self.env.sim.model._model
        if self.fast_render:
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
            model.light_castshadow[:] = 0
        if coarse:
            from envs.robosuite.meshes import cluster_visual_meshes

            self.mesh_stats = cluster_visual_meshes(model, self.visual_mesh_cell)
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()
        if self.fast_render:
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self._ctx = ctx

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The robosuite keyword arguments this env was built from (camera overrides applied)."""
        out = copy.deepcopy(self.source_kwargs)
        if self.cameras:
            out.update(
                camera_names=list(self.cameras),
                camera_heights=self.image_size,
                camera_widths=self.image_size,
            )
        return out

    @property
    def task_name(self) -> str:
        """The robosuite env name (the recorded demos' ``task`` attribute)."""
        return self.env_name

    action_mode = "ee_delta"
    """robosuite's OSC_POSE deltas (dx dy dz ax ay az gripper), the tabletop suite's name."""

    def make_expert(self) -> Any:
        """The task's scripted expert (:mod:`envs.robosuite.experts`), after a reset."""
        from envs.robosuite.experts import make_expert

        return make_expert(self)

    @property
    def env_args(self) -> dict[str, Any]:
        """robomimic's ``{env_name, type, env_kwargs}`` for this env."""
        return {"env_name": self.env_name, "type": ROBOSUITE_TYPE, "env_kwargs": self.env_kwargs}

    # ---------------------------------------------------------------- gym API
    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.reset_seed = int(seed) if seed is not None else int(self.np_random.integers(2**31))
        fresh = np.random.default_rng(self.reset_seed)
        self.env.rng.bit_generator.state = fresh.bit_generator.state
        self._make_current()
        self.env.reset()
        self._prepare_render()
        self.perturbations.apply(self.env, self.reset_seed)
        if options and options.get("state") is not None:
            self.env.sim.set_state_from_flattened(np.asarray(options["state"], np.float64))
            self.env.sim.forward()
        self.steps = 0
        return self.observe()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise StemobError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        self._make_current()
        raw, reward, _, _ = self.env.step(a)
        self.steps += 1
        success = self.is_success()
        terminated = bool(success and self.terminate_on_success)
        truncated = self.steps >= self.max_episode_steps
        return self._convert(raw), float(reward), terminated, truncated, self._info(success)

    def is_success(self) -> bool:
        """Whether the task is done (robosuite's ``_check_success``)."""
        return bool(self.env._check_success())

    def get_state(self) -> np.ndarray:
        """The flattened simulator state (robomimic's ``states`` rows)."""
        return np.asarray(self.env.sim.get_state().flatten())

    def set_state(self, state: np.ndarray) -> None:
        """Restore a ``get_state`` row (a robomimic file's ``states``) and recompute positions."""
        self.env.sim.set_state_from_flattened(np.asarray(state, np.float64))
        self.env.sim.forward()

    def observe(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The observation and info of the current state (after :meth:`set_state`)."""
        self._make_current()
        return self._convert(self.env._get_observations(force_update=True)), self._info()

    @property
    def xml(self) -> str:
        """The model's MJCF (robomimic's ``model_file`` attribute)."""
        return str(self.env.sim.model.get_xml())

    def camera_params(self, camera: str) -> dict[str, np.ndarray]:
        """Intrinsics (3x3, pixels) and OpenCV-convention extrinsics (4x4 world->camera) of the
        upright ``image_size`` images."""
        from envs.cameras import mujoco_camera_params

        sim = self.env.sim
        return mujoco_camera_params(sim.model._model, sim.data._data, camera, self.image_size)

    def joint_world_poses(self) -> dict[str, np.ndarray]:
        """World positions (7, 3) and quaternions (7, 4, w x y z) of the first robot's arm
        joints and the gripper site's position and quaternion (GENIMA's target spheres)."""
        import mujoco

        sim, robot = self.env.sim, self.env.robots[0]
        m, d = sim.model._model, sim.data._data
        joints = [m.joint(n).id for n in robot.robot_joints]
        bodies = m.jnt_bodyid[joints]
        site = m.site(robot.eef_site_id["right"] if isinstance(robot.eef_site_id, dict)
                      else robot.eef_site_id).id  # fmt: skip
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[site])
        return {
            "joint_world_pos": d.xanchor[joints].copy(),
            "joint_world_quat": d.xquat[bodies].copy(),
            "gripper_world_pos": d.site_xpos[site].copy(),
            "gripper_world_quat": quat,
        }

    def _info(self, success: bool | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"is_success": self.is_success() if success is None else success}
        info["cameras"] = {c: self.camera_params(c) for c in self.cameras}
        info.update(self.joint_world_poses())
        return info

    def render(self) -> np.ndarray:
        """A fresh upright image of the first camera."""
        if not self.cameras:
            raise StemobError("render(): this env was built without cameras")
        return self.render_camera(self.cameras[0])

    def render_camera(self, camera: str) -> np.ndarray:
        """A fresh upright RGB image (H, W, 3) uint8 from ``camera``."""
        self._make_current()
        img = self.env.sim.render(camera_name=camera, width=self.image_size, height=self.image_size)
        return np.ascontiguousarray(img[::-1] if self.flip else img)

    def _make_current(self) -> None:
        """Make this env's GL context current. robosuite makes a context current only when it
        creates it, so with several envs in a process every env would render through the newest
        context (and, after a close, through none)."""
        ctx = getattr(self.env.sim, "_render_context_offscreen", None)
        if ctx is not None:
            ctx.gl_ctx.make_current()

    def close(self) -> None:
        """Free the render context now, while it is current, then close robosuite's env.

        Left to robosuite, the context is freed whenever the garbage collector reaches it:
        ``MjRenderContext.__del__`` then frees the MuJoCo buffers of whichever context is current
        (the next env's) and calls ``eglReleaseThread``, so every env built later in the process
        renders garbage (robosuite 1.5.2 ``utils/binding_utils.py`` ``__del__``,
        ``renderers/context/egl_context.py`` ``free``)."""
        env = getattr(self, "env", None)
        if env is None:
            return
        ctx = getattr(env.sim, "_render_context_offscreen", None) if env.sim else None
        if ctx is not None:
            ctx.gl_ctx.make_current()
            ctx.con.free()  # zeroed: its __del__ frees nothing of another context
            ctx.gl_ctx.free()  # destroyed: its __del__ releases nothing
        env.close()
        self.env = None

    # ---------------------------------------------------------------- observations
    def _convert(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k, v in raw.items():
            v = np.asarray(v)
            if k.endswith("_image"):
                v = v[::-1] if self.flip else v
                out[k] = np.ascontiguousarray(v.astype(np.uint8))
            elif k.endswith("_depth") or k.endswith("_segmentation"):
                continue
            else:
                out[k] = v.astype(np.float32)
        if "object-state" in out:
            out["object"] = out["object-state"]
        if "robot0_joint_pos" in out:
            out["joint_positions"] = out["robot0_joint_pos"]
        if "robot0_eef_pos" in out:
            out["eef_pos"] = out["robot0_eef_pos"]
        if "robot0_eef_quat" in out:
            out["eef_quat"] = out["robot0_eef_quat"][[3, 0, 1, 2]].copy()
        if "robot0_gripper_qpos" in out:  # finger joints (+, -), 0.04 m each when open (Panda)
            fingers = out["robot0_gripper_qpos"]
            spread = float(fingers[0] - fingers[-1]) if fingers.size > 1 else float(fingers[0])
            out["gripper_open"] = np.array([np.clip(spread / 0.08, 0, 1)], np.float32)
        return out


def make_env_from_args(env_args: dict[str, Any], **overrides: Any) -> RobosuiteEnv:
    """A :class:`RobosuiteEnv` from robomimic ``env_args`` (``type`` 1, robomimic's
    ``EnvType.ROBOSUITE_TYPE``). ``overrides`` are :class:`RobosuiteEnv` arguments
    (``cameras``, ``image_size``, ``perturbation``...) or robosuite kwargs (merged into
    ``env_kwargs``)."""
    if not isinstance(env_args, dict) or env_args.get("type") != ROBOSUITE_TYPE:
        got = env_args.get("type") if isinstance(env_args, dict) else env_args
        raise StemobError(f"env_args type {got!r} is not {ROBOSUITE_TYPE} (robosuite)")
    if not env_args.get("env_name"):
        raise StemobError("env_args: missing key 'env_name' (the robosuite env name)")
    import inspect

    own = set(inspect.signature(RobosuiteEnv.__init__).parameters) - {"self", "env_kwargs"}
    env_kwargs = dict(env_args.get("env_kwargs") or {})
    mine = {}
    for k, v in overrides.items():
        if k in own:
            mine[k] = v
        elif k in _FORCED:
            raise StemobError(f"override {k!r}: set by the robosuite backend itself")
        else:
            env_kwargs[k] = v
    return RobosuiteEnv(mine.pop("env_name", env_args["env_name"]), env_kwargs, **mine)
