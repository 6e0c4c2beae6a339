"""The hydra policy group (configs/policy/*.yaml) builds the documented policy configs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from policies import act, diffusion
from policies.base import policy_class

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "policy"
# made-up observations: two 96 px cameras (the tabletop suite's size) and a low-dim state
SHAPES = {"front_image": [3, 96, 96], "wrist_image": [3, 96, 96], "eef_pos": [3]}
ACTION_DIM = 8  # 7 joints + gripper (GENIMA's controller's binary dim 7)
EXPECTED = {
    "diffusion": ("diffusion", diffusion.paper_config),
    "diffusion_small": ("diffusion", diffusion.small_config),
    "act": ("act", act.paper_config),
    "act_small": ("act", act.small_config),
    "genima_controller": (
        "act",
        lambda shapes, dim: act.small_config(
            shapes, dim, temporal_ensemble_coeff=None, binary_action_dims=[7]
        ),
    ),
    "genima": (  # the controller of policy=genima (its drawer section is checked by train.py)
        "act",
        lambda shapes, dim: act.small_config(
            shapes, dim, temporal_ensemble_coeff=None, binary_action_dims=[7]
        ),
    ),
    "genima_paper": (
        "act",
        lambda shapes, dim: act.paper_config(
            shapes,
            dim,
            horizon=20,
            n_action_steps=20,
            temporal_ensemble_coeff=None,
            binary_action_dims=[7],
        ),
    ),
}


def load(name: str) -> dict:
    """A group option with its ``defaults`` (another option of the group) merged under it."""
    section = yaml.safe_load((FOLDER / f"{name}.yaml").read_text())
    bases = [d for d in section.pop("defaults", []) if d != "_self_"]
    for base in bases:
        parent = load(base)
        section = {**parent, **section, "config": {**parent.get("config", {}),
                                                   **section.get("config", {})}}  # fmt: skip
    return section


def test_group_has_every_option():
    assert sorted(p.stem for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_yaml_builds_the_factory_config(option):
    section = load(option)
    name, factory = EXPECTED[option]
    assert section["name"] == name
    values = dict(section.get("config") or {})
    # train.py fills these from the dataset; the yaml must not pin them
    assert "obs_shapes" not in values and "action_dim" not in values
    cls = policy_class(name).config_class
    defaults = cls(obs_shapes=SHAPES, action_dim=ACTION_DIM)
    for key, value in values.items():
        assert getattr(defaults, key) != value, f"{option}.yaml repeats the default {key}"
    built = cls.from_dict({**values, "obs_shapes": SHAPES, "action_dim": ACTION_DIM})
    expected = factory(SHAPES, ACTION_DIM)
    assert dataclasses.asdict(built) == dataclasses.asdict(expected)


@pytest.mark.parametrize("side", [32, 84, 96])
def test_a_fractional_crop_becomes_pixels_for_any_image_size(side):
    shapes = {"front_image": [3, side, side], "eef_pos": [3]}
    values = {**load("diffusion_small")["config"], "crop_shape": [0.9, 0.9]}
    built = policy_class("diffusion").config_class.from_dict(
        {**values, "obs_shapes": shapes, "action_dim": ACTION_DIM}
    )
    assert built.crop_shape == [int(side * 0.9)] * 2
    assert diffusion.small_config(shapes, ACTION_DIM).crop_shape is None  # the CPU default
    policy = policy_class("diffusion")(built)
    assert policy.config.to_dict()["crop_shape"] == built.crop_shape  # pixels in checkpoints


@pytest.mark.parametrize("option, residual", [("genima", True), ("genima_paper", False)])
def test_genima_drawer_sections_are_the_clis_options(option, residual, tmp_path):
    """The embedded default draws residually (measured better, results/genima/drawer.md); the
    paper recipe draws the whole target, as GENIMA does."""
    from stemob.training.genima_drawer import drawer_args

    drawer = {**load(option)["drawer"], "pretrained": "embedded"}  # genima_paper's ??? filled
    args = drawer_args(drawer, tmp_path / "dataset.hdf5", tmp_path / "run")
    assert args.residual is residual and args.steps == drawer["steps"]
