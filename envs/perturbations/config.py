"""Colosseum-style perturbation YAML: schema and validation.

File layout (Colosseum's)::

    env:
      scene:
        factors:
          - variation: object_color        # one of VARIATIONS
            name: mo_color                 # optional label
            enabled: true
            targets: [manipulated_object]  # roles, camera names, body names
            color_range: [[0, 0, 0], [1, 1, 1]]
            seed: 0

``texture_pool: train | eval`` is a stemob-only key of the texture factors (default ``train``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stemob.errors import StemobError

ROLES = ("manipulated_object", "receiver_object", "table", "background", "distractor_area")
VEC3_RANGE = "vec3_range"
SCALAR_RANGE = "scalar_range"
COUNT = "count"
POOL = "pool"
AREA = "area"

# variation -> (required params, optional params with defaults, default targets or None)
VARIATIONS: dict[str, tuple[dict[str, str], dict[str, tuple[str, Any]], list[str] | None]] = {
    "object_color": ({"color_range": VEC3_RANGE}, {}, None),
    "object_texture": ({}, {"texture_pool": (POOL, "train")}, None),
    "object_size": ({"scale_range": SCALAR_RANGE}, {}, None),
    "light_color": ({"color_range": VEC3_RANGE}, {}, ["lights"]),
    "table_color": ({"color_range": VEC3_RANGE}, {}, ["table"]),
    "table_texture": ({}, {"texture_pool": (POOL, "train")}, ["table"]),
    "background_texture": ({}, {"texture_pool": (POOL, "train")}, ["background"]),
    "distractor_object": (
        {"num_objects": COUNT},
        {
            "spawn_area": (AREA, [[0.3, -0.35], [0.75, 0.35]]),
            "size_range": (SCALAR_RANGE, [0.015, 0.035]),
        },
        ["distractor_area"],
    ),
    "camera_pose": (
        {"euler_range": VEC3_RANGE, "position_range": VEC3_RANGE},
        {},
        ["front", "overhead"],
    ),
    "object_friction": ({"friction_range": SCALAR_RANGE}, {}, None),
    "object_mass": ({"mass_range": SCALAR_RANGE}, {}, None),
}
COMMON_KEYS = {"variation", "name", "enabled", "targets", "seed"}
STEMOB_ONLY_KEYS = ("texture_pool",)


@dataclass
class FactorConfig:
    """One validated factor entry."""

    variation: str
    name: str
    enabled: bool
    targets: list[str]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


def _err(where: str, msg: str) -> StemobError:
    return StemobError(f"{where}: {msg}")


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _err(where, f"expected a number, got {v!r}")
    return float(v)


def _check_param(kind: str, value: Any, where: str) -> Any:
    if kind == VEC3_RANGE:
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise _err(where, f"expected [[lo x, lo y, lo z], [hi x, hi y, hi z]], got {value!r}")
        lo, hi = value
        if not all(isinstance(v, list | tuple) and len(v) == 3 for v in (lo, hi)):
            raise _err(where, f"expected two lists of 3 numbers, got {value!r}")
        lo = [_num(x, where) for x in lo]
        hi = [_num(x, where) for x in hi]
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise _err(where, f"low > high in range {value!r}")
        return [lo, hi]
    if kind == SCALAR_RANGE:
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise _err(where, f"expected [low, high], got {value!r}")
        lo, hi = (_num(x, where) for x in value)
        if lo > hi:
            raise _err(where, f"low > high in range {value!r}")
        if lo < 0:
            raise _err(where, f"expected non-negative values, got {value!r}")
        return [lo, hi]
    if kind == COUNT:
        vals = value if isinstance(value, list | tuple) else [value, value]
        if len(vals) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            raise _err(where, f"expected an integer or [low, high] integers, got {value!r}")
        if vals[0] > vals[1]:
            raise _err(where, f"low > high in range {value!r}")
        from envs.tabletop.scene import NUM_DISTRACTORS

        if vals[0] < 0 or vals[1] > NUM_DISTRACTORS:
            raise _err(where, f"expected values in [0, {NUM_DISTRACTORS}], got {value!r}")
        return list(vals)
    if kind == POOL:
        if value not in ("train", "eval"):
            raise _err(where, f"expected 'train' or 'eval', got {value!r}")
        return value
    if kind == AREA:
        if not (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, list | tuple) and len(v) == 2 for v in value)
        ):
            raise _err(where, f"expected [[x_min, y_min], [x_max, y_max]], got {value!r}")
        lo = [_num(x, where) for x in value[0]]
        hi = [_num(x, where) for x in value[1]]
        if lo[0] > hi[0] or lo[1] > hi[1]:
            raise _err(where, f"low > high in area {value!r}")
        return [lo, hi]
    raise AssertionError(kind)


def parse_factor(entry: Any, where: str) -> FactorConfig:
    """Validate one entry of ``env.scene.factors``."""
    if not isinstance(entry, dict):
        raise _err(where, f"expected a mapping, got {type(entry).__name__}")
    if "variation" not in entry:
        raise _err(f"{where}.variation", "missing key")
    var = entry["variation"]
    if var not in VARIATIONS:
        raise _err(
            f"{where}.variation", f"unknown variation {var!r}; expected one of {sorted(VARIATIONS)}"
        )
    required, optional, default_targets = VARIATIONS[var]
    for key in ("enabled", "seed", *required):
        if key not in entry:
            raise _err(f"{where}.{key}", f"missing key (variation {var})")
    if default_targets is None and "targets" not in entry:
        raise _err(f"{where}.targets", f"missing key (variation {var} needs targets)")
    unknown = set(entry) - COMMON_KEYS - set(required) - set(optional)
    if unknown:
        raise _err(f"{where}.{sorted(unknown)[0]}", f"unknown key for variation {var}")
    if not isinstance(entry["enabled"], bool):
        raise _err(f"{where}.enabled", f"expected true or false, got {entry['enabled']!r}")
    seed = entry["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(f"{where}.seed", f"expected a non-negative integer, got {seed!r}")
    targets = entry.get("targets", default_targets)
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise _err(f"{where}.targets", f"expected a list of names, got {targets!r}")
    params = {k: _check_param(kind, entry[k], f"{where}.{k}") for k, kind in required.items()}
    for k, (kind, default) in optional.items():
        params[k] = _check_param(kind, entry.get(k, default), f"{where}.{k}")
    return FactorConfig(
        var, str(entry.get("name", var)), entry["enabled"], list(targets), seed, params
    )


def parse_config(cfg: Any, source: str = "perturbation") -> list[FactorConfig]:
    """Validate a whole perturbation config (the parsed YAML) and return its factors."""
    where = f"{source}: env"
    if not isinstance(cfg, dict) or "env" not in cfg:
        raise StemobError(f"{where}: missing key (expected env.scene.factors)")
    env = cfg["env"]
    if not isinstance(env, dict) or "scene" not in env:
        raise StemobError(f"{where}.scene: missing key")
    scene = env["scene"]
    if not isinstance(scene, dict) or "factors" not in scene:
        raise StemobError(f"{where}.scene.factors: missing key")
    factors = scene["factors"] or []
    if not isinstance(factors, list):
        raise StemobError(f"{where}.scene.factors: expected a list")
    return [parse_factor(f, f"{where}.scene.factors[{i}]") for i, f in enumerate(factors)]


def load_config(source: str | Path | dict | None) -> tuple[dict | None, list[FactorConfig]]:
    """Read (path) or take (dict) a config; returns (the dict, its validated factors)."""
    if source is None:
        return None, []
    if isinstance(source, dict):
        cfg = copy.deepcopy(source)
        return cfg, parse_config(cfg)
    path = Path(source)
    if not path.is_file():
        raise StemobError(f"perturbation file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StemobError(f"{path}: not valid YAML ({exc})") from exc
    return cfg, parse_config(cfg, str(path))


def strip_stemob_keys(cfg: dict) -> dict:
    """A copy without the stemob-only keys, for Colosseum itself."""
    out = copy.deepcopy(cfg)
    for f in out.get("env", {}).get("scene", {}).get("factors", []) or []:
        for k in STEMOB_ONLY_KEYS:
            f.pop(k, None)
    return out
