"""Observation augmentation baselines (obs_aug): real changes, per-sample consistency, errors."""

from __future__ import annotations

import pytest
import torch

from stemob.errors import StemobError
from stemob.training.augment import METHODS, make_augment


def _batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (4, 1, 3, 24, 24), generator=gen, dtype=torch.uint8)
    return {
        "obs": {"front_image": frames.repeat(1, 2, 1, 1, 1), "eef_pos": torch.zeros(4, 2, 3)},
        "action": torch.zeros(4, 16, 7),
    }


@pytest.mark.parametrize("name", [m for m in METHODS if m != "none"])
def test_each_method_changes_images_consistently_over_the_observation_window(name):
    batch = _batch()
    out = make_augment({"obs_aug": {"name": name}})(batch)
    images = out["obs"]["front_image"]
    assert images.dtype == torch.uint8 and images.shape == batch["obs"]["front_image"].shape
    diff = (images.float() - batch["obs"]["front_image"].float()).abs().mean()
    assert diff > 2.0, f"{name} barely changed the images ({diff:.2f} grey levels)"
    torch.testing.assert_close(images[:, 0], images[:, 1])  # same parameters for both frames
    assert out["obs"]["eef_pos"] is batch["obs"]["eef_pos"]  # low-dim keys untouched
    assert torch.equal(batch["obs"]["front_image"][:, 0], _batch()["obs"]["front_image"][:, 0])


def test_augmentation_is_seeded_and_its_state_resumes_exactly():
    a = make_augment({"obs_aug": {"name": "aug", "seed": 3}})
    b = make_augment({"obs_aug": {"name": "aug", "seed": 3}})
    first = a(_batch())["obs"]["front_image"]
    assert torch.equal(first, b(_batch())["obs"]["front_image"])
    state = a.state_dict()
    expected = a(_batch(1))["obs"]["front_image"]
    b.load_state_dict(state)
    assert torch.equal(b(_batch(1))["obs"]["front_image"], expected)


def test_probability_zero_leaves_images_and_none_means_no_augmentation():
    batch = _batch()
    out = make_augment({"obs_aug": {"name": "ro", "probability": 0.0}})(batch)
    assert torch.equal(out["obs"]["front_image"], batch["obs"]["front_image"])
    assert make_augment({"obs_aug": {"name": "none"}}) is None
    assert make_augment({}) is None


def test_bad_options_name_the_option():
    with pytest.raises(StemobError, match="obs_aug.name"):
        make_augment({"obs_aug": {"name": "cutout"}})
    with pytest.raises(StemobError, match="obs_aug.brightness"):
        make_augment({"obs_aug": {"name": "aug", "brightness": 2}})
    with pytest.raises(StemobError, match="unknown obs_aug option"):
        make_augment({"obs_aug": {"name": "aug", "brightnes": 0.2}})
    with pytest.raises(StemobError, match="wrist_image"):
        make_augment({"obs_aug": {"name": "aug", "keys": ["wrist_image"]}})(_batch())


def test_aug_random_crop_translates_each_sample_by_at_most_shift_pixels():
    frames = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 1, 32, 32) % 251
    batch = {"obs": {"img": frames.expand(8, 2, 3, 32, 32).to(torch.uint8).contiguous()}}
    aug = {"name": "aug", "shift": 3, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}
    out = make_augment({"obs_aug": aug})(batch)["obs"]["img"].float()
    src = batch["obs"]["img"].float()
    moved = 0
    for i in range(8):
        # the centre of the output is the source translated by one (dy, dx) in [-3, 3]^2
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                 if torch.allclose(out[i, :, :, 4:-4, 4:-4], src[i, :, :, 4 + dy : 28 + dy, 4 + dx : 28 + dx], atol=1.0)]  # fmt: skip
        assert found, f"sample {i} is not a translation of its source"
        moved += found[0] != (0, 0)
    assert moved >= 4  # most of the 8 samples moved (49 offsets, one of them (0, 0))
    no_shift = make_augment({"obs_aug": {**aug, "shift": 0}})(batch)["obs"]["img"]
    assert torch.equal(no_shift, batch["obs"]["img"])
    with pytest.raises(StemobError, match="obs_aug.shift"):
        make_augment({"obs_aug": {"name": "aug", "shift": -1}})
