"""The embedded prior's procedural images and training recipe (tiny configs, a few steps)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from stemob.priors.procedural import procedural_batch
from stemob.priors.train import PhaseConfig, PriorConfig, train


def test_procedural_images_are_deterministic_in_range_and_varied():
    a = procedural_batch(3, 12, 32)
    assert a.dtype == np.uint8 and a.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(a, procedural_batch(3, 12, 32))
    assert not np.array_equal(a, procedural_batch(4, 12, 32))
    floats = procedural_batch(3, 12, 32, as_float=True)
    assert floats.dtype == np.float32 and floats.min() >= -1.0 and floats.max() <= 1.0
    np.testing.assert_allclose((floats + 1) * 127.5, a, atol=0.51)
    means = a.reshape(12, -1, 3).mean(axis=1)
    assert np.ptp(means, axis=0).min() > 20  # images differ in colour
    assert all(np.unique(im.reshape(-1, 3), axis=0).shape[0] > 10 for im in a)  # not flat


def _tiny_config(unet_steps: int = 3) -> PriorConfig:
    phase = {"minutes": 5.0, "batch_size": 2, "image_size": 32, "warmup_steps": 1, "bf16": False}
    return PriorConfig(
        vae={
            "block_out_channels": [8, 16, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3,
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "sample_size": 32,
        },
        unet={
            "block_out_channels": [16, 16],
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "in_channels": 4,
            "out_channels": 4,
            "sample_size": 8,
        },
        vae_phase=PhaseConfig(**phase, max_steps=3, crop_size=24),
        unet_phase=PhaseConfig(**phase, max_steps=unet_steps),
        scale_images=4,
        scale_image_size=32,
        eval_images=2,
        eval_size=32,
        checkpoint_minutes=0.0,
        log_every=1,
    )


def test_training_writes_a_loadable_folder_and_resumes(tmp_path):
    from stemob.inversion import load_model

    torch.set_num_threads(1)
    out, work = tmp_path / "prior", tmp_path / "work"
    summary = train(_tiny_config(), out, work)
    assert summary["vae_steps"] == 3 and summary["unet_steps"] == 3
    model = load_model(str(out), with_unet=True)
    assert model.unet is not None and next(model.vae.parameters()).dtype == torch.float32
    assert (
        model.scaling_factor == pytest.approx(summary["scaling_factor"])
        and model.scaling_factor > 0
    )
    assert model.scheduler_config["prediction_type"] == "epsilon"
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert np.isfinite(json.loads((out / "training_summary.json").read_text())["eval_psnr_db"])

    with pytest.raises(ValueError, match="--resume"):
        train(_tiny_config(), out, work)
    resumed = train(_tiny_config(unet_steps=5), out, work, resume=True)
    assert resumed["vae_steps"] == 3 and resumed["unet_steps"] == 5
    assert resumed["scaling_factor"] == summary["scaling_factor"]
    with (work / "loss_log.csv").open() as handle:
        rows = [(r["phase"], int(r["step"])) for r in csv.DictReader(handle)]
    assert rows == [("vae", 1), ("vae", 2), ("vae", 3)] + [("unet", s) for s in range(1, 6)]


def test_fine_tuning_starts_from_a_folder_and_mixes_user_images(tmp_path):
    from PIL import Image

    torch.set_num_threads(1)
    base = tmp_path / "base"
    first = train(_tiny_config(), base, tmp_path / "work0")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.fromarray(procedural_batch(i, 1, 48)[0]).save(frames / f"{i}.png")
    config = _tiny_config(unet_steps=1)
    config.vae_phase.max_steps = 1
    config.user_image_fraction = 1.0
    tuned = train(config, tmp_path / "tuned", tmp_path / "work1", init_from=base, images=frames)
    assert tuned["vae_steps"] == 1 and tuned["unet_steps"] == 1
    assert tuned["scaling_factor"] == pytest.approx(
        first["scaling_factor"]
    )  # kept from the base model
