"""GENIMA's joint-action targets (Shridhar et al., CoRL 2024): the robot's pose a few steps ahead
drawn as coloured spheres on the camera images, tiled views, and the random-background copies
its controller learns from. These are pure numpy (they need only camera matrices and 3-D points);
the diffusion agent that draws targets (:mod:`stemob.genima.drawer`, torch and diffusers) and its
trainer (:mod:`stemob.training.genima_drawer`) are imported on their own."""

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
