"""Diffusion Policy: overfitting a tiny dataset, DDIM vs DDPM sampling, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from policies import load_policy, make_policy
from policies.diffusion import DiffusionPolicy, paper_config, small_config
from policies.optim import EMA, make_training
from policies.testing import batch_stats, synthetic_batch
from stemob.errors import StemobError
from stemob.inversion.settings import InversionSettings

torch.set_flush_denormal(True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SHAPES = {"cam": [3, 16, 16], "state": [4]}
STEPS, REPEAT = 500, 16
LOSS_DROP = 20.0  # the mean loss of the last 20 steps is at least 20x below that of the first 20


def tiny_config(**overrides):
    values = dict(
        horizon=8,
        n_action_steps=4,
        crop_shape=None,
        down_dims=[32, 64],
        cnn_width=8,
        num_keypoints=8,
        image_feature_dim=16,
        step_embed_dim=32,
        lr=3e-3,
        lr_warmup_steps=20,
    )
    values.update(overrides)
    return small_config(SHAPES, 3, **values)


@pytest.fixture(scope="module")
def trained():
    """A tiny policy trained on 4 samples (repeated 16x per batch to average over noise levels)."""
    batch = synthetic_batch(SHAPES, 3, batch=4, n_obs_steps=2, horizon=8)
    big = {
        "obs": {k: v.repeat(REPEAT, *[1] * (v.dim() - 1)) for k, v in batch["obs"].items()},
        "action": batch["action"].repeat(REPEAT, 1, 1),
        "action_is_pad": batch["action_is_pad"].repeat(REPEAT, 1),
    }
    torch.manual_seed(0)
    policy = DiffusionPolicy(
        tiny_config(), stats=batch_stats(batch), stemob=InversionSettings(inversion_steps=10)
    )
    optimizer, scheduler = make_training(policy, total_steps=STEPS)
    losses = []
    for _ in range(STEPS):
        loss, logs = policy.compute_loss(big)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(logs["loss"])
    return policy.eval(), batch, losses


def test_loss_falls(trained):
    _, _, losses = trained
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last * LOSS_DROP < first, (first, last)


def test_ddpm_reproduces_training_actions(trained):
    policy, batch, _ = trained
    g = torch.Generator().manual_seed(0)
    pred = policy.predict_chunk(
        batch["obs"], scheduler="ddpm", num_inference_steps=100, generator=g
    )
    assert pred.shape == batch["action"].shape
    # actions span about [-1, 1.2]; the mean absolute error is below 0.03
    assert (pred - batch["action"]).abs().mean() < 0.03


def test_ddim_10_close_to_ddpm_100(trained):
    policy, batch, _ = trained
    g = torch.Generator().manual_seed(1)
    ddim = policy.predict_chunk(batch["obs"], scheduler="ddim", num_inference_steps=10, generator=g)
    ddpm = policy.predict_chunk(
        batch["obs"], scheduler="ddpm", num_inference_steps=100, generator=g
    )
    # actions span about [-1, 1.2]; DDPM-100 lands within ~0.01 of the training actions
    assert (ddim - ddpm).abs().mean() < 0.12
    assert (ddim - batch["action"]).abs().mean() < 0.12


def test_predict_action_window(trained):
    policy, batch, _ = trained
    g = torch.Generator().manual_seed(0)
    chunk = policy.predict_chunk(batch["obs"], generator=g)
    g = torch.Generator().manual_seed(0)
    action = policy.predict_action(batch["obs"], generator=g)
    # the executed actions start at the last observation step (n_obs_steps - 1 = 1)
    assert action.shape == (4, 4, 3)
    torch.testing.assert_close(action, chunk[:, 1:5])


def test_save_load_identical(trained, tmp_path):
    policy, batch, _ = trained
    folder = policy.save(tmp_path / "ckpt")
    loaded = load_policy(folder)
    assert isinstance(loaded, DiffusionPolicy) and not loaded.training
    outs = []
    for p in (policy, loaded):
        g = torch.Generator().manual_seed(3)
        outs.append(p.predict_action(batch["obs"], generator=g))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    record = json.loads((folder / "config.json").read_text())
    assert record["policy"] == "diffusion"
    assert record["stemob"] == InversionSettings(inversion_steps=10).to_dict()
    assert loaded.stemob == policy.stemob and loaded.stats == policy.stats
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "normalization.json",
    ]


def test_ema_tracks_weights():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, power=0.75, max_decay=0.9999)
    assert ema.get_decay(1) == 0.0
    assert ema.get_decay(10) == pytest.approx(1 - (1 + 9) ** -0.75)
    assert ema.get_decay(10**9) == 0.9999
    ema.step(model)  # decay 0: copies the weights
    torch.testing.assert_close(ema.model.weight, model.weight)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.step(model)  # decay at step 2 = 1 - 2 ** -0.75
    d = 1 - 2**-0.75
    torch.testing.assert_close(ema.model.weight, d * before + (1 - d) * model.weight)


def test_lr_schedule_and_optimizer():
    policy = DiffusionPolicy(tiny_config(lr=1e-4, lr_warmup_steps=500))
    optimizer, scheduler = make_training(policy, total_steps=2000)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.95, 0.999) and group["weight_decay"] == 1e-6
    lrs = []
    for _ in range(2000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[250] == pytest.approx(0.5e-4) and lrs[500] == pytest.approx(1e-4)
    assert lrs[1250] == pytest.approx(0.5e-4, rel=1e-2) and lrs[-1] < 1e-8


def test_paper_config_defaults():
    cfg = paper_config({"agentview_image": [3, 84, 84], "robot0_eef_pos": [3]}, 7)
    assert (cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps) == (2, 16, 8)
    assert cfg.down_dims == [512, 1024, 2048] and cfg.kernel_size == 5 and cfg.n_groups == 8
    assert cfg.vision_backbone == "resnet18" and cfg.use_group_norm and cfg.num_keypoints == 32
    assert cfg.crop_shape == [76, 76] and cfg.step_embed_dim == 128
    assert (cfg.num_train_timesteps, cfg.beta_schedule) == (100, "squaredcos_cap_v2")
    assert cfg.prediction_type == "epsilon" and cfg.clip_sample
    assert (cfg.lr, cfg.betas, cfg.weight_decay, cfg.lr_warmup_steps) == (
        1e-4,
        [0.95, 0.999],
        1e-6,
        500,
    )
    assert (cfg.ema_power, cfg.ema_max_decay) == (0.75, 0.9999)
    policy = make_policy("diffusion", cfg)
    sched = policy.noise_scheduler.config
    assert sched.num_train_timesteps == 100 and sched.beta_schedule == "squaredcos_cap_v2"
    assert sched.prediction_type == "epsilon" and sched.clip_sample


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"horizon": 10, "down_dims": [32, 64, 128]}, "divisible"),
        ({"down_dims": [30, 64]}, "multiples"),
        ({"num_inference_steps": 200}, "exceeds"),
        ({"inference_scheduler": "euler"}, "inference_scheduler"),
        ({"n_action_steps": 8}, "must not exceed horizon"),
        ({"denoiser": "mlp"}, "denoiser"),
        ({"denoiser": "transformer", "transformer_dim": 30}, "divisible by transformer_heads"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(StemobError, match=match):
        tiny_config(**overrides)


def test_transformer_denoiser(tmp_path):
    """The transformer variant trains (the loss falls), samples and round-trips a checkpoint."""
    cfg = tiny_config(
        denoiser="transformer",
        transformer_layers=2,
        transformer_dim=32,
        transformer_dropout=0.0,
        horizon=6,  # no UNet divisibility constraint
        n_action_steps=4,
    )
    batch = synthetic_batch(SHAPES, 3, batch=4, n_obs_steps=2, horizon=6)
    torch.manual_seed(0)
    policy = DiffusionPolicy(cfg, stats=batch_stats(batch))
    optimizer, scheduler = make_training(policy, total_steps=60)
    losses = []
    for _ in range(60):
        loss, logs = policy.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(logs["loss"])
    assert sum(losses[-10:]) * 2 < sum(losses[:10])
    policy.eval()
    loaded = load_policy(policy.save(tmp_path / "tf"))
    outs = []
    for p in (policy, loaded):
        g = torch.Generator().manual_seed(0)
        outs.append(p.predict_action(batch["obs"], generator=g))
    assert outs[0].shape == (4, 4, 3)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "length", "bias"),
    [(64, 32, 5, 8, True), (128, 128, 5, 4, False), (256, 64, 1, 8, True), (8, 16, 5, 16, True)],
)
def test_fast_conv1d_matches_aten(cin, cout, kernel, length, bias):
    from policies.diffusion.unet import Conv1d

    torch.manual_seed(0)
    conv = Conv1d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    x = torch.randn(1, cin, length)
    expected = torch.nn.functional.conv1d(x, conv.weight, conv.bias, padding=kernel // 2)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(conv(x), expected)  # with autograd: ATen's own path
    torch.testing.assert_close(conv(x.repeat(3, 1, 1))[1:2], expected, rtol=1e-4, atol=1e-5)
