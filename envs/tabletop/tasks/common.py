"""Helpers shared by the scripted experts: closed-loop moves expressed as ``ee_delta`` actions."""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_POS = 0.05
MAX_ROT = 0.5


def wrap(angle: float, period: float = 2 * np.pi) -> float:
    """Wrap an angle into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def finger_yaw(env: Any) -> float:
    """Yaw of the axis the fingers close along."""
    axis = env.data.site_xmat[env.controller.idx.site].reshape(3, 3)[:, 1]
    return float(np.arctan2(axis[1], axis[0]))


def move(
    env: Any,
    target: np.ndarray,
    gripper: float,
    yaw: float | None = None,
    period: float = np.pi / 2,
    speed: float = MAX_POS,
    gain: float = 1.0,
) -> np.ndarray:
    """An ``ee_delta`` action heading for ``target`` (and turning the finger axis to ``yaw``)."""
    eef = env.data.site_xpos[env.controller.idx.site]
    dpos = gain * (np.asarray(target, float) - eef)
    norm = float(np.linalg.norm(dpos))
    if norm > speed:
        dpos *= speed / norm
    drot = np.zeros(3)
    if yaw is not None:
        drot[2] = np.clip(wrap(yaw - finger_yaw(env), period), -MAX_ROT, MAX_ROT)
    return np.concatenate([dpos, drot, [gripper]]).astype(np.float32)


def yaw_error(env: Any, yaw: float, period: float = np.pi / 2) -> float:
    """Absolute finger-axis yaw error modulo ``period``."""
    return abs(wrap(yaw - finger_yaw(env), period))


def eef_pos(env: Any) -> np.ndarray:
    """World position of the grasp point."""
    return env.data.site_xpos[env.controller.idx.site].copy()


class Expert:
    """Closed-loop scripted expert: a state machine reading privileged simulator state.

    ``act()`` returns an ``ee_delta`` action for the current state; the caller passes it to
    ``env.step`` (in ``joint_position`` mode, use ``env.unwrapped.ee_to_joint_action``).
    """

    def __init__(self, env: Any) -> None:
        self.env = env.unwrapped
        self.reset()

    def reset(self) -> None:
        """Start a new episode."""
        self.phase = "approach"
        self.count = 0

    def goto(self, phase: str) -> None:
        """Switch phase and restart the phase's step counter."""
        self.phase = phase
        self.count = 0

    def act(self) -> np.ndarray:
        """The next action."""
        raise NotImplementedError
