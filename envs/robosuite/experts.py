"""Scripted experts for robosuite tasks: privileged object poses, robosuite's own OSC controller.

An expert reads the simulator (object and end-effector poses) and returns one action in the
env's action space, robosuite's default Panda controller (``BASIC``: an ``OSC_POSE`` arm, deltas
``dx dy dz`` scaled by 0.05 m and ``ax ay az`` by 0.5 rad at input 1, then the gripper: -1 open,
+1 closed), so a demo acts only through ``env.step`` as a human teleoperator's would.

    expert = make_expert(env)   # env: a RobosuiteEnv of Lift or Stack, after reset()
    action = expert.act()

Each expert is a small state machine of waypoints: above the object, down to it, close, lift
(Lift); then over the receiver and down (Stack: onto cube B).
The fingers close across a cube face (Stack: the face most across the line to cube B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stemob.errors import StemobError

POSITION_SCALE = 0.05  # m per unit action (robosuite OSC_POSE output_max)
ROTATION_SCALE = 0.5  # rad per unit action


def _yaw_of_matrix(matrix: np.ndarray) -> float:
    return float(np.arctan2(matrix[1, 0], matrix[0, 0]))


def _wrap(angle: float, period: float) -> float:
    """``angle`` wrapped into ``[-period / 2, period / 2)``."""
    return float((angle + period / 2) % period - period / 2)


@dataclass
class Waypoint:
    """Go to ``offset`` above the tracked point with the gripper ``closed``; done within ``tol``
    metres (and after at least ``hold`` steps)."""

    offset: tuple[float, float, float]
    closed: bool
    tol: float = 0.01
    hold: int = 0
    track: str = "object"  # "object", "lifted" (where it was first lifted) or "receiver"


class WaypointExpert:
    """Follows a list of :class:`Waypoint` with proportional position and yaw control."""

    gain = 10.0  # position error -> action (saturates at 0.05 m per step)
    yaw_gain = 2.0

    def __init__(self, env: Any, waypoints: list[Waypoint], yaw_period: float | None) -> None:
        self.env = env
        self.waypoints = waypoints
        self.yaw_period = yaw_period
        self.index = 0
        self.held = 0

    # privileged state ------------------------------------------------------------
    def _sim(self) -> Any:
        return self.env.env.sim

    def eef(self) -> tuple[np.ndarray, np.ndarray]:
        """Gripper site position and rotation matrix (world)."""
        robot = self.env.env.robots[0]
        site = (
            robot.eef_site_id["right"] if isinstance(robot.eef_site_id, dict) else robot.eef_site_id
        )
        data = self._sim().data
        return np.array(data.site_xpos[site]), np.array(data.site_xmat[site]).reshape(3, 3)

    body: int  # the object's body id (set by each expert)
    lifted_from: np.ndarray | None = None

    def point(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """Position and rotation matrix of the object, of where it was when first lifted
        (``lifted``), or of the receiver (tasks with one)."""
        data = self._sim().data
        rotation = np.array(data.body_xmat[self.body]).reshape(3, 3)
        if which == "lifted":
            if self.lifted_from is None:
                self.lifted_from = np.array(data.body_xpos[self.body])
            return self.lifted_from, rotation
        if which != "object":
            raise StemobError(f"{type(self).__name__}: no point {which!r}")
        return np.array(data.body_xpos[self.body]), rotation

    def grasp_yaw(self) -> float:
        """The world yaw the fingers should close along: one of the object's face normals."""
        return _yaw_of_matrix(self.point("object")[1])

    # control ---------------------------------------------------------------------
    def act(self) -> np.ndarray:
        """The next action (7: position, rotation, gripper)."""
        wp = self.waypoints[min(self.index, len(self.waypoints) - 1)]
        position, rotation = self.point(wp.track)
        goal = position + np.asarray(wp.offset)
        eef, eef_rot = self.eef()
        error = goal - eef
        action = np.zeros(7)
        action[:3] = np.clip(error * self.gain, -1.0, 1.0)
        if self.yaw_period is not None and self.index < 3:  # align before the grasp only
            # the fingers close along the gripper site's x axis
            yaw = _wrap(self.grasp_yaw() - _yaw_of_matrix(eef_rot), self.yaw_period)
            action[5] = np.clip(yaw * self.yaw_gain / ROTATION_SCALE, -1.0, 1.0)
        action[6] = 1.0 if wp.closed else -1.0
        self.held += 1
        if np.linalg.norm(error) < wp.tol and self.held > wp.hold:
            self.index = min(self.index + 1, len(self.waypoints))
            self.held = 0
        return action


def grasp() -> list[Waypoint]:
    """Above the object, down to it, settle, close: the start of every expert."""
    return [
        Waypoint((0, 0, 0.08), False, tol=0.015),
        Waypoint((0, 0, 0.0), False, tol=0.008),
        Waypoint((0, 0, 0.0), False, tol=0.01, hold=2),
        Waypoint((0, 0, 0.0), True, tol=1.0, hold=8),
    ]


class LiftExpert(WaypointExpert):
    """robosuite ``Lift``: grasp the cube and raise it (success: 4 cm over the table)."""

    def __init__(self, env: Any) -> None:
        lift = Waypoint((0, 0, 0.25), True, tol=0.01, track="lifted")
        super().__init__(env, [*grasp(), lift], yaw_period=np.pi / 2)
        self.body = env.env.cube_body_id


class StackExpert(WaypointExpert):
    """robosuite ``Stack``: cube A (red) onto cube B (green)."""

    def __init__(self, env: Any) -> None:
        top = 0.02 + 0.025 + 0.005  # cube A's centre over cube B's, plus clearance
        place = [
            Waypoint((0, 0, 0.15), True, tol=0.02, track="lifted"),
            Waypoint((0, 0, top + 0.06), True, tol=0.01, track="receiver"),
            Waypoint((0, 0, top), True, tol=0.006, track="receiver"),
            Waypoint((0, 0, top), False, tol=1.0, hold=6, track="receiver"),
            Waypoint((0, 0, top + 0.1), False, tol=0.02, track="receiver"),
        ]
        super().__init__(env, [*grasp(), *place], yaw_period=np.pi)
        self.body, self.receiver = env.env.cubeA_body_id, env.env.cubeB_body_id

    def point(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        if which != "receiver":
            return super().point(which)
        data = self._sim().data
        position = np.array(data.body_xpos[self.receiver])
        eef, _ = self.eef()  # carry the grasped cube's offset from the gripper along
        position += eef - np.array(data.body_xpos[self.body])
        return position, np.array(data.body_xmat[self.receiver]).reshape(3, 3)

    def grasp_yaw(self) -> float:
        """The face normal of cube A most across the line to cube B, so that no finger lands
        on cube B when the cubes are close."""
        data = self._sim().data
        towards = np.array(data.body_xpos[self.receiver]) - np.array(data.body_xpos[self.body])
        line = float(np.arctan2(towards[1], towards[0]))
        faces = super().grasp_yaw() + np.arange(4) * np.pi / 2
        return float(faces[np.argmin(np.abs(np.cos(faces - line)))])


EXPERTS = {"Lift": LiftExpert, "Stack": StackExpert}
HORIZONS = {"Lift": 150, "Stack": 300}
"""Episode limits: about three times the expert's median length (Lift 50, Stack 109 steps)."""


def default_env_args(env_name: str) -> dict[str, Any]:
    """robomimic ``env_args`` of a robosuite task with an expert: a Panda with robosuite's
    default controller (resolved when the env is built), 20 Hz, sparse reward, object state,
    and robomimic's image-dataset cameras (agentview and eye-in-hand at 84 px)."""
    from envs.robosuite.types import ROBOSUITE_TYPE

    if env_name not in EXPERTS:
        raise StemobError(
            f"robosuite task {env_name!r} has no scripted expert (experts: {sorted(EXPERTS)})"
        )
    return {
        "env_name": env_name,
        "type": ROBOSUITE_TYPE,
        "env_kwargs": {
            "robots": ["Panda"], "controller_configs": None, "control_freq": 20,
            "horizon": HORIZONS[env_name], "reward_shaping": False, "use_object_obs": True,
            "camera_names": ["agentview", "robot0_eye_in_hand"], "camera_heights": 84,
            "camera_widths": 84,
        },
    }  # fmt: skip


def make_expert(env: Any) -> WaypointExpert:
    """The scripted expert of ``env``'s robosuite task (refuses tasks without one)."""
    name = env.env_name.split("_D")[0]  # MimicGen's Stack_D0 uses its base task's expert
    if name not in EXPERTS:
        raise StemobError(
            f"robosuite task {env.env_name!r} has no scripted expert (experts: {sorted(EXPERTS)})"
        )
    return EXPERTS[name](env)
