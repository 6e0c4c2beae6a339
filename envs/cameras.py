"""Camera matrices of a MuJoCo camera in OpenCV's convention, for any MuJoCo backend."""

from __future__ import annotations

from typing import Any

import numpy as np


def mujoco_camera_params(model: Any, data: Any, camera: str, size: int) -> dict[str, np.ndarray]:
    """Intrinsics (3x3, pixels) and extrinsics (4x4 world -> camera: x right, y down, z forward)
    of ``camera`` rendered as an upright ``size`` x ``size`` image (MuJoCo's square pixels,
    ``cam_fovy`` the vertical field of view)."""
    cid = model.camera(camera).id
    f = 0.5 * size / np.tan(np.deg2rad(model.cam_fovy[cid]) / 2)
    c = size / 2.0
    intrinsics = np.array([[f, 0, c], [0, f, c], [0, 0, 1.0]])
    rot = np.asarray(data.cam_xmat[cid]).reshape(3, 3)  # columns: right, up, backward
    r_cv = np.diag([1.0, -1.0, -1.0]) @ rot.T
    extrinsics = np.eye(4)
    extrinsics[:3, :3] = r_cv
    extrinsics[:3, 3] = -r_cv @ np.asarray(data.cam_xpos[cid])
    return {"intrinsics": intrinsics, "extrinsics": extrinsics}
