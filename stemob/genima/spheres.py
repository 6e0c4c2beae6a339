"""Find GENIMA's target spheres in images by their colours, and score drawn targets.

A drawn target is scored against the ground-truth target of the same frame, view by view: the
ground truth's spheres are the pixels that differ from the observation and carry a sphere colour
exactly; in the drawing, the pixels within ``tolerance`` (RGB distance) of a sphere colour that
also differ from the observation by more than ``changed`` (so a red cube is not a red sphere).
Each colour's centroid is compared: its pixel error, or a miss when the drawing lacks a sphere
the ground truth has (and a false sphere in the opposite case).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stemob.genima.targets import CLOSED_COLOR, JOINT_COLORS, OPEN_COLOR, untile

COLORS: dict[str, tuple[int, int, int]] = {
    "gripper_closed": CLOSED_COLOR, "gripper_open": OPEN_COLOR,
    **{f"joint{j}": c for j, c in JOINT_COLORS.items()},
}  # fmt: skip
"""Sphere name -> colour."""


def _color_masks(
    image: np.ndarray, observation: np.ndarray, tolerance: float, changed: float
) -> dict[str, np.ndarray]:
    """Per sphere colour, the pixels of ``image`` within ``tolerance`` of it that differ from
    ``observation`` by more than ``changed``."""
    img = image.astype(np.float32)
    moved = np.linalg.norm(img - observation.astype(np.float32), axis=-1) > changed
    return {
        name: moved & (np.linalg.norm(img - np.asarray(color, np.float32), axis=-1) <= tolerance)
        for name, color in COLORS.items()
    }


def centroids(
    image: np.ndarray,
    observation: np.ndarray,
    tolerance: float = 60.0,
    changed: float = 30.0,
    min_pixels: int = 2,
) -> dict[str, tuple[float, float]]:
    """Pixel centroids (x, y) of every sphere colour found in ``image`` (H, W, 3) that is not in
    ``observation``; ``tolerance=0`` asks for the exact colour (ground truth)."""
    out = {}
    for name, near in _color_masks(image, observation, tolerance, changed).items():
        ys, xs = np.nonzero(near)
        if len(xs) >= min_pixels:
            out[name] = (float(xs.mean() + 0.5), float(ys.mean() + 0.5))
    return out


def sphere_mask(
    image: np.ndarray, observation: np.ndarray, tolerance: float = 60.0, changed: float = 30.0
) -> np.ndarray:
    """(H, W) bool: the pixels of a drawn target ``image`` that :func:`centroids` counts as a
    sphere (a sphere colour, changed from ``observation``)."""
    masks = _color_masks(image, observation, tolerance, changed)
    return np.logical_or.reduce(list(masks.values()))


@dataclass
class SphereScore:
    """Pixel errors of matched spheres, misses and false spheres, over frames and views."""

    errors: list[float] = field(default_factory=list)
    misses: int = 0
    false: int = 0
    gripper_state_wrong: int = 0

    def add(self, drawn: dict, truth: dict) -> None:
        for name, (x, y) in truth.items():
            if name in drawn:
                self.errors.append(float(np.hypot(drawn[name][0] - x, drawn[name][1] - y)))
            elif name.startswith("gripper") and any(k.startswith("gripper") for k in drawn):
                self.gripper_state_wrong += 1  # the sphere is there in the other colour
            else:
                self.misses += 1
        self.false += sum(
            1 for name in drawn if name not in truth and not name.startswith("gripper")
        )

    def summary(self) -> dict[str, float | int | None]:
        spheres = len(self.errors) + self.misses + self.gripper_state_wrong
        return {
            "spheres": spheres,
            "median_px": float(np.median(self.errors)) if self.errors else None,
            "mean_px": float(np.mean(self.errors)) if self.errors else None,
            "within_3px": float(np.mean(np.asarray(self.errors) <= 3)) if self.errors else None,
            "missed": self.misses,
            "gripper_colour_wrong": self.gripper_state_wrong,
            "false_spheres": self.false,
        }


def score_frames(
    drawn: np.ndarray,
    truth: np.ndarray,
    observations: np.ndarray,
    views: int,
    grid: tuple[int, int],
    tolerance: float = 60.0,
) -> SphereScore:
    """Score drawn tiled targets (B, H, W, 3) against the ground-truth tiled targets."""
    score = SphereScore()
    for d, t, o in zip(drawn, truth, observations, strict=True):
        for dv, tv, ov in zip(untile(d, views, grid), untile(t, views, grid),
                              untile(o, views, grid), strict=True):  # fmt: skip
            score.add(centroids(dv, ov, tolerance), centroids(tv, ov, tolerance=0.0))
    return score
