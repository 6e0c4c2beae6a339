"""MJCF generation for the tabletop scene: table, walls, lights, cameras, arm and task objects.

The table top is the plane z = 0; the arm stands at the origin and faces +x. Every role that a
perturbation can re-texture (manipulated object, receiver object, table, background) owns one
texture ``tex_<role>`` and one material ``mat_<role>``; their default texture is plain white so
that the material colour shows.
"""

from __future__ import annotations

import numpy as np

from envs.tabletop.robot import actuator_xml, robot_default_xml, robot_xml

TEXTURE_SIZE = 64
TEXTURED_ROLES = ("manipulated_object", "receiver_object", "table", "background")
CAMERAS = ("front", "wrist", "overhead")
NUM_DISTRACTORS = 5
TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)
BACKGROUND_RGBA = (0.75, 0.78, 0.8, 1.0)


def look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> str:
    """MJCF ``xyaxes`` of a camera at ``pos`` looking at ``target``."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return " ".join(f"{v:.6f}" for v in (*x, *y))


def _fmt(v: tuple[float, ...] | np.ndarray) -> str:
    return " ".join(f"{float(x):g}" for x in v)


def build_scene_xml(
    task_bodies: str,
    role_rgba: dict[str, tuple[float, float, float, float]],
    image_size: int = 96,
) -> str:
    """The whole scene as an MJCF string, with the task's bodies inserted in the world."""
    textures = "\n    ".join(
        f'<texture name="tex_{r}" type="cube" builtin="flat" width="{TEXTURE_SIZE}" '
        f'height="{TEXTURE_SIZE}" rgb1="1 1 1" rgb2="1 1 1"/>'
        for r in TEXTURED_ROLES
    )
    rgba = {"table": TABLE_RGBA, "background": BACKGROUND_RGBA, **role_rgba}
    rgba.setdefault("manipulated_object", (0.8, 0.15, 0.1, 1.0))
    rgba.setdefault("receiver_object", (0.15, 0.35, 0.8, 1.0))
    materials = "\n    ".join(
        f'<material name="mat_{r}" texture="tex_{r}" rgba="{_fmt(rgba[r])}" specular="0.1" '
        'shininess="0.1" reflectance="0"/>'
        for r in TEXTURED_ROLES
    )
    front = look_at(np.array([0.95, 0.0, 0.45]), np.array([0.42, 0.0, 0.02]), np.array([0, 0, 1.0]))
    over = look_at(np.array([0.47, 0.0, 0.95]), np.array([0.47, 0.0, 0.0]), np.array([1.0, 0, 0]))
    distractors = "\n    ".join(
        f'<body name="distractor{i}" pos="0 0 -2"><geom name="distractor{i}" type="box" '
        f'size="0.02 0.02 0.02" rgba="0.5 0.5 0.5 1"/></body>'
        for i in range(NUM_DISTRACTORS)
    )
    offsize = max(int(image_size), 256)
    walls = [
        ("wall_back", (-0.8, 0.0, 0.5), (0.01, 1.6, 1.3)),
        ("wall_front", (1.9, 0.0, 0.5), (0.01, 1.6, 1.3)),
        ("wall_left", (0.55, 1.6, 0.5), (1.35, 0.01, 1.3)),
        ("wall_right", (0.55, -1.6, 0.5), (1.35, 0.01, 1.3)),
        ("floor", (0.55, 0.0, -0.8), (1.35, 1.6, 0.01)),
    ]
    wall_xml = "\n    ".join(
        f'<geom name="{n}" type="box" pos="{_fmt(p)}" size="{_fmt(s)}" material="mat_background" '
        'contype="0" conaffinity="0"/>'
        for n, p, s in walls
    )
    return f"""<mujoco model="stemob_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default>
    {robot_default_xml()}
  </default>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{offsize}" offheight="{offsize}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
    <map znear="0.01" zfar="10"/>
  </visual>
  <asset>
    {textures}
    {materials}
    <material name="mat_robot" rgba="0.85 0.85 0.88 1" specular="0.2"/>
    <material name="mat_robot_dark" rgba="0.25 0.25 0.28 1" specular="0.2"/>
    <material name="mat_finger" rgba="0.15 0.15 0.15 1"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.6 0.3 1.6" dir="-0.1 -0.2 -1" castshadow="false"
           diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>
    <light name="fill" pos="0.9 -0.8 1.2" dir="-0.4 0.6 -1" castshadow="false"
           diffuse="0.25 0.25 0.25" specular="0 0 0"/>
    <camera name="front" pos="0.95 0 0.45" xyaxes="{front}" fovy="55"/>
    <camera name="overhead" pos="0.47 0 0.95" xyaxes="{over}" fovy="45"/>
    {wall_xml}
    <geom name="table" type="box" pos="0.45 0 -0.025" size="0.6 0.65 0.025"
          material="mat_table" friction="1 0.005 0.0001"/>
    <geom name="table_leg" type="box" pos="0.45 0 -0.4" size="0.5 0.55 0.35"
          material="mat_robot_dark" contype="0" conaffinity="0"/>
    {robot_xml()}
    {task_bodies}
    {distractors}
  </worldbody>
  <actuator>
    {actuator_xml()}
  </actuator>
</mujoco>
"""
