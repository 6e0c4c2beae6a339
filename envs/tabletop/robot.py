"""The 7-DoF arm with a parallel gripper (MJCF from primitives) and its end-effector controller.

The arm stands on the table at the world origin, facing +x. Its kinematics follow a common
7-DoF layout without offsets (z, y, z, y, z, y, z axes). At the home pose the gripper points
straight down and its fingers close along the world y axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
EEF_SITE = "eef"
FINGER_MAX = 0.04
"""Travel of each finger (m): the gap between the pads ranges over [0, 0.08] m."""
HOME_GUESS = np.array([0.0, 0.1, 0.0, 2.1, 0.0, 0.95, 0.0])

_LIMITS = [
    (-2.9, 2.9),
    (-1.8, 1.8),
    (-2.9, 2.9),
    (-0.1, 3.0),
    (-2.9, 2.9),
    (-1.2, 3.6),
    (-2.9, 2.9),
]
_GAINS = [(600, 60), (600, 60), (300, 30), (400, 40), (150, 12), (150, 12), (100, 8)]


def robot_xml() -> str:
    """The arm's body tree (to sit in ``<worldbody>``)."""
    j = [
        f'range="{lo} {hi}" damping="{d}" armature="0.1"'
        for (lo, hi), (_, d) in zip(_LIMITS, _GAINS, strict=True)
    ]
    return f"""
    <body name="robot_base" pos="0 0 0" childclass="robot">
      <geom type="cylinder" size="0.07 0.05" pos="0 0 0.05" material="mat_robot"/>
      <body name="link1" pos="0 0 0.1" gravcomp="1">
        <joint name="joint1" axis="0 0 1" {j[0]}/>
        <geom type="capsule" fromto="0 0 0 0 0 0.2" size="0.055" material="mat_robot"/>
        <body name="link2" pos="0 0 0.233" gravcomp="1">
          <joint name="joint2" axis="0 1 0" {j[1]}/>
          <geom type="sphere" size="0.06" material="mat_robot_dark"/>
          <body name="link3" gravcomp="1">
            <joint name="joint3" axis="0 0 1" {j[2]}/>
            <geom type="capsule" fromto="0 0 0.05 0 0 0.35" size="0.045" material="mat_robot"/>
            <body name="link4" pos="0 0 0.4" gravcomp="1">
              <joint name="joint4" axis="0 1 0" {j[3]}/>
              <geom type="sphere" size="0.05" material="mat_robot_dark"/>
              <body name="link5" gravcomp="1">
                <joint name="joint5" axis="0 0 1" {j[4]}/>
                <geom type="capsule" fromto="0 0 0.05 0 0 0.34" size="0.04" material="mat_robot"/>
                <body name="link6" pos="0 0 0.4" gravcomp="1">
                  <joint name="joint6" axis="0 1 0" {j[5]}/>
                  <geom type="sphere" size="0.042" material="mat_robot_dark"/>
                  <body name="link7" gravcomp="1">
                    <joint name="joint7" axis="0 0 1" {j[6]}/>
                    <geom type="cylinder" fromto="0 0 0.02 0 0 0.07" size="0.035"
                          material="mat_robot"/>
                    <body name="hand" pos="0 0 0.08" gravcomp="1">
                      <geom type="box" size="0.015 0.058 0.02" pos="0 0 0.02"
                            material="mat_robot_dark"/>
                      <camera name="wrist" pos="-0.06 0 0.0" xyaxes="1 0 0 0 -1 0" fovy="80"/>
                      <site name="eef" pos="0 0 0.075" size="0.005" rgba="1 0 0 0"/>
                      <body name="finger_left" pos="0 0.006 0" gravcomp="1">
                        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_MAX}"
                               damping="5" armature="0.01"/>
                        <geom type="box" size="0.009 0.006 0.025" pos="0 0 0.065" friction="1.5"
                              material="mat_finger"/>
                      </body>
                      <body name="finger_right" pos="0 -0.006 0" gravcomp="1">
                        <joint name="finger_right" type="slide" axis="0 -1 0"
                               range="0 {FINGER_MAX}" damping="5" armature="0.01"/>
                        <geom type="box" size="0.009 0.006 0.025" pos="0 0 0.065" friction="1.5"
                              material="mat_finger"/>
                      </body>
                    </body>
                  </body>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>"""


def robot_default_xml() -> str:
    """Robot geoms collide with the world and objects but never with each other."""
    return '<default class="robot"><geom contype="2" conaffinity="1"/></default>'


def actuator_xml() -> str:
    """Position actuators: one per arm joint, one per finger."""
    rows = [
        f'<position name="act{i + 1}" joint="joint{i + 1}" kp="{kp}" ctrlrange="{lo} {hi}"/>'
        for i, ((lo, hi), (kp, _)) in enumerate(zip(_LIMITS, _GAINS, strict=True))
    ]
    for name in FINGER_JOINTS:
        rows.append(
            f'<position name="act_{name}" joint="{name}" kp="300" ctrlrange="-0.01 {FINGER_MAX}"'
            ' forcerange="-15 15"/>'
        )
    return "\n    ".join(rows)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle) of a unit quaternion (w, x, y, z)."""
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, np.asarray(quat, dtype=float), 1.0)
    return vel


def axis_angle_to_quat(vec: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation vector."""
    quat = np.zeros(4)
    vec = np.asarray(vec, dtype=float)
    angle = float(np.linalg.norm(vec))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    mujoco.mju_axisAngle2Quat(quat, vec / angle, angle)
    return quat


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Quaternion product a * b."""
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return out


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (inverse) of a unit quaternion."""
    return np.array([q[0], -q[1], -q[2], -q[3]])


@dataclass
class RobotIndex:
    """Addresses of the robot in a compiled model."""

    qpos: np.ndarray
    dof: np.ndarray
    finger_qpos: np.ndarray
    act: np.ndarray
    finger_act: np.ndarray
    site: int
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_model(cls, model: mujoco.MjModel) -> RobotIndex:
        jids = [model.joint(n).id for n in ARM_JOINTS]
        fids = [model.joint(n).id for n in FINGER_JOINTS]
        return cls(
            qpos=np.array([model.jnt_qposadr[j] for j in jids]),
            dof=np.array([model.jnt_dofadr[j] for j in jids]),
            finger_qpos=np.array([model.jnt_qposadr[j] for j in fids]),
            act=np.array([model.actuator(f"act{i}").id for i in range(1, 8)]),
            finger_act=np.array([model.actuator(f"act_{n}").id for n in FINGER_JOINTS]),
            site=model.site(EEF_SITE).id,
            low=model.jnt_range[jids, 0].copy(),
            high=model.jnt_range[jids, 1].copy(),
        )


class ArmController:
    """Turns end-effector goals into joint position targets by damped-least-squares IK.

    The goal pose integrates the commanded deltas (so a zero action holds the arm still), but its
    position never runs more than ``max_lag`` metres ahead of the hand (no wind-up against contacts).
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        home: np.ndarray,
        damping: float = 0.05,
        iterations: int = 3,
        max_lag: float = 0.06,
        workspace: tuple[tuple[float, float], ...] = ((0.15, 0.85), (-0.45, 0.45), (0.005, 0.6)),
    ) -> None:
        self.model = model
        self.idx = RobotIndex.from_model(model)
        self.home = np.asarray(home, dtype=float)
        self.damping = damping
        self.iterations = iterations
        self.max_lag = max_lag
        self.workspace = np.array(workspace, dtype=float)
        self._scratch = mujoco.MjData(model)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.goal_pos = np.zeros(3)
        self.goal_quat = np.array([1.0, 0.0, 0.0, 0.0])

    def eef_pose(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """World position and quaternion (w, x, y, z) of the end-effector site."""
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, data.site_xmat[self.idx.site])
        return data.site_xpos[self.idx.site].copy(), quat

    def sync_goal(self, data: mujoco.MjData) -> None:
        """Set the goal to the current hand pose (after a reset or a joint-space action)."""
        self.goal_pos, self.goal_quat = self.eef_pose(data)

    def apply_delta(self, data: mujoco.MjData, dpos: np.ndarray, drot: np.ndarray) -> np.ndarray:
        """Move the goal by a world-frame delta and return the joint targets reaching it."""
        pos, quat = self.eef_pose(data)
        goal = self.goal_pos + dpos
        lag = goal - pos
        norm = float(np.linalg.norm(lag))
        if norm > self.max_lag:
            goal = pos + lag * (self.max_lag / norm)
        self.goal_pos = np.clip(goal, self.workspace[:, 0], self.workspace[:, 1])
        goal_quat = quat_mul(axis_angle_to_quat(drot), self.goal_quat)
        # Do not let the orientation goal run far from the hand either.
        err = quat_to_axis_angle(quat_mul(goal_quat, quat_conj(quat)))
        ang = float(np.linalg.norm(err))
        if ang > 0.6:
            goal_quat = quat_mul(axis_angle_to_quat(err * (0.6 / ang)), quat)
        self.goal_quat = goal_quat / np.linalg.norm(goal_quat)
        return self.solve(data.qpos[self.idx.qpos], self.goal_pos, self.goal_quat)

    def solve(self, q0: np.ndarray, pos: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """Joint positions near ``q0`` that put the end-effector at (pos, quat)."""
        m, s, idx = self.model, self._scratch, self.idx
        q = np.array(q0, dtype=float)
        lam2 = self.damping**2
        cur = np.zeros(4)
        for _ in range(self.iterations):
            s.qpos[idx.qpos] = q
            mujoco.mj_kinematics(m, s)
            mujoco.mj_comPos(m, s)
            mujoco.mju_mat2Quat(cur, s.site_xmat[idx.site])
            err = np.concatenate(
                [pos - s.site_xpos[idx.site], quat_to_axis_angle(quat_mul(quat, quat_conj(cur)))]
            )
            mujoco.mj_jacSite(m, s, self._jacp, self._jacr, idx.site)
            jac = np.vstack([self._jacp[:, idx.dof], self._jacr[:, idx.dof]])
            jjt = jac @ jac.T + lam2 * np.eye(6)
            pinv = jac.T @ np.linalg.solve(jjt, np.eye(6))
            null = np.eye(7) - pinv @ jac
            dq = pinv @ err + null @ (0.1 * (self.home - q))
            q = np.clip(q + dq, idx.low, idx.high)
        return q
