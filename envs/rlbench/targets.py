"""Role-based perturbation targets resolved to RLBench/Colosseum object names, per task.

Our perturbation YAMLs (``configs/perturbation/``) name *roles* (``manipulated_object``,
``receiver_object``, ``table``, ``background``, ``distractor_area``, ``lights``) and stemob camera
names (``front``, ``wrist``, ``left_shoulder``, ``right_shoulder``, ``overhead``). Colosseum's
``EnvironmentExt`` wants the CoppeliaSim object names of each task's scene. :data:`TASK_TARGETS`
is that table; its entries are the names Colosseum's own per-task configs use
(``colosseum/assets/configs/<task>.yaml`` of robot-colosseum at commit
098a910ae1d490524adb49b8d50735b00a1a62de), one list per (role, factor kind), because Colosseum
colours the visual shapes but scales or weighs the root objects.

:func:`resolve_colosseum_config` turns a validated stemob config into the dict Colosseum reads:
roles and camera names replaced, ``targets`` dropped where Colosseum takes none (table and
background factors), stemob-only keys removed, and the task name filled in.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from envs.perturbations.config import STEMOB_ONLY_KEYS, load_config
from stemob.errors import StemobError

CAMERA_NAMES = {
    "front": "cam_front",
    "wrist": "cam_wrist",
    "left_shoulder": "cam_over_shoulder_left",
    "right_shoulder": "cam_over_shoulder_right",
    "overhead": "cam_overhead",
}
"""stemob camera name -> RLBench vision sensor name (``rlbench/backend/scene.py``)."""

LIGHTS = ["DefaultLightA", "DefaultLightB", "DefaultLightD"]
"""The lights Colosseum's configs perturb (the ``lights`` target)."""

TABLETOP_ONLY_KEYS = ("spawn_area", "size_range")
"""Distractor parameters of the embedded tabletop suite; Colosseum spawns its own models."""

_CAMERA_POSE = ["cam_front", "cam_over_shoulder_left", "cam_over_shoulder_right"]

# task -> {kind: names}; kinds: mo_color, mo_texture, mo_size, ro_color, ro_texture, ro_size,
# friction, mass, distractor. A missing kind means Colosseum defines no such factor for the task.
TASK_TARGETS: dict[str, dict[str, list[str]]] = {
    "basketball_in_hoop": {
        "mo_color": ["ball"], "mo_texture": ["ball"], "mo_size": ["ball"],
        "ro_color": ["basket_ball_hoop_visual"], "ro_texture": ["basket_ball_hoop_visual"],
        "ro_size": ["basket_ball_hoop_respondable"],
        "distractor": ["spawn_boundary0", "spawn_boundary1"],
    },
    "close_box": {
        "mo_color": ["box_base", "box_lid"], "mo_texture": ["box_base", "box_lid"],
        "mo_size": ["box_base"], "distractor": ["spawn_boundary0"],
    },
    "close_laptop_lid": {
        "mo_color": ["base_visual", "lid_visual", "laptop_holder"],
        "mo_size": ["laptop_holder", "base"], "distractor": ["spawn_boundary0"],
    },
    "empty_dishwasher": {
        "mo_color": ["dishwasher_base_visual", "dishwasher_door_visual"],
        "mo_texture": ["dishwasher_plate_visual", "dishwasher_door_visual"],
        "mo_size": ["dishwasher"], "ro_color": ["dishwasher_plate_visual"],
        "ro_texture": ["dishwasher_plate_visual"], "ro_size": ["dishwasher_plate"],
        "distractor": ["spawn_boundary0"],
    },
    "get_ice_from_fridge": {
        "mo_color": ["cup_visual"], "mo_texture": ["cup_visual"], "mo_size": ["cup", "cup_visual"],
        "ro_color": ["fridge_visual"], "ro_texture": ["fridge_visual"], "ro_size": ["fridge_base"],
        "distractor": ["spawn_boundary0"],
    },
    "hockey": {
        "mo_color": ["hockey_stick"], "mo_size": ["hockey_stick"], "ro_color": ["hockey_ball"],
        "ro_texture": ["hockey_ball"], "ro_size": ["hockey_ball"], "friction": ["hockey_ball"],
        "mass": ["hockey_ball"], "distractor": ["spawn_boundary0"],
    },
    "insert_onto_square_peg": {
        "mo_color": ["square_ring"], "mo_size": ["square_ring"],
        "ro_color": ["pillar0", "pillar1", "pillar2"],
        "ro_texture": ["pillar0", "pillar1", "pillar2"],
        "ro_size": ["pillar0", "pillar1", "pillar2"],
        "distractor": ["spawn_boundary0", "spawn_boundary1"],
    },
    "meat_on_grill": {
        "mo_color": ["chicken_visual", "steak_visual"],
        "mo_size": ["chicken_visual", "steak_visual"], "ro_color": ["grill_visual"],
        "distractor": ["spawn_boundary0"],
    },
    "move_hanger": {
        "mo_color": ["clothes_hanger_visual0"],
        "ro_color": [
            "clothes_rack", "clothes_rack0", "clothes_rack_sub0", "clothes_rack_sub1",
            "clothes_rack_sub2", "clothes_rack_sub3",
        ],
        "distractor": ["spawn_boundary0"],
    },
    "open_drawer": {
        "mo_color": ["drawer_frame", "drawer_legs", "drawer_bottom", "drawer_middle", "drawer_top"],
        "mo_size": ["drawer_frame"], "distractor": ["spawn_boundary0"],
    },
    "place_wine_at_rack_location": {
        "mo_color": ["wine_bottle_visual"], "mo_size": ["wine_bottle"],
        "ro_color": ["rack_bottom_visual", "rack_top_visual"],
        "ro_texture": ["rack_bottom_visual", "rack_top_visual"],
        "ro_size": ["rack_bottom", "rack_top"], "distractor": ["spawn_boundary0"],
    },
    "put_money_in_safe": {
        "mo_color": ["dollar_stack", "dollar_back_visual", "dollar_front_visual"],
        "mo_texture": ["dollar_back_visual", "dollar_front_visual", "dollar_stack"],
        "mo_size": ["dollar_stack", "dollar_back_visual", "dollar_front_visual"],
        "ro_color": ["safe_door", "safe_body"], "ro_texture": ["safe_body", "safe_door"],
        "distractor": ["spawn_boundary0"],
    },
    "reach_and_drag": {
        "mo_color": ["stick"], "mo_texture": ["stick"], "mo_size": ["stick"],
        "ro_color": ["cube"], "ro_texture": ["cube"], "ro_size": ["cube"],
        "friction": ["cube"], "mass": ["cube"], "distractor": ["spawn_boundary0"],
    },
    "scoop_with_spatula": {
        "mo_color": ["spatula_visual"], "mo_texture": ["spatula_visual"],
        "mo_size": ["scoop_with_spatula_spatula"], "ro_color": ["Cuboid"],
        "ro_texture": ["Cuboid"], "ro_size": ["Cuboid"],
        "friction": ["Cuboid", "scoop_with_spatula_spatula"],
        "mass": ["Cuboid", "scoop_with_spatula_spatula"],
        "distractor": ["spawn_boundary0", "spawn_boundary1"],
    },
    "slide_block_to_target": {
        "mo_color": ["block"], "mo_texture": ["block"], "friction": ["block"], "mass": ["block"],
        "distractor": ["spawn_boundary0"],
    },
    "stack_cups": {
        "mo_color": ["cup1_visual", "cup2_visual", "cup3_visual"],
        "mo_texture": ["cup1_visual", "cup2_visual", "cup3_visual"],
        "mo_size": ["cup1", "cup2", "cup3"], "distractor": ["spawn_boundary0"],
    },
    "turn_oven_on": {
        "mo_color": [
            "oven_frame", "oven_base_resp", "oven_door_resp", "oven_door", "oven_tray",
            "oven_knob", "oven_knob_9",
        ],
        "mo_size": ["oven_knob"],
    },
    "wipe_desk": {
        "mo_color": ["sponge_visual"], "mo_texture": ["sponge_visual"],
        "mo_size": ["sponge", "sponge_visual"], "friction": ["sponge"], "mass": ["sponge"],
        "distractor": ["spawn_boundary0"],
    },
}  # fmt: skip

_ROLE_PREFIX = {"manipulated_object": "mo", "receiver_object": "ro"}
_KIND = {
    "object_color": "color", "object_texture": "texture", "object_size": "size",
    "object_friction": "friction", "object_mass": "mass",
}  # fmt: skip
_SCENE_WIDE = {"table_color": "table", "table_texture": "table", "background_texture": "background"}


def role_names(task: str, variation: str, role: str, where: str = "perturbation") -> list[str]:
    """RLBench object names of ``role`` for a factor of ``variation`` on ``task``."""
    if task not in TASK_TARGETS:
        raise StemobError(
            f"{where}: role {role!r} has no object names for RLBench task {task!r}; name the "
            f"objects in targets, or use one of the tasks with a role table: {sorted(TASK_TARGETS)}"
        )
    table = TASK_TARGETS[task]
    if variation == "distractor_object":
        kind = "distractor"
    elif variation in ("object_friction", "object_mass"):
        kind = _KIND[variation]
        if role not in _ROLE_PREFIX:
            raise StemobError(f"{where}: unknown role {role!r} for {variation}")
    else:
        if role not in _ROLE_PREFIX:
            raise StemobError(f"{where}: unknown role {role!r} for {variation}")
        kind = f"{_ROLE_PREFIX[role]}_{_KIND[variation]}"
    if kind not in table:
        have = sorted(k for k in table if k != "distractor")
        raise StemobError(
            f"{where}: Colosseum defines no {variation} target for {role!r} on task {task!r} "
            f"(this task has: {have}); name the objects in targets instead"
        )
    return list(table[kind])


def _resolve_targets(task: str, variation: str, targets: list[str], where: str) -> list[str]:
    out: list[str] = []
    for t in targets:
        if variation == "camera_pose":
            out.append(CAMERA_NAMES.get(t, t))
        elif variation == "light_color":
            out.extend(LIGHTS if t == "lights" else [t])
        elif variation == "distractor_object":
            if t == "distractor_area":
                out.extend(role_names(task, variation, t, where))
            else:
                out.append(t)
        elif t in _ROLE_PREFIX:
            out.extend(role_names(task, variation, t, where))
        elif t in ("table", "background", "distractor_area"):
            raise StemobError(f"{where}: role {t!r} is not a target of {variation} in Colosseum")
        else:
            out.append(t)
    return list(dict.fromkeys(out))


def resolve_colosseum_config(source: Any, task: str, seed: int | None = None) -> dict[str, Any]:
    """The Colosseum ``env`` config (a plain dict) for ``task`` from a stemob perturbation.

    Args:
        source: a perturbation YAML path or its parsed dict (validated with
            :func:`envs.perturbations.config.load_config`).
        task: the RLBench task name (``open_drawer``, ...).
        seed: written as ``env.seed`` (Colosseum's configs carry one; factors keep their own).

    Raises:
        StemobError: a role the task has no objects for, or a factor Colosseum cannot express.
    """
    cfg, factors = load_config(source)
    if cfg is None:
        return {"task_name": task, "seed": int(seed or 0), "scene": {"factors": []}}
    raw = copy.deepcopy(cfg["env"]["scene"]["factors"] or [])
    out_factors = []
    for i, (entry, parsed) in enumerate(zip(raw, factors, strict=True)):
        where = f"perturbation: env.scene.factors[{i}] ({parsed.name})"
        entry = dict(entry)
        for key in STEMOB_ONLY_KEYS:
            entry.pop(key, None)
        # deterministic draws: a factor without a seed takes env.seed (Colosseum would use
        # default_rng(None), fresh entropy: variations/variation.py:46-50 at 098a910)
        entry["seed"] = parsed.seed
        var = parsed.variation
        if var in _SCENE_WIDE:
            role = _SCENE_WIDE[var]
            if parsed.targets != [role]:
                raise StemobError(
                    f"{where}.targets: Colosseum's {var} acts on the whole {role}; expected "
                    f"[{role}] or no targets, got {parsed.targets}"
                )
            entry.pop("targets", None)
        else:
            entry["targets"] = _resolve_targets(task, var, parsed.targets, f"{where}.targets")
        if var == "distractor_object":
            for key in TABLETOP_ONLY_KEYS:
                entry.pop(key, None)
            lo, hi = parsed.params["num_objects"]
            if lo != hi:
                warnings.warn(
                    f"{where}.num_objects: Colosseum spawns a fixed number of distractors; "
                    f"using {hi} for the range [{lo}, {hi}]",
                    stacklevel=2,
                )
            entry["num_objects"] = int(hi)
        out_factors.append(entry)
    env = cfg.get("env", {})
    return {
        "task_name": task,
        "seed": int(seed if seed is not None else env.get("seed", 0) or 0),
        "scene": {"factors": out_factors},
    }


__all__ = [
    "CAMERA_NAMES",
    "LIGHTS",
    "TASK_TARGETS",
    "resolve_colosseum_config",
    "role_names",
]
