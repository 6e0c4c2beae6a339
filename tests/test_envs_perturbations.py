"""Colosseum factors: every factor changes what is rendered or simulated; configs are validated."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import hashlib
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from envs.perturbations import parse_config, strip_stemob_keys
from envs.perturbations.textures import POOL_SIZE, make_texture, texture_seed
from envs.tabletop.env import TabletopEnv
from stemob.errors import StemobError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "perturbation"
CAMS = ("front", "overhead", "wrist")
VISUAL = [
    "mo_color",
    "mo_texture",
    "mo_size",
    "ro_color",
    "ro_texture",
    "ro_size",
    "light_color",
    "table_color",
    "table_texture",
    "distractor_object",
    "background_texture",
    "camera_pose",
    "all",
]


def images(env: TabletopEnv, seed: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    return np.stack([obs[f"{c}_image"] for c in CAMS]).astype(np.int16)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    env = TabletopEnv("put_in_bowl", image_size=64, cameras=CAMS)
    out = images(env, 4)
    env.close()
    return out


def test_configs_shipped_and_valid():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert len(names - {"none", "all"}) == 14
    bench = yaml.safe_load((ROOT / "configs/benchmark/colosseum.yaml").read_text())
    assert set(bench["perturbations"]) == names
    variations = set()
    for p in CONFIGS.glob("*.yaml"):
        factors = parse_config(yaml.safe_load(p.read_text()), str(p))
        variations |= {f.variation for f in factors}
    assert len(variations) == 11
    all_cfg = yaml.safe_load((CONFIGS / "all.yaml").read_text())
    assert len(all_cfg["env"]["scene"]["factors"]) == 14
    stripped = strip_stemob_keys(all_cfg)
    assert all("texture_pool" not in f for f in stripped["env"]["scene"]["factors"])


def test_none_is_identical(reference):
    env = TabletopEnv(
        "put_in_bowl", image_size=64, cameras=CAMS, perturbation=CONFIGS / "none.yaml"
    )
    np.testing.assert_array_equal(images(env, 4), reference)
    env.close()


@pytest.mark.parametrize("name", VISUAL)
def test_factor_changes_images_reproducibly(name, reference):
    env = TabletopEnv(
        "put_in_bowl", image_size=64, cameras=CAMS, perturbation=CONFIGS / f"{name}.yaml"
    )
    first = images(env, 4)
    assert np.abs(first - reference).mean() > 0.02, name
    other = images(env, 5)
    again = images(env, 4)
    np.testing.assert_array_equal(first, again)  # same (factor seed, reset seed): same look
    assert not np.array_equal(other, first)
    env.close()


def test_restore_brings_back_the_defaults(reference):
    env = TabletopEnv("put_in_bowl", image_size=64, cameras=CAMS, perturbation=CONFIGS / "all.yaml")
    env.reset(seed=4)
    env.perturbations.restore(env)
    mujoco.mj_forward(env.model, env.data)
    plain = TabletopEnv("put_in_bowl", image_size=64, cameras=CAMS)
    plain.reset(seed=4)
    env.data.qpos[:] = plain.data.qpos  # same state, to compare appearance only
    mujoco.mj_forward(env.model, env.data)
    got = np.stack([env.render_camera(c) for c in CAMS]).astype(np.int16)
    np.testing.assert_array_equal(got, reference)
    env.close()
    plain.close()


@pytest.mark.parametrize(
    "name, check",
    [("object_mass", "body_mass"), ("object_friction", "geom_friction")],
)
def test_physical_factors_change_model(name, check):
    env = TabletopEnv(
        "lift_cube", image_size=16, cameras=("front",), perturbation=CONFIGS / f"{name}.yaml"
    )
    cube_body, cube_geom = env.model.body("cube").id, env.model.geom("cube").id
    default = 0.05 if check == "body_mass" else 1.2

    def value() -> float:
        if check == "body_mass":
            return float(env.model.body_mass[cube_body])
        return float(env.model.geom_friction[cube_geom, 0])

    values = set()
    for seed in range(3):
        env.reset(seed=seed)
        values.add(round(value(), 6))
    assert len(values) == 3 and default not in values
    env.close()


def test_size_factor_scales_and_places_on_table():
    env = TabletopEnv(
        "lift_cube", image_size=16, cameras=("front",), perturbation=CONFIGS / "mo_size.yaml"
    )
    env.reset(seed=0)
    s = env.role_scale["manipulated_object"]
    assert 0.75 <= s <= 1.15 and s != 1.0
    half = env.model.geom_size[env.model.geom("cube").id, 0]
    assert half == pytest.approx(0.02 * s)
    for _ in range(5):
        env.step(np.zeros(7, np.float32))
    assert env.task.cube_pose(env)[0][2] == pytest.approx(half, abs=0.003)
    env.close()


def test_texture_pools_disjoint():
    train = {texture_seed("train", i) for i in range(POOL_SIZE)}
    evals = {texture_seed("eval", i) for i in range(POOL_SIZE)}
    assert not train & evals

    def digest(pool: str, i: int) -> str:
        return hashlib.sha1(make_texture(pool, i, 32).tobytes()).hexdigest()

    a = {digest("train", i) for i in range(150)}
    b = {digest("eval", i) for i in range(150)}
    assert len(a) == 150 and len(b) == 150 and not a & b


def _cfg(**entry) -> dict:
    base = {
        "variation": "object_color",
        "enabled": True,
        "targets": ["manipulated_object"],
        "color_range": [[0, 0, 0], [1, 1, 1]],
        "seed": 0,
    }
    base.update(entry)
    return {"env": {"scene": {"factors": [{k: v for k, v in base.items() if v is not None}]}}}


@pytest.mark.parametrize(
    "cfg, message",
    [
        (_cfg(variation="object_colour"), r"factors\[0\]\.variation.*unknown variation"),
        (_cfg(seed=None), r"factors\[0\]\.seed: missing key"),
        (_cfg(color_range=None), r"factors\[0\]\.color_range: missing key"),
        (_cfg(color_range=[[0.5, 0, 0], [0.4, 1, 1]]), r"color_range: low > high"),
        (
            _cfg(variation="object_size", color_range=None, scale_range=[1.2, 0.8]),
            r"scale_range: low > high",
        ),
        (_cfg(typo_key=1), r"factors\[0\]\.typo_key: unknown key"),
        ({"env": {"scene": {}}}, r"env\.scene\.factors: missing key"),
    ],
)
def test_bad_configs(cfg, message):
    with pytest.raises(StemobError, match=message):
        parse_config(cfg)


def test_bad_targets_and_files(tmp_path):
    cam = {
        "env": {
            "scene": {
                "factors": [
                    {
                        "variation": "camera_pose",
                        "enabled": True,
                        "targets": ["side"],
                        "seed": 0,
                        "euler_range": [[0, 0, 0], [0, 0, 0]],
                        "position_range": [[0, 0, 0], [0, 0, 0]],
                    }
                ]
            }
        }
    }
    with pytest.raises(StemobError, match=r"targets.*unknown camera 'side'"):
        TabletopEnv("lift_cube", image_size=16, cameras=("front",), perturbation=cam)
    with pytest.raises(StemobError, match=r"unknown target 'spoon'"):
        TabletopEnv(
            "lift_cube", image_size=16, cameras=("front",), perturbation=_cfg(targets=["spoon"])
        )
    with pytest.raises(StemobError, match="not found"):
        TabletopEnv("lift_cube", perturbation=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_cfg(variation="wind")))
    with pytest.raises(StemobError, match=f"{bad}.*variation"):
        TabletopEnv("lift_cube", perturbation=bad)
