"""GENIMA's sphere targets: exact projection (against MuJoCo's own renderer), radius, occlusion,
colours, tiling and the controller's random-background copy."""

from __future__ import annotations

import os

import numpy as np
import pytest

from stemob.errors import StemobError
from stemob.genima import (
    CLOSED_COLOR,
    JOINT_COLORS,
    OPEN_COLOR,
    Sphere,
    TargetStyle,
    draw_spheres,
    project,
    random_background,
    target_spheres,
    tile,
    untile,
)

os.environ.setdefault("MUJOCO_GL", "egl")
SIZE = 128
F = 100.0
K = np.array([[F, 0, SIZE / 2], [0, F, SIZE / 2], [0, 0, 1.0]])
LOOK_DOWN_Z = np.eye(4)  # camera at the world origin looking along +z (OpenCV axes)


def mujoco_sphere(center, radius):
    """A sphere rendered by MuJoCo (flat white on black) with a camera whose intrinsics and
    extrinsics are computed the way the tabletop suite computes them; returns the rendered mask
    and the camera matrices."""
    import mujoco

    fovy = np.rad2deg(2 * np.arctan(SIZE / 2 / F))
    xml = f"""
    <mujoco>
      <visual><global offwidth="{SIZE}" offheight="{SIZE}"/><quality shadowsize="0"/></visual>
      <worldbody>
        <camera name="cam" pos="0.05 -0.4 0.3" xyaxes="1 0.1 0 0 0.6 0.8" fovy="{fovy}"/>
        <geom type="sphere" size="{radius}" pos="{center[0]} {center[1]} {center[2]}"
              rgba="1 1 1 1" contype="0" conaffinity="0"/>
      </worldbody>
    </mujoco>"""
    model = mujoco.MjModel.from_xml_string(xml)
    model.vis.headlight.ambient[:] = 1.0
    model.vis.headlight.diffuse[:] = 0.0
    model.vis.headlight.specular[:] = 0.0
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, SIZE, SIZE) as renderer:
        renderer.update_scene(data, "cam")
        image = renderer.render()
    rot = data.cam_xmat[0].reshape(3, 3)  # columns: right, up, backward
    r_cv = np.diag([1.0, -1.0, -1.0]) @ rot.T
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = r_cv, -r_cv @ data.cam_xpos[0]
    return image[..., 0] > 127, K.copy(), ext


def test_spheres_land_where_mujoco_renders_them():
    center, radius = np.array([0.12, 0.3, 0.05]), 0.06
    rendered, k, ext = mujoco_sphere(center, radius)
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    _, ours = draw_spheres(blank, [Sphere(tuple(center), radius, (255, 255, 255))], k, ext)
    assert rendered.sum() > 200  # the sphere is in view and off the optical axis
    iou = (ours & rendered).sum() / (ours | rendered).sum()
    assert iou > 0.95, iou
    ys, xs = np.nonzero(rendered)
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    ys, xs = np.nonzero(ours)
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], centroid, atol=0.5)


def test_a_point_projects_exactly_and_the_radius_is_f_r_over_z():
    uv, depth = project(np.array([[0.1, -0.05, 2.0]]), K, LOOK_DOWN_Z)
    np.testing.assert_allclose(uv[0], [SIZE / 2 + F * 0.05, SIZE / 2 - F * 0.025])
    assert depth[0] == 2.0
    z, r = 1.0, 0.1
    _, mask = draw_spheres(np.zeros((SIZE, SIZE, 3), np.uint8), [Sphere((0, 0, z), r, (9, 9, 9))],
                           K, LOOK_DOWN_Z)  # fmt: skip
    expected = F * r / np.sqrt(z**2 - r**2)  # the silhouette's radius (about f r / z)
    assert abs(np.sqrt(mask.sum() / np.pi) - expected) < 0.5
    assert abs(expected - F * r / z) < 0.06 * expected
    ys, xs = np.nonzero(mask)
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], [SIZE / 2] * 2, atol=0.05)


def test_nearer_spheres_cover_farther_ones_whatever_the_order():
    near = Sphere((0.0, 0.0, 1.0), 0.05, (255, 0, 0))
    far = Sphere((0.0, 0.0, 2.0), 0.2, (0, 0, 255))
    blank = np.zeros((SIZE, SIZE, 3), np.uint8)
    for order in ([near, far], [far, near]):
        image, _ = draw_spheres(blank, order, K, LOOK_DOWN_Z)
        assert tuple(image[SIZE // 2, SIZE // 2]) == (255, 0, 0)  # the near one in the middle
        assert tuple(image[SIZE // 2, SIZE // 2 + 8]) == (0, 0, 255)  # the far one around it
    behind = Sphere((0.0, 0.0, -1.0), 0.5, (1, 2, 3))
    assert not draw_spheres(blank, [behind], K, LOOK_DOWN_Z)[1].any()


def test_colours_follow_the_gripper_and_the_camera():
    joints = np.arange(21, dtype=float).reshape(7, 3)
    closed = target_spheres(np.zeros(3), 0.05, joints, "front")
    opened = target_spheres(np.zeros(3), 1.0, joints, "front")
    assert closed[0].color == CLOSED_COLOR and opened[0].color == OPEN_COLOR
    assert [s.color for s in closed[1:]] == [JOINT_COLORS[j] for j in (1, 3, 5)]
    assert closed[1].center == (3.0, 4.0, 5.0)  # joint 1 (0-based)
    assert closed[0].radius == pytest.approx(0.08)  # 0.01 m x the front camera's 8
    assert target_spheres(np.zeros(3), 1.0, joints, "wrist")[0].radius == pytest.approx(0.03)
    assert len(target_spheres(np.zeros(3), 1.0, joints, "overhead")) == 1  # gripper only
    custom = TargetStyle(radius=0.02, joints={"front": [3]})
    assert len(target_spheres(np.zeros(3), 1.0, joints, "front", custom)) == 2
    with pytest.raises(StemobError, match="spheres exist for joints"):
        TargetStyle(joints={"front": [2]})


def test_tiles_round_trip_and_the_random_background_keeps_only_spheres():
    rng = np.random.default_rng(0)
    views = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    tiled = tile(views)
    assert tiled.shape == (32, 32, 3) and not tiled[16:, 16:].any()  # the empty fourth cell
    for a, b in zip(untile(tiled, 3), views, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(StemobError, match="do not fit"):
        tile(views * 2)
    drawn = np.full((16, 16, 3), 200, np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    texture = np.full((16, 16, 3), 10, np.uint8)
    out = random_background(drawn, mask, texture, rng)
    np.testing.assert_array_equal(out[~mask], texture[~mask])
    blended = out[mask].astype(int)
    assert (blended >= round(0.7 * 200 + 0.3 * 10)).all() and (blended <= 200).all()
    assert len(np.unique(blended)) == 1  # one alpha per image
