"""The task interface: objects (MJCF), roles for the perturbations, placement, success, expert."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

if TYPE_CHECKING:
    from envs.tabletop.env import TabletopEnv


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by ``yaw`` about the world z axis."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quat_yaw(quat: np.ndarray) -> float:
    """Yaw (rotation about z) of a quaternion (w, x, y, z)."""
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


class Task:
    """One tabletop task. Subclasses fill in the class attributes and the hooks."""

    name: str = ""
    max_episode_steps: int = 100
    roles: dict[str, tuple[str, ...]] = {}
    """Role -> names of root bodies whose subtrees make up that object (used by the factors)."""
    size_roles: dict[str, tuple[str, ...]] = {}
    """Role -> bodies scaled by the size factors (defaults to ``roles``)."""
    role_rgba: dict[str, tuple[float, float, float, float]] = {}
    ranges: dict[str, Any] = {}
    """Documented randomisation ranges of the initial state."""

    def bodies_xml(self) -> str:
        """MJCF of the task's bodies (inside ``<worldbody>``)."""
        raise NotImplementedError

    def bind(self, model: mujoco.MjModel) -> None:
        """Cache ids once the model is compiled."""

    def place(self, env: TabletopEnv, rng: np.random.Generator) -> None:
        """Write a random initial state of the objects into ``env.data``."""
        raise NotImplementedError

    def is_success(self, env: TabletopEnv) -> bool:
        """Whether the task is done in the current state."""
        raise NotImplementedError

    def occupied(self, env: TabletopEnv) -> list[tuple[np.ndarray, float]]:
        """(xy centre, radius) discs that distractors must keep clear of."""
        return []

    def make_expert(self, env: Any) -> Any:
        """A scripted expert (see ``envs.tabletop.tasks.common.Expert``)."""
        raise NotImplementedError


def free_joint_qpos(model: mujoco.MjModel, joint: str) -> int:
    """Address of a free joint's 7 qpos values."""
    return int(model.jnt_qposadr[model.joint(joint).id])


def sample_separated(
    rng: np.random.Generator,
    boxes: list[tuple[tuple[float, float], tuple[float, float]]],
    min_dist: float,
    tries: int = 200,
) -> list[np.ndarray]:
    """One xy point per box ((x range), (y range)), pairwise at least ``min_dist`` apart."""
    for _ in range(tries):
        pts = [np.array([rng.uniform(*bx), rng.uniform(*by)]) for bx, by in boxes]
        if all(
            np.linalg.norm(pts[i] - pts[j]) >= min_dist
            for i in range(len(pts))
            for j in range(i + 1, len(pts))
        ):
            return pts
    raise RuntimeError("could not place the objects apart")
