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
    names = {p.stem for p in CONFIGS.glob("*.yaml")} - {"robosuite_all"}  # the robosuite subset
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
        (_cfg(seed=-1), r"factors\[0\]\.seed: expected a non-negative integer"),
        (_cfg(color_names=["mauve"]), r"factors\[0\]\.color_names: unknown colour"),
        (_cfg(color_same="yes"), r"color_same: expected true or false"),
        (
            _cfg(variation="object_size", color_range=None),
            r"scale_range: missing key \(variation object_size needs scale_range or scale_list\)",
        ),
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


# ------------------------------------------------------------------ Colosseum's real schema

# Written here following colosseum/assets/configs/<task>.yaml at robot-colosseum 098a910 (the
# keys, their nesting and the interpolations of its files; the values are ours).
COLOSSEUM_TASK_YAML = """
data:
  save_path: /tmp/rlbench_data/
  image_size: [128, 128]
  renderer: opengl3
  episodes_per_task: 5
  images: {rgb: True, depth: True, mask: True, point_cloud: True}
  cameras: {left_shoulder: True, right_shoulder: True, overhead: True, wrist: True, front: True}
  depth_in_meters: False
  masks_as_one_channel: True
env:
  task_name: "basketball_in_hoop"
  seed: 42
  scene:
    factors:
      - variation: object_color
        name: manip_obj_color
        enabled: False
        targets: [ball]
        seed: ${env.seed}
      - variation: object_color
        name: recv_obj_color
        enabled: True
        targets: [basket_ball_hoop_visual]
        color_same: True
        seed: ${env.seed}
      - variation: object_texture
        name: manip_obj_tex
        enabled: False
        targets: [ball]
        mapping_mode: 2
        uv_scale: [0.25, 0.25]
        seed: ${env.seed}
      - variation: object_size
        name: recv_obj_size
        enabled: False
        targets: [basket_ball_hoop_respondable]
        scale_range: [0.75, 1.15]
        scale_same: True
        seed: ${env.seed}
      - variation: light_color
        enabled: False
        targets: [DefaultLightA, DefaultLightB, DefaultLightD]
        color_range: [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
        seed: ${env.seed}
      - variation: table_texture
        enabled: False
        seed: ${env.seed}
      - variation: table_color
        enabled: False
        color_range: [[0.25, 0.25, 0.25], [1.0, 1.0, 1.0]]
        seed: ${env.seed}
      - variation: background_texture
        enabled: False
        seed: ${env.seed}
      - variation: distractor_object
        enabled: False
        targets: [spawn_boundary0]
        num_objects: 2
        num_steps_wait: 3
        shapes_to_handle: [ball]
        seed: ${env.seed}
      - variation: distractor_object
        enabled: False
        targets: [spawn_boundary1]
        num_objects: 2
        seed: "${eval: '${env.seed} + 1'}"
      - variation: camera_pose
        enabled: False
        targets: [cam_front, cam_over_shoulder_left, cam_over_shoulder_right]
        euler_range: [[-0.05, -0.05, -0.05], [0.05, 0.05, 0.05]]
        position_range: [[-0.1, -0.1, -0.1], [0.1, 0.1, 0.1]]
        seed: ${env.seed}
      - variation: object_friction
        enabled: False
        targets: [ball]
        friction_range: [0.75, 1.0]
        friction_same: True
      - variation: object_mass
        enabled: False
        targets: [ball]
        mass_range: [0.1, 0.5]
        seed: ${env.seed}
"""


def test_colosseum_task_files_load_with_their_meaning(tmp_path):
    from envs.perturbations.config import COLOR_LIBRARY, load_config, sample_colors
    from envs.rlbench import resolve_colosseum_config

    path = tmp_path / "basketball_in_hoop.yaml"
    path.write_text(COLOSSEUM_TASK_YAML)
    cfg, factors = load_config(path)
    assert len(factors) == 13 and sum(f.enabled for f in factors) == 1
    seeds = [f.seed for f in factors]
    assert seeds[9] == 43 and seeds[11] == 42 and set(seeds) == {42, 43}  # eval + env.seed
    color = factors[1]
    assert color.params["color_range"] is None and color.params["color_same"] is True
    drawn = sample_colors(color, np.random.default_rng(0), 3)
    assert all(tuple(c) in COLOR_LIBRARY.values() for c in drawn)  # the colour library
    assert all(np.array_equal(c, drawn[0]) for c in drawn)  # color_same
    per_target = factors[0]  # object_color defaults to one colour per target (object_color.py)
    assert per_target.params["color_same"] is False and factors[4].params["color_same"] is True
    assert factors[8].params["num_objects"] == [2, 2]
    colosseum = resolve_colosseum_config(path, "basketball_in_hoop")
    entries = colosseum["scene"]["factors"]
    assert colosseum["seed"] == 42 and entries[9]["seed"] == 43 and entries[11]["seed"] == 42
    assert entries[2]["mapping_mode"] == 2 and entries[8]["shapes_to_handle"] == ["ball"]
    assert entries[1]["targets"] == ["basket_ball_hoop_visual"]  # Colosseum's own names pass


def test_colosseum_keys_apply_in_the_tabletop_suite(tmp_path):
    from envs.perturbations.config import COLOR_LIBRARY

    cfg = {"env": {"seed": 7, "scene": {"factors": [
        {"variation": "object_color", "targets": ["manipulated_object"],
         "color_names": ["red", "blue"]},
        {"variation": "table_color", "color_list": [[0.1, 0.2, 0.3]]},
        {"variation": "camera_pose", "targets": ["front"], "euler_range": [[-0.1] * 3, [0.1] * 3]},
    ]}}}  # fmt: skip
    env = TabletopEnv("lift_cube", image_size=16, cameras=("front",), perturbation=cfg)
    plain_pos = env.model.cam_pos[env.model.camera("front").id].copy()
    seen = set()
    for seed in range(6):
        env.reset(seed=seed)
        cube = tuple(np.round(env.model.geom_rgba[env.model.geom("cube").id, :3], 6))
        seen.add(cube)
        np.testing.assert_allclose(
            env.model.geom_rgba[env.model.geom("table").id, :3], [0.1, 0.2, 0.3], rtol=1e-6
        )
        np.testing.assert_array_equal(env.model.cam_pos[env.model.camera("front").id], plain_pos)
    assert seen == {COLOR_LIBRARY["red"], COLOR_LIBRARY["blue"]}
    env.close()


def test_only_arithmetic_is_evaluated(tmp_path):
    from envs.perturbations.config import load_config

    path = tmp_path / "evil.yaml"
    path.write_text(
        "env:\n  scene:\n    factors:\n      - variation: table_color\n"
        "        color_range: [[0, 0, 0], [1, 1, 1]]\n"
        '        seed: "${eval: \'__import__(\\"os\\").getpid()\'}"\n'
    )
    with pytest.raises(StemobError, match=r"evil.yaml: cannot resolve an interpolation"):
        load_config(path)
