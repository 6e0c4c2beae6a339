"""Colosseum factors on a robosuite scene, written through the compiled model's arrays.

robosuite's own colour/texture randomiser is broken on mujoco >= 3.1.1, so colours go to
``geom_rgba``/``mat_rgba`` (the material's texture is detached so the colour shows), textures
to ``tex_data`` followed by ``mujoco.mjr_uploadTexture``; lights to ``light_diffuse``; camera
poses to ``cam_pos``/``cam_quat``; friction to ``geom_friction``; mass to
``body_mass``/``body_inertia``. ``object_size`` and ``distractor_object`` are refused
(:data:`envs.robosuite.types.UNSUPPORTED`). Parsing is :mod:`envs.perturbations.config`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from envs.perturbations.config import FactorConfig, load_config, sample_colors, sample_values
from envs.perturbations.factors import move_camera, set_mass
from envs.perturbations.textures import POOL_SIZE, make_texture
from envs.robosuite.types import (
    BACKGROUND_GEOMS,
    CAMERA_ALIASES,
    ROLE_OBJECTS,
    TABLE_GEOMS,
    UNSUPPORTED,
)
from stemob.errors import StemobError

SNAPSHOT_FIELDS = (
    "geom_rgba", "mat_rgba", "mat_texid", "light_diffuse", "cam_pos", "cam_quat",
    "geom_friction", "body_mass", "body_inertia",
)  # fmt: skip
_ITEM = re.compile(r"^(\w+)\[(\w+)\]$")


def _base_env_name(env_name: str) -> str:
    return re.sub(r"_D\d+$", "", env_name)


class RobosuiteResolver:
    """Maps factor targets to model ids of one robosuite env."""

    def __init__(self, rs_env: Any, env_name: str) -> None:
        self.env = rs_env
        self.env_name = env_name
        self.model: mujoco.MjModel = rs_env.sim.model._model

    def _objects(self, role: str, where: str) -> list[Any]:
        table = ROLE_OBJECTS.get(_base_env_name(self.env_name))
        if table is None or role not in table:
            known = sorted(table) if table else []
            raise StemobError(
                f"{where}: robosuite env {self.env_name!r} has no {role!r} in the role table "
                f"(roles known for it: {known}); name a body instead"
            )
        out = []
        for spec in table[role]:
            m = _ITEM.match(spec)
            attr, key = (m.group(1), m.group(2)) if m else (spec, None)
            value = getattr(self.env, attr, None)
            if key is not None and isinstance(value, list | tuple):
                if key.isdigit():
                    value = value[int(key)] if int(key) < len(value) else None
                else:
                    value = next((o for o in value if getattr(o, "name", None) == key), None)
            if value is None:
                raise StemobError(f"{where}: env {self.env_name!r} has no object {spec!r}")
            out.append(value)
        return out

    def bodies(self, target: str, where: str) -> list[int]:
        """Root bodies of a role or a body name."""
        m = self.model
        if target in ("manipulated_object", "receiver_object"):
            return [m.body(o.root_body).id for o in self._objects(target, where)]
        try:
            return [m.body(target).id]
        except KeyError:
            raise StemobError(
                f"{where}: unknown target {target!r} (expected a role, table, background, a "
                f"body or a geom name of {self.env_name!r})"
            ) from None

    def subtree(self, roots: list[int]) -> list[int]:
        m = self.model
        out = []
        for b in range(m.nbody):
            a = b
            while a > 0 and a not in roots:
                a = int(m.body_parentid[a])
            if a in roots and a > 0:
                out.append(b)
        return out

    def geoms(self, target: str, where: str) -> list[int]:
        """Geoms that show a target (role, ``table``, ``background``, body or geom name)."""
        m = self.model
        if target in ("table", "background"):
            names = TABLE_GEOMS if target == "table" else BACKGROUND_GEOMS
            ids = []
            for n in names:
                try:
                    ids.append(m.geom(n).id)
                except KeyError:
                    continue
            if not ids:
                raise StemobError(f"{where}: env {self.env_name!r} has no {target} geoms {names}")
            return ids
        try:
            return [m.geom(target).id]
        except KeyError:
            pass
        bodies = set(self.subtree(self.bodies(target, where)))
        return [g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in bodies]

    def camera(self, target: str, where: str) -> int:
        name = CAMERA_ALIASES.get(target, target)
        try:
            return self.model.camera(name).id
        except KeyError:
            cams = [self.model.camera(i).name for i in range(self.model.ncam)]
            raise StemobError(
                f"{where}: unknown camera {target!r}; expected one of {cams}"
            ) from None

    def lights(self, target: str, where: str) -> list[int]:
        if target == "lights":
            return list(range(self.model.nlight))
        try:
            return [self.model.light(target).id]
        except KeyError:
            raise StemobError(f"{where}: unknown light {target!r}") from None


class RobosuitePerturbations:
    """The enabled factors of one config for one robosuite env; resampled at every reset.

    Args:
        source: a perturbation YAML path, its parsed dict, or None.
        env_name: the robosuite env name (for the role table).
    """

    def __init__(self, source: str | Path | dict | None, env_name: str) -> None:
        self.source, factors = load_config(source)
        self.env_name = env_name
        self.factors = [f for f in factors if f.enabled]
        for i, f in enumerate(self.factors):
            if f.variation in UNSUPPORTED:
                raise StemobError(
                    f"{self._where(i)}.variation: {f.variation} cannot be expressed by the "
                    f"robosuite backend ({UNSUPPORTED[f.variation]})"
                )
        self._model: mujoco.MjModel | None = None
        self._defaults: dict[str, np.ndarray] = {}
        self._tex_default: np.ndarray | None = None
        self._touched: set[int] = set()

    def _where(self, i: int) -> str:
        return f"perturbation: env.scene.factors[{i}] ({self.factors[i].name})"

    def validate(self, rs_env: Any) -> None:
        """Resolve every target once (errors name the factor and target)."""
        res = RobosuiteResolver(rs_env, self.env_name)
        for i, f in enumerate(self.factors):
            where = f"{self._where(i)}.targets"
            for t in f.targets:
                if f.variation == "camera_pose":
                    res.camera(t, where)
                elif f.variation == "light_color":
                    res.lights(t, where)
                elif f.variation == "object_mass":
                    res.bodies(t, where)
                else:
                    geoms = res.geoms(t, where)
                    if f.variation.endswith("texture"):
                        self._texture_ids(res.model, geoms, where)

    @staticmethod
    def _materials(model: mujoco.MjModel, geoms: list[int]) -> list[int]:
        return sorted({int(model.geom_matid[g]) for g in geoms if model.geom_matid[g] >= 0})

    def _texture_ids(self, model: mujoco.MjModel, geoms: list[int], where: str) -> list[int]:
        """The RGB textures of the geoms' materials as compiled (an ``object_color`` factor
        applied before detaches them from the materials; the texture factor re-attaches them)."""
        role = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
        mats = self._materials(model, geoms)
        texid = (
            self._defaults.get("mat_texid", model.mat_texid)
            if model is self._model
            else model.mat_texid
        )
        tex = sorted({int(texid[m, role]) for m in mats if texid[m, role] >= 0})
        if not tex:
            raise StemobError(f"{where}: these geoms have no texture to replace")
        return tex

    def _snapshot_or_restore(self, model: mujoco.MjModel) -> set[int]:
        if model is not self._model:
            self._model = model
            self._defaults = {k: getattr(model, k).copy() for k in SNAPSHOT_FIELDS}
            self._tex_default = model.tex_data.copy() if self.needs_textures else None
            self._touched = set()
            return set()
        for k, v in self._defaults.items():
            getattr(model, k)[...] = v
        if self._tex_default is not None:
            for t in self._touched:
                a, n = self._tex_range(model, t)
                model.tex_data[a : a + n] = self._tex_default[a : a + n]
        dirty, self._touched = self._touched, set()
        return dirty

    @property
    def needs_textures(self) -> bool:
        return any(f.variation.endswith("texture") for f in self.factors)

    @staticmethod
    def _tex_range(model: mujoco.MjModel, tex: int) -> tuple[int, int]:
        n = int(model.tex_width[tex]) * int(model.tex_height[tex]) * int(model.tex_nchannel[tex])
        return int(model.tex_adr[tex]), n

    def apply(self, rs_env: Any, reset_seed: int) -> None:
        """Restore the model's defaults, apply every factor (draws seeded by the factor seed
        and ``reset_seed``), upload changed textures and recompute positions."""
        if not self.factors:
            return
        res = RobosuiteResolver(rs_env, self.env_name)
        model = res.model
        dirty = self._snapshot_or_restore(model)
        for i, f in enumerate(self.factors):
            rng = np.random.default_rng([f.seed, int(reset_seed)])
            self._apply_one(res, f, rng, f"{self._where(i)}.targets", dirty)
        self._touched |= {t for t in dirty if t >= 0}
        ctx = getattr(rs_env.sim, "_render_context_offscreen", None)
        if ctx is not None:
            for t in sorted(dirty):
                mujoco.mjr_uploadTexture(model, ctx.con, t)
        rs_env.sim.forward()

    def _apply_one(
        self, res: RobosuiteResolver, f: FactorConfig, rng: np.random.Generator, where: str,
        dirty: set[int],
    ) -> None:  # fmt: skip
        m = res.model
        var, p = f.variation, f.params
        if var in ("object_color", "table_color"):
            for t, rgb in zip(f.targets, sample_colors(f, rng, len(f.targets)), strict=True):
                geoms = res.geoms(t, where)
                m.geom_rgba[geoms, :3] = rgb
                for mat in self._materials(m, geoms):
                    m.mat_rgba[mat, :3] = rgb
                    m.mat_texid[mat, :] = -1
        elif var in ("object_texture", "table_texture", "background_texture"):
            image = make_texture(p["texture_pool"], int(rng.integers(POOL_SIZE)))
            for t in f.targets:
                geoms = res.geoms(t, where)
                for tex in self._texture_ids(m, geoms, where):
                    self._write_texture(m, tex, image)
                    dirty.add(tex)
                for mat in self._materials(m, geoms):
                    m.mat_rgba[mat, :3] = 1.0
                    m.mat_texid[mat] = self._defaults["mat_texid"][mat]
        elif var == "light_color":
            for t, rgb in zip(f.targets, sample_colors(f, rng, len(f.targets)), strict=True):
                m.light_diffuse[res.lights(t, where)] = rgb
        elif var == "camera_pose":
            for t in f.targets:
                move_camera(m, res.camera(t, where), rng, p)
        elif var == "object_friction":
            mus = sample_values(f, rng, len(f.targets), "friction")
            for t, mu in zip(f.targets, mus, strict=True):
                m.geom_friction[res.geoms(t, where), 0] = mu
        elif var == "object_mass":
            masses = sample_values(f, rng, len(f.targets), "mass")
            for t, mass in zip(f.targets, masses, strict=True):
                set_mass(m, res.subtree(res.bodies(t, where)), mass)
        else:  # pragma: no cover - refused in __init__
            raise StemobError(f"{where}: unsupported variation {var!r}")

    def _write_texture(self, m: mujoco.MjModel, tex: int, image: np.ndarray) -> None:
        if self._tex_default is None:
            self._tex_default = m.tex_data.copy()
        w, h, c = int(m.tex_width[tex]), int(m.tex_height[tex]), int(m.tex_nchannel[tex])
        reps_y, reps_x = int(np.ceil(h / image.shape[0])), int(np.ceil(w / image.shape[1]))
        img = np.tile(image, (reps_y, reps_x, 1))[:h, :w]
        if c == 4:
            img = np.concatenate([img, np.full((h, w, 1), 255, np.uint8)], axis=-1)
        a, n = self._tex_range(m, tex)
        m.tex_data[a : a + n] = img[..., :c].reshape(-1)


def _euler_quat(euler: np.ndarray) -> np.ndarray:
    q = np.array([1.0, 0.0, 0.0, 0.0])
    for axis, ang in zip(np.eye(3), euler, strict=True):
        r = np.zeros(4)
        mujoco.mju_axisAngle2Quat(r, axis, float(ang))
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, q, r)
        q = out
    return q
