"""GENIMA's joint-action targets (Shridhar et al., CoRL 2024): the robot's pose a few steps ahead
drawn as coloured spheres on the camera images, tiled views, and the random-background copies
its controller learns from. Pure numpy: the dataset tools, the evaluation and the policies can
all use it (it needs only camera matrices and 3-D points)."""

from stemob.genima.targets import (
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

__all__ = [
    "CLOSED_COLOR",
    "JOINT_COLORS",
    "OPEN_COLOR",
    "Sphere",
    "TargetStyle",
    "draw_spheres",
    "project",
    "random_background",
    "target_spheres",
    "tile",
    "untile",
]
