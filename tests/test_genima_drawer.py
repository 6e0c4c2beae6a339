"""GENIMA's diffusion agent (stemob/genima/drawer.py): both recipes build, train and draw on tiny
models; the trainer resumes and refuses other settings; sphere scoring finds spheres by colour."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from stemob.errors import StemobError
from stemob.genima.drawer import DrawerConfig, TargetDrawer
from stemob.genima.spheres import centroids, score_frames, sphere_mask
from stemob.genima.targets import JOINT_COLORS, OPEN_COLOR


def _frames(n: int, h: int = 16, w: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.integers(60, 120, (n, h, w, 3), dtype=np.uint8)
    target = obs.copy()
    target[:, 4:8, 4:8] = OPEN_COLOR
    target[:, 8:12, 20:24] = JOINT_COLORS[1]
    return obs, target


def _genima_file(path):
    """A 3-demo GENIMA dataset of :func:`_frames` (tiled views and the controller's two views)."""
    with h5py.File(path, "w") as h5:
        group = h5.create_group("data")
        group.attrs["genima"] = json.dumps({"config": {"grid": None}})
        for d in range(3):
            obs, target = _frames(6, seed=d)
            group.create_dataset(f"demo_{d}/obs/tiled_rgb", data=obs)
            group.create_dataset(f"demo_{d}/obs/tiled_target", data=target)
            for cam in ("front_target", "wrist_target"):
                group.create_dataset(f"demo_{d}/obs/{cam}", data=obs[:, :, :16])
    return path


@pytest.mark.parametrize("model", ["tiny_uncond_model", "tiny_model"])
def test_both_recipes_train_draw_save_and_load(model, request, tmp_path, one_torch_thread):
    folder = request.getfixturevalue(model)
    drawer = TargetDrawer(DrawerConfig(pretrained=str(folder), num_inference_steps=2))
    assert drawer.recipe == ("concat" if model == "tiny_uncond_model" else "controlnet")
    obs, target = _frames(4)
    optimizer = torch.optim.AdamW(drawer.trainable(), lr=1e-3)
    before = [p.detach().clone() for p in drawer.trainable()]
    frozen = [p.detach().clone() for p in drawer.vae.parameters()]
    for _ in range(2):
        loss = drawer.loss(obs, target, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert any((a != b).any() for a, b in zip(before, drawer.trainable(), strict=True))
    assert all((a == b).all() for a, b in zip(frozen, drawer.vae.parameters(), strict=True))
    drawn = drawer.draw(obs[:2], seed=3)
    assert drawn.shape == obs[:2].shape and drawn.dtype == np.uint8
    np.testing.assert_array_equal(drawn, drawer.draw(obs[:2], seed=3))  # seeded
    drawer.save(tmp_path / "d")
    again = TargetDrawer.load(tmp_path / "d")
    np.testing.assert_array_equal(again.draw(obs[:2], seed=3), drawn)


def test_concat_recipe_starts_as_the_prior(tiny_uncond_model):
    """The widened first convolution has zero weights for the condition: before training the
    drawer's noise prediction ignores the observation, as the prior's does."""
    from stemob.inversion.models import load_model

    drawer = TargetDrawer(DrawerConfig(pretrained=str(tiny_uncond_model)))
    prior = load_model(str(tiny_uncond_model), with_unet=True).unet
    noisy, t = torch.randn(1, 4, 4, 8), torch.tensor([10])
    with torch.no_grad():
        ours = drawer.predict(noisy, t, torch.randn(1, 4, 4, 8))
        theirs = prior(noisy, t).sample
    torch.testing.assert_close(ours, theirs)


def test_residual_drawer_denoises_the_difference_and_adds_the_observation(tiny_uncond_model):
    """residual=True: the loss is the plain loss on target - observation latents, and a drawing
    is the plain drawer's latents (same weights, same seed) plus the observation's latents."""
    obs, target = _frames(2)
    plain = TargetDrawer(DrawerConfig(pretrained=str(tiny_uncond_model), num_inference_steps=2))
    residual = TargetDrawer(DrawerConfig(pretrained=str(tiny_uncond_model), num_inference_steps=2,
                                         residual=True))  # fmt: skip
    residual.denoiser.load_state_dict(plain.denoiser.state_dict())
    with torch.no_grad():
        base, clean = plain.encode(obs), plain.encode(target)
        ours = residual.loss(obs, target, torch.Generator().manual_seed(1))
        theirs = plain.loss_from_latents(clean - base, base, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs)
    for drawer in (plain, residual):
        drawer.decode = lambda latents: latents  # the latents themselves
    torch.testing.assert_close(residual.draw(obs, seed=4), plain.draw(obs, seed=4) + base)


def test_bad_recipes_and_sizes_are_named(tiny_model, tiny_uncond_model):
    with pytest.raises(StemobError, match="recipe concat needs an unconditional UNet2DModel"):
        TargetDrawer(DrawerConfig(pretrained=str(tiny_model), recipe="concat"))
    with pytest.raises(StemobError, match="recipe controlnet needs a text-conditioned"):
        TargetDrawer(DrawerConfig(pretrained=str(tiny_uncond_model), recipe="controlnet"))
    with pytest.raises(StemobError, match="recipe 'x'"):
        DrawerConfig(recipe="x")
    drawer = TargetDrawer(DrawerConfig(pretrained=str(tiny_uncond_model)))
    with pytest.raises(StemobError, match="multiples of the VAE's downsampling 4"):
        drawer.draw(np.zeros((1, 10, 16, 3), np.uint8))


def test_sphere_scoring_matches_moves_and_misses():
    obs, target = _frames(1)
    view = centroids(target[0], obs[0], tolerance=0)
    assert view["gripper_open"] == pytest.approx((6.0, 6.0)) and view["joint1"] == (22.0, 10.0)
    moved = obs.copy()
    moved[:, 4:8, 6:10] = OPEN_COLOR  # the gripper sphere 2 px to the right, joint 1 missing
    score = score_frames(moved, target, obs, views=2, grid=(1, 2)).summary()
    assert score["spheres"] == 2 and score["median_px"] == pytest.approx(2.0)
    assert score["missed"] == 1 and score["false_spheres"] == 0


class _ExactDrawer:
    """A drawer that draws the ground truth (a test double for a trained TargetDrawer)."""

    def __init__(self, target: np.ndarray) -> None:
        self.target = target

    def draw(self, tiled: np.ndarray, seed: int = 0) -> np.ndarray:
        return self.target[None]


def test_texture_background_keeps_the_found_spheres_on_a_random_texture():
    """``background="texture"``: the painter finds the drawn spheres by colour and shows them on
    a procedural texture (the controller's training inputs); the same seed, the same texture."""
    from stemob.genima.agent import TargetPainter

    obs, target = _frames(1)
    mask = sphere_mask(target[0], obs[0])
    np.testing.assert_array_equal(mask, np.any(target[0] != obs[0], axis=-1))
    images = {"front_image": obs[0][:, :16], "wrist_image": obs[0][:, 16:]}
    drawer = _ExactDrawer(target[0])
    scene = TargetPainter(drawer, ["front", "wrist"], (1, 2)).paint(images)
    np.testing.assert_array_equal(scene["front_target"], target[0][:, :16])  # GENIMA: as drawn
    painter = TargetPainter(drawer, ["front", "wrist"], (1, 2), background="texture")
    textured = painter.paint(images, seed=3)
    for cam, view in textured.items():
        drawn = scene[cam]
        spheres = sphere_mask(drawn, images[cam.replace("_target", "_image")])
        assert np.mean(view[~spheres] != drawn[~spheres]) > 0.5  # the scene is gone
        moved = np.linalg.norm(view[spheres].astype(float) - drawn[spheres], axis=-1)
        assert moved.max() <= 0.3 * np.sqrt(3) * 255 + 1  # spheres blended by alpha >= 0.7
    again = painter.paint(images, seed=3)
    np.testing.assert_array_equal(again["front_target"], textured["front_target"])
    assert not np.array_equal(
        painter.paint(images, seed=4)["front_target"], textured["front_target"]
    )
    with pytest.raises(StemobError, match="genima_agent.background: expected one of"):
        TargetPainter(drawer, ["front"], (1, 1), background="black")


def test_trainer_resumes_and_scores(tiny_uncond_model, tmp_path, one_torch_thread):
    from stemob.training.genima_drawer import main, run

    data = _genima_file(tmp_path / "g.hdf5")
    out = tmp_path / "run"
    common = ["--dataset", str(data), "--out", str(out), "--pretrained", str(tiny_uncond_model),
              "--batch", "2", "--held-out", "1", "--save-every", "2"]  # fmt: skip
    run(["train", *common, "--steps", "2"])
    state = torch.load(out / "latest" / "train_state.pt", weights_only=True)
    assert state["step"] == 2
    with pytest.raises(StemobError, match="other settings"):
        run(["train", *common, "--steps", "4", "--seed", "1"])
    run(["train", *common[:-2], "--save-every", "2", "--steps", "2"])  # finished: nothing to do
    with pytest.raises(StemobError, match="other settings"):  # a residual drawer is another run
        run(["train", *common, "--steps", "4", "--residual"])
    from stemob.training.genima_drawer import drawer_args

    assert drawer_args({"residual": True}, data, tmp_path / "r").residual is True
    with pytest.raises(StemobError, match="policy.drawer.residual must be a bool"):
        drawer_args({"residual": "yes"}, data, tmp_path / "r")
    result = run(["score", "--checkpoint", str(out), "--dataset", str(data), "--held-out", "1",
                  "--frames", "3", "--out", str(tmp_path / "s.json")])  # fmt: skip
    assert result["frames"] == 3 and result["observation_as_drawing"]["missed"] == 6
    with pytest.raises(SystemExit) as stopped:
        main(["train", "--dataset", str(tmp_path / "none.hdf5"), "--out", str(out)])
    assert stopped.value.code == 2


def test_augmentation_shifts_the_pair_together_jitters_the_observation_and_resumes_exactly(
    tiny_uncond_model, tmp_path, one_torch_thread
):
    """--shift crops observation and target at one offset, --color-jitter changes the observation
    only; an augmented run stopped and continued ends with the uninterrupted run's weights."""
    import argparse

    from stemob.training.genima_drawer import _augment, _augmenters, run

    obs, target = _frames(4, seed=0)
    shift = _augmenters(argparse.Namespace(shift=3, color_jitter=0.0, seed=0))
    moved_obs, moved_target = _augment(shift, obs, target)
    changed = (moved_obs != obs).any(axis=(1, 2, 3))
    assert changed.any()
    # one offset for both: the target still differs from its observation exactly at the spheres
    spheres = (target != obs).any(-1).sum(axis=(1, 2))
    np.testing.assert_array_equal((moved_target != moved_obs).any(-1).sum(axis=(1, 2)), spheres)
    color = _augmenters(argparse.Namespace(shift=0, color_jitter=0.3, seed=0))
    seen, kept = _augment(color, obs, target)
    assert (seen != obs).any() and np.array_equal(kept, target)
    with pytest.raises(StemobError, match="--shift"):
        _augmenters(argparse.Namespace(shift=-1, color_jitter=0.0, seed=0))
    data = _genima_file(tmp_path / "g.hdf5")
    common = ["--dataset", str(data), "--pretrained", str(tiny_uncond_model), "--batch", "2",
              "--held-out", "1", "--save-every", "2", "--shift", "2", "--color-jitter", "0.2"]  # fmt: skip
    run(["train", *common, "--out", str(tmp_path / "a"), "--steps", "4"])
    run(["train", *common, "--out", str(tmp_path / "b"), "--steps", "2"])
    run(["train", *common, "--out", str(tmp_path / "b"), "--steps", "4"])  # continued
    state = torch.load(tmp_path / "b" / "latest" / "train_state.pt", weights_only=True)
    assert state["settings"]["shift"] == 2 and set(state["augment"]) == {"shift", "color"}
    weights = sorted(p.name for p in (tmp_path / "a" / "latest" / "denoiser").glob("*.safetensors"))
    assert weights
    for name in weights:
        assert (tmp_path / "a" / "latest" / "denoiser" / name).read_bytes() == (
            tmp_path / "b" / "latest" / "denoiser" / name
        ).read_bytes(), name
