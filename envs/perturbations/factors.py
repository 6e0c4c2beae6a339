"""The 14 Colosseum factors applied to a compiled MuJoCo model of the tabletop scene.

Each factor draws from its own RNG (seeded by the factor seed and the reset seed) and writes
model arrays: colours (``mat_rgba``/``geom_rgba``), textures (``tex_data`` + re-upload), sizes
(``geom_size``/``geom_pos``/``body_pos``), ``light_diffuse``, ``cam_pos``/``cam_quat``,
``geom_friction``, ``body_mass``/``body_inertia`` and the pre-allocated distractor bodies.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from envs.perturbations.config import FactorConfig, sample_colors, sample_values
from envs.perturbations.textures import POOL_SIZE, make_texture
from envs.tabletop.scene import CAMERAS, NUM_DISTRACTORS
from stemob.errors import StemobError

SNAPSHOT_FIELDS = (
    "geom_rgba", "mat_rgba", "geom_size", "geom_pos", "geom_quat", "geom_rbound", "geom_aabb",
    "geom_type", "geom_friction", "body_mass", "body_inertia", "body_pos", "body_quat",
    "light_diffuse", "cam_pos", "cam_quat", "tex_data",
)  # fmt: skip
_WALLS = ("wall_back", "wall_front", "wall_left", "wall_right", "floor")


class Resolver:
    """Maps factor targets (roles, camera names, body names) to model ids for one env."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.model: mujoco.MjModel = env.model

    def subtree(self, roots: list[int]) -> list[int]:
        """Bodies below (and including) ``roots``."""
        m = self.model
        out = []
        for b in range(m.nbody):
            a = b
            while a > 0 and a not in roots:
                a = m.body_parentid[a]
            if a in roots and a > 0:
                out.append(b)
        return out

    def role_roots(self, role: str, sizes: bool = False) -> list[int]:
        roles = self.env.task.size_roles if sizes and self.env.task.size_roles else {}
        names = roles.get(role, self.env.task.roles.get(role, ()))
        return [self.model.body(n).id for n in names]

    def bodies(self, target: str, where: str, sizes: bool = False) -> list[int]:
        """Root bodies named by a target (a role or a body name)."""
        if target in ("manipulated_object", "receiver_object"):
            return self.role_roots(target, sizes)
        try:
            return [self.model.body(target).id]
        except KeyError:
            raise StemobError(
                f"{where}: unknown target {target!r} (expected a role, a camera or a body name)"
            ) from None

    def geoms(self, target: str, where: str) -> list[int]:
        """Geoms that show a target."""
        m = self.model
        if target == "table":
            return [m.geom("table").id]
        if target == "background":
            return [m.geom(n).id for n in _WALLS]
        bodies = set(self.subtree(self.bodies(target, where)))
        return [g for g in range(m.ngeom) if m.geom_bodyid[g] in bodies]

    def cameras(self, target: str, where: str) -> int:
        if target not in CAMERAS:
            raise StemobError(f"{where}: unknown camera {target!r}; expected one of {CAMERAS}")
        return self.model.camera(target).id


def _materials(model: mujoco.MjModel, geoms: list[int]) -> list[int]:
    return sorted({int(model.geom_matid[g]) for g in geoms if model.geom_matid[g] >= 0})


def _set_color(env: Any, geoms: list[int], rgb: np.ndarray) -> None:
    m = env.model
    for g in geoms:
        m.geom_rgba[g, :3] = rgb
    for mat in _materials(m, geoms):
        m.mat_rgba[mat, :3] = rgb


def _set_texture(env: Any, geoms: list[int], image: np.ndarray, dirty: set[int]) -> None:
    m = env.model
    for mat in _materials(m, geoms):
        tex = int(m.mat_texid[mat, int(mujoco.mjtTextureRole.mjTEXROLE_RGB)])
        if tex < 0:
            continue
        w, h, c = int(m.tex_width[tex]), int(m.tex_height[tex]), int(m.tex_nchannel[tex])
        img = image
        if img.shape[0] != w:
            reps = int(np.ceil(w / img.shape[0]))
            img = np.tile(img, (reps, reps, 1))[:w, :w]
        faces = np.tile(img, (h // w, 1, 1))[..., :c]
        adr = int(m.tex_adr[tex])
        m.tex_data[adr : adr + w * h * c] = faces.reshape(-1)
        m.mat_rgba[mat, :3] = 1.0
        dirty.add(tex)


def _scale_tree(model: mujoco.MjModel, res: Resolver, roots: list[int], s: float) -> None:
    bodies = res.subtree(roots)
    for b in bodies:
        if b not in roots:
            model.body_pos[b] *= s
    for g in range(model.ngeom):
        if model.geom_bodyid[g] in bodies:
            model.geom_size[g] *= s
            model.geom_pos[g] *= s
            model.geom_rbound[g] *= s
            model.geom_aabb[g] *= s


def _euler_quat(euler: np.ndarray) -> np.ndarray:
    q = np.array([1.0, 0, 0, 0])
    for axis, ang in zip(np.eye(3), euler, strict=True):
        r = np.zeros(4)
        mujoco.mju_axisAngle2Quat(r, axis, float(ang))
        out = np.zeros(4)
        mujoco.mju_mulQuat(out, q, r)
        q = out
    return q


def _place_distractors(env: Any, f: FactorConfig, rng: np.random.Generator) -> None:
    m = env.model
    lo_n, hi_n = f.params["num_objects"]
    n = int(rng.integers(lo_n, hi_n + 1))
    (x0, y0), (x1, y1) = f.params["spawn_area"]
    s_lo, s_hi = f.params["size_range"]
    keep_out = list(env.task.occupied(env)) + [(np.zeros(2), 0.25)]
    kinds = [
        mujoco.mjtGeom.mjGEOM_BOX,
        mujoco.mjtGeom.mjGEOM_CYLINDER,
        mujoco.mjtGeom.mjGEOM_SPHERE,
        mujoco.mjtGeom.mjGEOM_CAPSULE,
    ]
    for i in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        r, h = rng.uniform(s_lo, s_hi), rng.uniform(s_lo, s_hi)
        rgb = rng.uniform(0.05, 1.0, 3)
        yaw = rng.uniform(-np.pi, np.pi)
        if kind == mujoco.mjtGeom.mjGEOM_BOX:
            size, half = np.array([r, rng.uniform(s_lo, s_hi), h]), h
        elif kind == mujoco.mjtGeom.mjGEOM_CYLINDER:
            size, half = np.array([r, h, 0.0]), h
        elif kind == mujoco.mjtGeom.mjGEOM_SPHERE:
            size, half = np.array([r, 0.0, 0.0]), r
        else:
            size, half = np.array([r, h, 0.0]), r + h
        radius = float(np.hypot(size[0], size[1])) if kind == mujoco.mjtGeom.mjGEOM_BOX else r
        for _ in range(50):
            xy = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
            if all(np.linalg.norm(xy - c) > rad + radius + 0.02 for c, rad in keep_out):
                break
        else:
            continue
        keep_out.append((xy, radius))
        body, geom = m.body(f"distractor{i}").id, m.geom(f"distractor{i}").id
        m.body_pos[body] = [xy[0], xy[1], half]
        m.body_quat[body] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        m.geom_type[geom] = kind
        m.geom_size[geom] = size
        ext = {
            mujoco.mjtGeom.mjGEOM_BOX: size,
            mujoco.mjtGeom.mjGEOM_CYLINDER: np.array([r, r, h]),
            mujoco.mjtGeom.mjGEOM_SPHERE: np.array([r, r, r]),
            mujoco.mjtGeom.mjGEOM_CAPSULE: np.array([r, r, r + h]),
        }[kind]
        m.geom_aabb[geom] = np.concatenate([np.zeros(3), ext])
        m.geom_rbound[geom] = float(np.linalg.norm(ext))
        m.geom_rgba[geom] = [*rgb, 1.0]


def move_camera(m: Any, cid: Any, rng: np.random.Generator, params: dict[str, Any]) -> None:
    """``camera_pose``: shift camera ``cid`` and turn it by random Euler angles."""
    if params.get("position_range") is not None:  # Colosseum applies a range only if given
        m.cam_pos[cid] += rng.uniform(*params["position_range"])
    if params.get("euler_range") is None:
        return
    q = np.zeros(4)
    mujoco.mju_mulQuat(q, m.cam_quat[cid].copy(), _euler_quat(rng.uniform(*params["euler_range"])))
    m.cam_quat[cid] = q


def set_mass(m: Any, bodies: Any, mass: float) -> None:
    """``object_mass``: scale the masses and inertias of ``bodies`` to a total of ``mass``."""
    total = float(m.body_mass[bodies].sum())
    if total > 0:
        m.body_mass[bodies] *= mass / total
        m.body_inertia[bodies] *= mass / total


def apply_factor(
    env: Any, f: FactorConfig, rng: np.random.Generator, where: str, dirty: set[int]
) -> None:
    """Apply one factor, drawing its random values from ``rng``."""
    m = env.model
    res = Resolver(env)
    var, p = f.variation, f.params
    if var in ("object_color", "table_color"):
        for t, rgb in zip(f.targets, sample_colors(f, rng, len(f.targets)), strict=True):
            _set_color(env, res.geoms(t, where), rgb)
    elif var in ("object_texture", "table_texture", "background_texture"):
        img = make_texture(p["texture_pool"], int(rng.integers(POOL_SIZE)))
        for t in f.targets:
            _set_texture(env, res.geoms(t, where), img, dirty)
    elif var == "object_size":
        for t, s in zip(f.targets, sample_values(f, rng, len(f.targets), "scale"), strict=True):
            _scale_tree(m, res, res.bodies(t, where, sizes=True), s)
            env.role_scale[t] = s
    elif var == "light_color":
        for t, rgb in zip(f.targets, sample_colors(f, rng, len(f.targets)), strict=True):
            if t == "lights":
                m.light_diffuse[:] = rgb
            else:
                try:
                    m.light_diffuse[m.light(t).id] = rgb
                except KeyError:
                    raise StemobError(f"{where}: unknown light {t!r}") from None
    elif var == "camera_pose":
        for t in f.targets:
            move_camera(m, res.cameras(t, where), rng, p)
    elif var == "object_friction":
        for t, mu in zip(f.targets, sample_values(f, rng, len(f.targets), "friction"), strict=True):
            m.geom_friction[res.geoms(t, where), 0] = mu
    elif var == "object_mass":
        for t, mass in zip(f.targets, sample_values(f, rng, len(f.targets), "mass"), strict=True):
            set_mass(m, res.subtree(res.bodies(t, where)), mass)
    elif var == "distractor_object":
        for t in f.targets:
            if t != "distractor_area":
                raise StemobError(
                    f"{where}: distractor_object targets must be ['distractor_area'], got {t!r}"
                )
        _place_distractors(env, f, rng)
    else:  # pragma: no cover - guarded by the schema
        raise StemobError(f"{where}: unsupported variation {var!r}")


__all__ = [
    "NUM_DISTRACTORS", "SNAPSHOT_FIELDS", "Resolver", "apply_factor", "move_camera", "set_mass",
]  # fmt: skip
