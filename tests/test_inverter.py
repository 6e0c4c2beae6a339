"""Properties of the Inverter on tiny randomly initialised models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stemob.errors import StemobError
from stemob.inversion import InversionSettings, Inverter, timestep_for_step
from stemob.inversion.inverter import invert_grouped, to_model_pixels
from stemob.inversion.model_builder import SD_SCHEDULER


def frames(count: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def make(model, **kwargs) -> Inverter:
    return Inverter(InversionSettings(pretrained=str(model), **kwargs))


def test_sd21_timestep_of_step_15_is_281():
    assert timestep_for_step(SD_SCHEDULER, 50, 15) == 281
    assert [timestep_for_step(SD_SCHEDULER, 50, k) for k in (1, 2, 50)] == [1, 21, 981]


def test_timesteps_of_other_scheduler_configs():
    """sd-turbo's Euler config uses trailing spacing; SD 1.x's PNDM config leading with offset 1."""
    turbo = {
        "_class_name": "EulerDiscreteScheduler",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
        "timestep_spacing": "trailing",
        "steps_offset": 1,
    }
    assert timestep_for_step(turbo, 50, 15) == 299 and timestep_for_step(turbo, 50, 50) == 999
    pndm = {
        "_class_name": "PNDMScheduler",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
        "skip_prk_steps": True,
        "steps_offset": 1,
    }
    assert timestep_for_step(pndm, 50, 15) == 281
    with pytest.raises(StemobError, match="exceeds the model's 1000 training timesteps"):
        timestep_for_step(pndm, 1001, 1)


def test_timestep_equals_the_schedulers(tiny_uncond_model):
    from diffusers import DDPMScheduler

    inverter = make(tiny_uncond_model, num_steps=50, inversion_steps=15)
    scheduler = DDPMScheduler.from_config(SD_SCHEDULER)
    scheduler.set_timesteps(50)
    assert inverter.timestep == int(scheduler.timesteps[50 - 15]) == 281
    assert inverter.alpha_bar == pytest.approx(float(scheduler.alphas_cumprod[281]))
    assert inverter.alpha_bar**0.5 == pytest.approx(0.789, abs=1e-3)


def test_ddpm_noised_latent_statistics(tiny_uncond_model):
    """Over many seeds and frames, z has mean sqrt(abar) z0 and std sqrt(1 - abar)."""
    image = frames(1)
    copies = np.repeat(image, 64, axis=0)
    clean = make(tiny_uncond_model, inversion_steps=0).invert(image, output="latent")[0]
    samples = []
    for seed in range(8):
        inverter = make(tiny_uncond_model, inversion_steps=15, seed=seed)
        ids = [(seed, i, "front") for i in range(len(copies))]
        samples.append(inverter.invert(copies, ids, output="latent"))
    z = torch.cat(samples).double()
    a = inverter.alpha_bar
    sigma = (1 - a) ** 0.5
    n = z.shape[0]
    assert torch.allclose(z.mean(0), a**0.5 * clean.double(), atol=5 * sigma / n**0.5)
    assert z.std(0).mean().item() == pytest.approx(sigma, rel=0.03)
    assert (z.std(0) - sigma).abs().max().item() < 0.15 * sigma


def test_seeded_runs_are_bit_identical_and_unseeded_differ(tiny_uncond_model):
    x = frames(3)
    a = make(tiny_uncond_model, seed=7).invert(x)
    b = make(tiny_uncond_model, seed=7).invert(x)
    assert np.array_equal(a, b)
    c = make(tiny_uncond_model, seed=8).invert(x, output="latent")
    d = make(tiny_uncond_model, seed=7).invert(x, output="latent")
    assert not torch.equal(c, d)
    unseeded = make(tiny_uncond_model, seed=None)
    assert not torch.equal(unseeded.invert(x, output="latent"), unseeded.invert(x, output="latent"))


def test_k0_is_the_vae_round_trip(tiny_uncond_model):
    x = frames(2)
    inverter = make(tiny_uncond_model, inversion_steps=0)
    pixels, _ = to_model_pixels(x)
    with torch.inference_mode():
        latent = (
            inverter.model.vae.encode(pixels).latent_dist.mode() * inverter.model.scaling_factor
        )
        expected = inverter.model.vae.decode(latent / inverter.model.scaling_factor).sample.clamp(
            -1, 1
        )
    expected = (
        ((expected + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    )
    assert np.array_equal(inverter.invert(x), expected)


def test_noise_depends_on_frame_id_not_batch_position(tiny_uncond_model):
    x = frames(6)
    ids = [(3, i, "wrist") for i in range(6)]
    inverter = make(tiny_uncond_model, seed=1)
    whole = inverter.invert(x, ids, output="latent")
    one_by_one = inverter.invert(x, ids, output="latent", batch_size=1)
    reversed_order = inverter.invert(x[::-1].copy(), ids[::-1], output="latent").flip(0)
    assert torch.allclose(whole, one_by_one, atol=1e-4)
    assert torch.allclose(whole, reversed_order, atol=1e-4)
    other_camera = inverter.invert(x, [(3, i, "front") for i in range(6)], output="latent")
    assert not torch.allclose(whole, other_camera)


@pytest.mark.parametrize("shape", [(2, 30, 45, 3), (37, 23, 3)])
def test_any_size_comes_back_at_its_size(tiny_uncond_model, shape):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = make(tiny_uncond_model).invert(x)
    assert out.shape == x.shape and out.dtype == np.uint8


def test_resolution_and_float_tensors(tiny_uncond_model):
    inverter = make(tiny_uncond_model, resolution=64)
    x = torch.rand(2, 3, 40, 50)
    out = inverter.invert(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    latent = inverter.invert(x, output="latent")
    assert latent.shape == (2, 4, 16, 16)  # 64 px over the VAE's 4x downsampling
    rgb, z = inverter.invert(x, output="both")
    assert torch.equal(z, latent) and torch.allclose(rgb, out)


def test_bf16_runs(tiny_uncond_model):
    out = Inverter(InversionSettings(pretrained=str(tiny_uncond_model)), dtype="bf16").invert(
        frames(2)
    )
    assert out.shape == (2, 32, 32, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 32, 32), np.float32), "float frames must be"),
        (np.zeros((2, 32, 32, 4), np.uint8), "uint8 frames must be"),
        (np.zeros((32,), np.uint8), "rank 3 or 4"),
        (np.zeros((1, 32, 32, 3), np.int64), "frames must be uint8"),
        ([[1, 2, 3]], "numpy array or a torch tensor"),
    ],
)
def test_non_images_are_refused(tiny_uncond_model, bad, message):
    with pytest.raises(StemobError, match=message):
        make(tiny_uncond_model).invert(bad)


def test_frame_ids_must_match(tiny_uncond_model):
    with pytest.raises(StemobError, match="frame_ids"):
        make(tiny_uncond_model).invert(frames(2), [(0, 0, "")])


@pytest.mark.parametrize("model_name", ["tiny_uncond_model", "tiny_model"])
def test_ddim_inversion_is_reversed_by_the_ddim_sampler(request, model_name):
    from diffusers import DDIMScheduler

    model = request.getfixturevalue(model_name)
    k, n = 3, 50
    x = frames(2)
    clean = make(model, mode="ddim", inversion_steps=0).invert(x, output="latent")
    inverter = make(model, mode="ddim", inversion_steps=k, num_steps=n)
    noisy = inverter.invert(x, output="latent")
    assert not torch.allclose(noisy, clean, atol=1e-2)
    sampler = DDIMScheduler.from_config(inverter.model.scheduler_config)
    sampler.set_timesteps(n)
    z = noisy
    with torch.inference_mode():
        for t in sampler.timesteps[n - k :]:
            z = sampler.step(inverter.model.unet_forward(z, t), t, z).prev_sample
    error = (z - clean).norm() / clean.norm()
    drift = (noisy - clean).norm() / clean.norm()
    assert error < 0.05 and error < drift / 5


def test_ddim_is_deterministic_and_uses_the_seedless_path(tiny_model):
    x = frames(2)
    a = make(tiny_model, mode="ddim", inversion_steps=4, seed=None).invert(x)
    b = make(tiny_model, mode="ddim", inversion_steps=4, seed=None).invert(x)
    assert np.array_equal(a, b)


def test_invert_grouped_keeps_order_across_sizes_and_outputs(tiny_uncond_model):
    inv = make(tiny_uncond_model, seed=3)
    small, large = frames(2, 32, 32, seed=1), frames(1, 48, 48, seed=2)
    images = [small[0], large[0], small[1], small[0]]
    ids = [(0, 0, "a"), (0, 0, "b"), (0, 1, "a"), (1, 0, "a")]
    out = invert_grouped(inv, images, ids, ["rgb", "rgb", "rgb", "latent"])
    assert [o.shape for o in out[:3]] == [(32, 32, 3), (48, 48, 3), (32, 32, 3)]
    assert out[3].dtype == np.float32 and out[3].ndim == 3
    expected = inv.invert(large[0], [ids[1]])
    assert np.abs(out[1].astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(StemobError, match="2 frames, 1 frame ids and 2 outputs"):
        invert_grouped(inv, images[:2], ids[:1], ["rgb", "rgb"])
