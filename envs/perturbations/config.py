"""Colosseum-style perturbation YAML: schema, validation and the shared random draws.

File layout (Colosseum's, ``colosseum/assets/configs/<task>.yaml`` at robot-colosseum 098a910)::

    data: {...}                          # Colosseum's dataset-generator settings (ignored here)
    env:
      task_name: open_drawer             # optional
      seed: 42                           # optional; factors may say seed: ${env.seed}
      scene:
        factors:
          - variation: object_color        # one of VARIATIONS
            name: mo_color                 # optional label
            enabled: true                  # optional (default true, as manager.py:35)
            targets: [manipulated_object]  # roles, camera names, body names
            color_range: [[0, 0, 0], [1, 1, 1]]   # optional: colours from COLOR_LIBRARY
            seed: 0                        # optional: env.seed, else 0

Files are read with omegaconf, so Colosseum's interpolations (``seed: ${env.seed}``, and
``${eval: '${env.seed} + 1'}`` at 098a910, whose ``eval`` resolver its dataset generator
registers) resolve; ``eval`` is resolved here by :func:`_arithmetic` (integer arithmetic only,
never Python's ``eval``).

Every key Colosseum's factor classes read (``colosseum/variations/*.py`` at 098a910) is accepted
with its meaning: colours from ``color_range``, ``color_list`` or ``color_names`` (precedence
names > list > range, else a random colour of its 20-colour library), ``color_same`` (one draw
for every target, else one per target; default true for lights, false otherwise), the same for
sizes (``scale_list``/``scale_same``), friction (``friction_list``/``friction_same``) and mass
(``mass_list``/``mass_same``); ``num_objects`` defaults to 1; a ``camera_pose`` range that is
left out is not applied. :data:`COLOSSEUM_ONLY_KEYS` are Colosseum's asset choices
(texture files and their UV mapping, distractor models and settling steps): accepted, passed on
to Colosseum by the RLBench backend, and without meaning for the tabletop and robosuite
backends, whose textures come from ``texture_pool`` and whose distractors are built in.
``texture_pool: train | eval`` is a stemob-only key of the texture factors (default ``train``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stemob.errors import StemobError

ROLES = ("manipulated_object", "receiver_object", "table", "background", "distractor_area")
VEC3_RANGE = "vec3_range"
SCALAR_RANGE = "scalar_range"
COUNT = "count"
POOL = "pool"
AREA = "area"

COLOR_LIST = "color_list"
NAMES = "color_names"
VALUES = "values"
FLAG = "flag"
ANY = "any"

COLOR_LIBRARY: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0), "maroon": (0.5, 0.0, 0.0), "lime": (0.0, 1.0, 0.0),
    "green": (0.0, 0.5, 0.0), "blue": (0.0, 0.0, 1.0), "navy": (0.0, 0.0, 0.5),
    "yellow": (1.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
    "silver": (0.75, 0.75, 0.75), "gray": (0.5, 0.5, 0.5), "orange": (1.0, 0.5, 0.0),
    "olive": (0.5, 0.5, 0.0), "purple": (0.5, 0.0, 0.5), "teal": (0.0, 0.5, 0.5),
    "azure": (0.0, 0.5, 1.0), "violet": (0.5, 0.0, 1.0), "rose": (1.0, 0.0, 0.5),
    "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0),
}  # fmt: skip
"""Colosseum's colour library, in its order (``colosseum/variations/const.py:6-49`` at 098a910):
the colours a colour factor draws from when it gives no range, list or names."""

_COLOR = {
    "color_range": (VEC3_RANGE, None), "color_list": (COLOR_LIST, None),
    "color_names": (NAMES, None),
}  # fmt: skip
_TEXTURE = {"texture_pool": (POOL, "train")}
COLOSSEUM_ONLY_KEYS = (
    "textures_folder", "textures_filenames", "repeat_along_u", "repeat_along_v", "uv_scale",
    "mapping_mode", "objects_folder", "objects_filenames", "num_steps_wait", "shapes_to_handle",
)  # fmt: skip
"""Keys of Colosseum's asset choices, accepted for Colosseum and unused by our own backends."""

# variation -> (required params, optional params with (kind, default), default targets or None)
VARIATIONS: dict[str, tuple[dict[str, str], dict[str, tuple[str, Any]], list[str] | None]] = {
    "object_color": ({}, {**_COLOR, "color_same": (FLAG, False)}, None),
    "object_texture": ({}, _TEXTURE, None),
    "object_size": (
        {}, {"scale_range": (SCALAR_RANGE, None), "scale_list": (VALUES, None),
             "scale_same": (FLAG, False)}, None,
    ),
    "light_color": ({}, {**_COLOR, "color_same": (FLAG, True)}, ["lights"]),
    "table_color": ({}, {**_COLOR}, ["table"]),
    "table_texture": ({}, _TEXTURE, ["table"]),
    "background_texture": ({}, _TEXTURE, ["background"]),
    "distractor_object": (
        {},
        {
            "num_objects": (COUNT, 1),
            "spawn_area": (AREA, [[0.3, -0.35], [0.75, 0.35]]),
            "size_range": (SCALAR_RANGE, [0.015, 0.035]),
        },
        ["distractor_area"],
    ),
    "camera_pose": (
        {}, {"euler_range": (VEC3_RANGE, None), "position_range": (VEC3_RANGE, None)},
        ["front", "overhead"],
    ),
    "object_friction": (
        {}, {"friction_range": (SCALAR_RANGE, None), "friction_list": (VALUES, None),
             "friction_same": (FLAG, False)}, None,
    ),
    "object_mass": (
        {}, {"mass_range": (SCALAR_RANGE, None), "mass_list": (VALUES, None),
             "mass_same": (FLAG, False)}, None,
    ),
}  # fmt: skip
NEEDS_ONE_OF = {
    "object_size": ("scale_range", "scale_list"),
    "object_friction": ("friction_range", "friction_list"),
    "object_mass": ("mass_range", "mass_list"),
}
"""Factors that are meaningless without one of these keys (Colosseum's object_size would scale
by U(0, 1), its friction asserts, its mass does nothing: object_size.py:81-85, utils.py:124-125,
object_friction.py:52-53, object_mass.py:135-151 at 098a910)."""
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
    if kind == COLOR_LIST:
        if not isinstance(value, list | tuple) or not value:
            raise _err(where, f"expected a non-empty list of [r, g, b], got {value!r}")
        out = []
        for rgb in value:
            if not (isinstance(rgb, list | tuple) and len(rgb) == 3):
                raise _err(where, f"expected [r, g, b] entries, got {rgb!r}")
            out.append([_num(x, where) for x in rgb])
        return out
    if kind == NAMES:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not value:
            raise _err(where, f"expected a list of colour names, got {value!r}")
        bad = [v for v in value if v not in COLOR_LIBRARY]
        if bad:
            raise _err(where, f"unknown colour(s) {bad}; Colosseum's are {list(COLOR_LIBRARY)}")
        return list(value)
    if kind == VALUES:
        if not isinstance(value, list | tuple) or not value:
            raise _err(where, f"expected a non-empty list of numbers, got {value!r}")
        values = [_num(v, where) for v in value]
        if min(values) < 0:
            raise _err(where, f"expected non-negative values, got {value!r}")
        return values
    if kind == FLAG:
        if not isinstance(value, bool):
            raise _err(where, f"expected true or false, got {value!r}")
        return value
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


def parse_factor(entry: Any, where: str, default_seed: int | None = None) -> FactorConfig:
    """Validate one entry of ``env.scene.factors`` (``default_seed``: ``env.seed``)."""
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
    for key in required:
        if key not in entry:
            raise _err(f"{where}.{key}", f"missing key (variation {var})")
    if default_targets is None and "targets" not in entry:
        raise _err(f"{where}.targets", f"missing key (variation {var} needs targets)")
    unknown = set(entry) - COMMON_KEYS - set(required) - set(optional) - set(COLOSSEUM_ONLY_KEYS)
    if unknown:
        raise _err(f"{where}.{sorted(unknown)[0]}", f"unknown key for variation {var}")
    needs = NEEDS_ONE_OF.get(var)
    if needs and not any(entry.get(k) is not None for k in needs):
        raise _err(
            f"{where}.{needs[0]}", f"missing key (variation {var} needs {' or '.join(needs)})"
        )
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _err(f"{where}.enabled", f"expected true or false, got {enabled!r}")
    seed = entry.get("seed", default_seed if default_seed is not None else 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(f"{where}.seed", f"expected a non-negative integer, got {seed!r}")
    targets = entry.get("targets", default_targets)
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise _err(f"{where}.targets", f"expected a list of names, got {targets!r}")
    params = {k: _check_param(kind, entry[k], f"{where}.{k}") for k, kind in required.items()}
    for k, (kind, default) in optional.items():
        value = entry.get(k, default)
        params[k] = None if value is None else _check_param(kind, value, f"{where}.{k}")
    return FactorConfig(var, str(entry.get("name", var)), enabled, list(targets), seed, params)


def sample_colors(f: FactorConfig, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` RGB colours in [0, 1] for a colour factor's targets, as Colosseum draws them
    (``colosseum/variations/utils.py:56-76``, ``object_color.py:88-109`` at 098a910): from
    ``color_names``, else ``color_list``, else uniformly in ``color_range``, else a random colour
    of :data:`COLOR_LIBRARY`; one draw for all targets when ``color_same`` (always for
    ``table_color``, whose target is the one table)."""
    p = f.params
    same = p.get("color_same", True) or count == 1

    def one() -> np.ndarray:
        if p.get("color_names"):
            return np.asarray(COLOR_LIBRARY[p["color_names"][rng.integers(len(p["color_names"]))]])
        if p.get("color_list"):
            return np.asarray(p["color_list"][rng.integers(len(p["color_list"]))], float)
        if p.get("color_range"):
            return rng.uniform(*p["color_range"])
        names = list(COLOR_LIBRARY)
        return np.asarray(COLOR_LIBRARY[names[rng.integers(len(names))]])

    if same:
        value = one()
        return [value] * count
    return [one() for _ in range(count)]


def sample_values(f: FactorConfig, rng: np.random.Generator, count: int, key: str) -> list[float]:
    """``count`` values of a size / friction / mass factor (``key``: ``scale``, ``friction`` or
    ``mass``): from ``<key>_list``, else uniformly in ``<key>_range``; one for all targets when
    ``<key>_same``."""
    p = f.params

    def one() -> float:
        if p.get(f"{key}_list"):
            values = p[f"{key}_list"]
            return float(values[rng.integers(len(values))])
        return float(rng.uniform(*p[f"{key}_range"]))

    if p.get(f"{key}_same") or count == 1:
        value = one()
        return [value] * count
    return [one() for _ in range(count)]


def _arithmetic(expression: str) -> int | float:
    """Colosseum's ``${eval: ...}`` without Python's eval: numbers, + - * / // % and brackets."""
    import ast
    import operator

    ops = {
        ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.USub: operator.neg, ast.UAdd: operator.pos,
    }  # fmt: skip

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.operand))
        raise ValueError(f"only arithmetic is allowed in ${{eval: ...}}, got {expression!r}")

    return value(ast.parse(str(expression), mode="eval").body)


def _read_yaml(path: Path) -> Any:
    """The YAML at ``path`` with omegaconf interpolations resolved."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", _arithmetic)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StemobError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        return raw
    try:
        return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    except (OmegaConfBaseException, ValueError, SyntaxError) as exc:
        raise StemobError(f"{path}: cannot resolve an interpolation ({exc})") from exc


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
    seed = env.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise StemobError(f"{where}.seed: expected a non-negative integer, got {seed!r}")
    return [parse_factor(f, f"{where}.scene.factors[{i}]", seed) for i, f in enumerate(factors)]


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
    cfg = _read_yaml(path)
    return cfg, parse_config(cfg, str(path))


def strip_stemob_keys(cfg: dict) -> dict:
    """A copy without the stemob-only keys, for Colosseum itself."""
    out = copy.deepcopy(cfg)
    for f in out.get("env", {}).get("scene", {}).get("factors", []) or []:
        for k in STEMOB_ONLY_KEYS:
            f.pop(k, None)
    return out
