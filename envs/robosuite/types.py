"""Constants of the robosuite backend that need no robosuite import."""

from __future__ import annotations

ROBOSUITE_TYPE = 1
"""robomimic's ``EnvType.ROBOSUITE_TYPE`` (``env_args['type']`` of robosuite datasets)."""

CAMERA_ALIASES = {"front": "agentview", "overhead": "birdview", "wrist": "robot0_eye_in_hand"}
"""stemob camera names (perturbation targets) -> robosuite camera names."""

ROLE_OBJECTS: dict[str, dict[str, list[str]]] = {
    "Lift": {"manipulated_object": ["cube"]},
    "Stack": {"manipulated_object": ["cubeA"], "receiver_object": ["cubeB"]},
    "Door": {"manipulated_object": ["door"]},
    "NutAssemblySquare": {"manipulated_object": ["nuts[0]"]},
    "NutAssemblyRound": {"manipulated_object": ["nuts[1]"]},
    "PickPlaceCan": {"manipulated_object": ["objects[Can]"]},
    "PickPlaceMilk": {"manipulated_object": ["objects[Milk]"]},
    "PickPlaceBread": {"manipulated_object": ["objects[Bread]"]},
    "PickPlaceCereal": {"manipulated_object": ["objects[Cereal]"]},
}
"""robosuite env name -> role -> env attributes holding the role's MujocoObject(s).

``attr`` is one object, ``attr[i]`` an item of a list, ``attr[Name]`` the list item whose
``name`` is ``Name``. MimicGen variants (``Stack_D0``...) use their base task's row.
"""

TABLE_GEOMS = ("table_visual",)
BACKGROUND_GEOMS = (
    "floor", "wall_front_visual", "wall_left_visual", "wall_leftcorner_visual",
    "wall_rear_visual", "wall_right_visual", "wall_rightcorner_visual",
)  # fmt: skip
UNSUPPORTED = {
    "object_size": "robosuite objects are compiled with their sizes (contacts, sites and "
    "placement depend on them)",
    "distractor_object": "robosuite scenes have no pre-allocated distractor bodies",
}
"""Factors the robosuite backend refuses, with the reason."""
