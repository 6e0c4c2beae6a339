"""Sphere targets on camera images, as GENIMA draws them (MohitShridhar/genima 6929118, read for
the conventions only: ``render/render_data.py``, ``render/joint_marker.py``, ``render/cfgs/
render.yaml``).

- The target is the pose ``horizon`` (20) steps ahead: a sphere at the gripper, yellow when it is
  closed (open amount <= 0.1) and cyan when open, and spheres at arm joints 1, 3 and 5 (0-based,
  of 7) in red, green and purple. Each sphere has radius 0.01 m times the camera's scale (wrist 3,
  front 8, shoulders 6.5); the overhead camera draws no joints.
- GENIMA renders textured spheres with pyrender and keeps the image where nothing was drawn. Here
  each sphere is drawn exactly from the pinhole model: a pixel belongs to a sphere when its
  viewing ray passes within the sphere's radius of its centre (so the disc has radius
  ``f * r / sqrt(z^2 - r^2)``, about ``f * r / z``, and is the true silhouette, an ellipse off the
  optical axis); spheres are painted far to near, so nearer ones cover farther ones. Flat colours
  (no stripe texture), which makes them easy to segment.
- Views are tiled row-major into a grid (GENIMA: four 256 px views into 512 px, 2 x 2).
- The controller's copy replaces everything but the spheres by a random texture and blends the
  spheres with it by ``alpha ~ U(0.7, 1)`` (``render_data.py``: ``alpha_blend: 0.7``).

Cameras follow the tabletop suite's convention (``envs.tabletop.env.TabletopEnv.camera_params``;
RLBench's are converted by ``stemob.data.rlbench.pyrep_camera_to_opencv``): intrinsics in pixels with the
image's top-left pixel centred at (0.5, 0.5), extrinsics world -> camera with x right, y down,
z forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from stemob.errors import StemobError

CLOSED_COLOR = (255, 255, 0)
"""Gripper sphere when closed (open amount <= 0.1): yellow."""
OPEN_COLOR = (154, 220, 255)
"""Gripper sphere when open: GENIMA's cyan base colour (0.604, 0.863, 1.0)."""
JOINT_COLORS = {1: (255, 0, 0), 3: (0, 255, 0), 5: (160, 32, 240)}
"""Arm joint (0-based index of 7) -> its sphere's colour: red, green, purple."""
CAMERA_SCALES = {"wrist": 3.0, "front": 8.0, "left_shoulder": 6.5, "right_shoulder": 6.5,
                 "overhead": 6.5}  # fmt: skip
"""Sphere radius multipliers per camera (GENIMA's ``camera_scales``)."""


@dataclass(frozen=True)
class Sphere:
    """One sphere: world centre (m), radius (m) and RGB colour."""

    center: tuple[float, float, float]
    radius: float
    color: tuple[int, int, int]


@dataclass
class TargetStyle:
    """How targets are drawn (GENIMA's defaults).

    Attributes:
        radius: sphere radius in metres before the camera's scale (0.01).
        camera_scales: radius multiplier per camera name; others get ``default_scale``.
        default_scale: multiplier for cameras not in ``camera_scales``.
        joints: arm joints (0-based) with a sphere, per camera (``None``: :data:`JOINT_COLORS`'
            joints for every camera but ``overhead``, which draws the gripper only).
        open_threshold: the gripper counts as closed at or below this open amount.
    """

    radius: float = 0.01
    camera_scales: dict[str, float] = field(default_factory=lambda: dict(CAMERA_SCALES))
    default_scale: float = 6.5
    joints: dict[str, list[int]] | None = None
    open_threshold: float = 0.1

    def __post_init__(self) -> None:
        if not self.radius > 0:
            raise StemobError(f"radius must be positive, got {self.radius}")
        bad = [j for js in (self.joints or {}).values() for j in js if j not in JOINT_COLORS]
        if bad:
            raise StemobError(f"joints {bad}: spheres exist for joints {sorted(JOINT_COLORS)}")

    def camera_joints(self, camera: str) -> list[int]:
        if self.joints is not None:
            return list(self.joints.get(camera, []))
        return [] if camera == "overhead" else sorted(JOINT_COLORS)

    def scale(self, camera: str) -> float:
        return float(self.camera_scales.get(camera, self.default_scale))


def target_spheres(
    gripper_pos: np.ndarray,
    gripper_open: float,
    joint_pos: np.ndarray,
    camera: str,
    style: TargetStyle | None = None,
) -> list[Sphere]:
    """The spheres of one target pose for ``camera``: the gripper's (colour by its open amount)
    and the camera's joints'. ``joint_pos`` is ``(7, 3)`` world positions of the arm joints."""
    style = style or TargetStyle()
    joint_pos = np.asarray(joint_pos, np.float64).reshape(-1, 3)
    radius = style.radius * style.scale(camera)
    color = CLOSED_COLOR if float(gripper_open) <= style.open_threshold else OPEN_COLOR
    spheres = [Sphere(tuple(np.asarray(gripper_pos, float).reshape(3)), radius, color)]
    for j in style.camera_joints(camera):
        if j >= len(joint_pos):
            raise StemobError(f"joint {j}: only {len(joint_pos)} joint positions given")
        spheres.append(Sphere(tuple(joint_pos[j]), radius, JOINT_COLORS[j]))
    return spheres


def project(
    points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(N, 2)`` (x right, y down; pixel ``(i, j)``'s centre at
    ``(j + 0.5, i + 0.5)``) and camera depths ``(N,)`` of world points ``(N, 3)``."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    cam = points @ np.asarray(extrinsics, float)[:3, :3].T + np.asarray(extrinsics, float)[:3, 3]
    depth = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam @ np.asarray(intrinsics, float).T)[:, :2] / depth[:, None]
    return uv, depth


def draw_spheres(
    image: np.ndarray,
    spheres: Sequence[Sphere],
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W, 3 uint8) with the spheres painted on, and the mask (H, W) of the pixels
    they cover. Spheres behind the camera or off the image are skipped."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise StemobError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    out = image.copy()
    h, w = out.shape[:2]
    mask = np.zeros((h, w), bool)
    if not spheres:
        return out, mask
    k = np.asarray(intrinsics, float)
    ext = np.asarray(extrinsics, float)
    centers = np.array([s.center for s in spheres], float)
    cam = centers @ ext[:3, :3].T + ext[:3, 3]
    order = np.argsort(-cam[:, 2])  # far to near: nearer spheres are painted last
    for i in order:
        sphere, c = spheres[i], cam[i]
        r = float(sphere.radius)
        if c[2] <= r:  # behind or around the camera
            continue
        uv = (k @ c)[:2] / c[2]
        reach = float(np.max(np.abs(k[:2, :2]))) * r / np.sqrt(c[2] ** 2 - r**2) * 1.5 + 2
        x0, x1 = int(max(0, np.floor(uv[0] - reach))), int(min(w, np.ceil(uv[0] + reach)))
        y0, y1 = int(max(0, np.floor(uv[1] - reach))), int(min(h, np.ceil(uv[1] + reach)))
        if x0 >= x1 or y0 >= y1:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        ry = (ys + 0.5 - k[1, 2]) / k[1, 1]  # K is upper triangular: invert it in closed form
        rx = (xs + 0.5 - k[0, 2] - k[0, 1] * ry) / k[0, 0]
        rays = np.stack([rx, ry, np.ones_like(rx)], -1)  # directions in the camera frame
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        along = rays @ c
        miss2 = float(c @ c) - along**2  # squared distance of the centre from each ray
        hit = (miss2 <= r * r) & (along > 0)
        out[y0:y1, x0:x1][hit] = sphere.color
        mask[y0:y1, x0:x1] |= hit
    return out, mask


def tile(views: Sequence[np.ndarray], grid: tuple[int, int] = (2, 2)) -> np.ndarray:
    """Views of one size tiled row-major into ``grid`` (rows, columns); empty cells are black."""
    rows, cols = grid
    if not views or len(views) > rows * cols:
        raise StemobError(f"{len(views)} views do not fit a {rows}x{cols} grid")
    shapes = {v.shape for v in views}
    if len(shapes) != 1:
        raise StemobError(f"views must share one shape, got {sorted(shapes)}")
    h, w, c = views[0].shape
    out = np.zeros((rows * h, cols * w, c), views[0].dtype)
    for i, view in enumerate(views):
        r, col = divmod(i, cols)
        out[r * h : (r + 1) * h, col * w : (col + 1) * w] = view
    return out


def untile(image: np.ndarray, count: int, grid: tuple[int, int] = (2, 2)) -> list[np.ndarray]:
    """The first ``count`` views of a tiled image (inverse of :func:`tile`)."""
    rows, cols = grid
    if image.shape[0] % rows or image.shape[1] % cols:
        raise StemobError(f"a {image.shape[:2]} image does not split into a {rows}x{cols} grid")
    if not 0 < count <= rows * cols:
        raise StemobError(f"count {count}: a {rows}x{cols} grid holds 1 to {rows * cols} views")
    h, w = image.shape[0] // rows, image.shape[1] // cols
    return [
        image[r * h : (r + 1) * h, c * w : (c + 1) * w].copy()
        for r, c in (divmod(i, cols) for i in range(count))
    ]


def random_background(
    drawn: np.ndarray,
    mask: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    alpha_min: float = 0.7,
) -> np.ndarray:
    """The controller's input: ``texture`` everywhere but the spheres, which are blended with it
    by one ``alpha ~ U(alpha_min, 1)`` (GENIMA's ``alpha_blend``)."""
    if texture.shape != drawn.shape:
        raise StemobError(f"texture shape {texture.shape} differs from the image's {drawn.shape}")
    alpha = float(rng.uniform(alpha_min, 1.0))
    out = texture.copy()
    blend = drawn[mask].astype(np.float32) * alpha + texture[mask].astype(np.float32) * (1 - alpha)
    out[mask] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out
