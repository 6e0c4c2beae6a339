"""The common policy interface: configs, registry, observation handling, encoders, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import load_policy, make_policy
from policies.base import policy_class
from policies.encoders import ResNet18, SmallCNN, SpatialSoftmax, crop_images, make_backbone
from policies.testing import batch_stats, synthetic_batch
from stemob.errors import StemobError

torch.set_flush_denormal(True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {
    "diffusion": dict(
        down_dims=[16, 32], cnn_width=8, num_keypoints=4, image_feature_dim=8, step_embed_dim=16
    ),
    "act": dict(
        horizon=8,
        n_action_steps=8,
        hidden_dim=16,
        dim_feedforward=32,
        n_heads=2,
        n_encoder_layers=1,
        n_decoder_layers=2,
        n_vae_encoder_layers=1,
        latent_dim=4,
        cnn_width=8,
    ),
}


def tiny(name: str, obs_shapes, action_dim: int = 3, **overrides):
    from policies.act import small_config as act_small
    from policies.diffusion import small_config as dp_small

    small = dp_small if name == "diffusion" else act_small
    return small(obs_shapes, action_dim, **(TINY[name] | overrides))


CASES = [
    (name, cams, state, shared)
    for name in ("diffusion", "act")
    for cams in (1, 2, 3)
    for state in (False, True)
    for shared in (False, True)
    if not (shared and cams == 1)
]


@pytest.mark.parametrize("name, cams, state, shared", CASES)
def test_shapes_cameras_and_state(name, cams, state, shared):
    shapes = {f"cam{i}": [3, 24, 24] for i in range(cams)}
    if state:
        shapes["state"] = [5]
    cfg = tiny(name, shapes, share_encoder=shared)
    policy = make_policy(name, cfg)
    batch = synthetic_batch(shapes, 3, 2, cfg.n_obs_steps, cfg.horizon)
    policy.load_state_dict(policy.state_dict())
    loss, logs = policy.compute_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and logs["loss"] == pytest.approx(loss.item())
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    # every parameter that takes part gets a gradient (ACT's CVAE parts included)
    assert sum(g is not None for g in grads) == len(grads)
    policy.eval()
    action = policy.predict_action(batch["obs"])
    assert action.shape == (2, cfg.n_action_steps, 3)
    assert policy.select_action(batch["obs"]).shape == (2, 3)


@pytest.mark.parametrize("name", ["diffusion", "act"])
def test_latent_inputs(name):
    """Policies can consume Stem-OB latents (float maps) instead of, or beside, camera images."""
    shapes = {"latent": [4, 8, 8], "cam": [3, 24, 24], "state": [2]}
    cfg = tiny(name, shapes, latent_keys=["latent"])
    policy = make_policy(name, cfg)
    batch = synthetic_batch(shapes, 3, 2, cfg.n_obs_steps, cfg.horizon, latent_keys=("latent",))
    loss, _ = policy.compute_loss(batch)
    assert torch.isfinite(loss)
    assert policy.eval().predict_action(batch["obs"]).shape == (2, cfg.n_action_steps, 3)


def test_with_demo_dataset(robomimic_file, tmp_path):
    """A real DemoDataset batch and its stats (as KeyStats or Normalizer.to_dict) feed a policy."""
    from stemob.data.dataset import DatasetConfig, DemoDataset

    dataset = DemoDataset(DatasetConfig(robomimic_file, n_obs_steps=2, horizon=8))
    batch = dataset.get_batch(np.arange(4))
    shapes = {k: list(v.shape[2:]) for k, v in batch["obs"].items()}
    cfg = tiny("diffusion", shapes, action_dim=7, horizon=8, n_action_steps=4)
    for stats in (dataset.stats, dataset.normalizer.to_dict()):
        policy = make_policy("diffusion", cfg, stats=stats, env_args={"env_name": "Lift"})
        loss, _ = policy.compute_loss(batch)
        assert torch.isfinite(loss)
    # the policy's normalisation agrees with stemob.data's Normalizer
    ours = policy.normalizer.normalize("action", batch["action"])
    theirs = dataset.normalizer.normalize("action", batch["action"])
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-5)
    restored = policy.normalizer.unnormalize("action", ours)
    torch.testing.assert_close(restored, batch["action"], atol=1e-4, rtol=1e-4)
    image = policy.normalizer.normalize("agentview_image", batch["obs"]["agentview_image"])
    mean = torch.tensor(dataset.stats["agentview_image"].mean, dtype=torch.float32)
    std = torch.tensor(dataset.stats["agentview_image"].std, dtype=torch.float32)
    expected = (batch["obs"]["agentview_image"].float() - mean.view(3, 1, 1)) / std.view(3, 1, 1)
    torch.testing.assert_close(image, expected, atol=1e-4, rtol=1e-4)
    folder = policy.save(tmp_path / "ckpt")
    assert json.loads((folder / "config.json").read_text())["env_args"] == {"env_name": "Lift"}
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".ckpt") for p in folder.iterdir())


def test_registry_and_config_errors():
    shapes = {"cam": [3, 24, 24]}
    assert policy_class("diffusion").name == "diffusion" and policy_class("act").name == "act"
    with pytest.raises(StemobError, match="unknown policy 'bc'"):
        make_policy("bc", {})
    with pytest.raises(StemobError, match="unknown DiffusionConfig option"):
        make_policy("diffusion", {"obs_shapes": shapes, "bogus": 1})
    with pytest.raises(StemobError, match="1 to 3 cameras"):
        tiny("diffusion", {f"c{i}": [3, 24, 24] for i in range(4)})
    with pytest.raises(StemobError, match="1 to 3 cameras"):
        tiny("diffusion", {"state": [3]})
    with pytest.raises(StemobError, match="3 channels"):
        tiny("diffusion", {"cam": [4, 24, 24]})
    with pytest.raises(StemobError, match="crop_shape"):
        tiny("diffusion", shapes, crop_shape=[30, 30])
    with pytest.raises(StemobError, match="vision_backbone"):
        tiny("diffusion", shapes, vision_backbone="vit")
    with pytest.raises(StemobError, match="normalization"):
        tiny("diffusion", shapes, normalization={"action": "zscore"})
    with pytest.raises(StemobError, match="action_dim"):
        tiny("diffusion", shapes, action_dim=0)


def test_stats_and_obs_errors():
    shapes = {"cam": [3, 24, 24], "state": [5]}
    cfg = tiny("diffusion", shapes)
    batch = synthetic_batch(shapes, 3, 2, 2, cfg.horizon)
    stats = batch_stats(batch)
    with pytest.raises(StemobError, match="lack \\['state'\\]"):
        make_policy("diffusion", cfg, stats={"action": stats["action"]})
    with pytest.raises(StemobError, match="'action' have 3 dimensions, expected 4"):
        make_policy("diffusion", tiny("diffusion", shapes, action_dim=4), stats=stats)
    with pytest.raises(StemobError, match="unknown Stem-OB setting"):
        make_policy("diffusion", cfg, stemob={"strength": 1})
    policy = make_policy("diffusion", cfg, stats=stats).eval()
    with pytest.raises(StemobError, match="observation lacks \\['state'\\]"):
        policy.predict_action({"cam": batch["obs"]["cam"]})
    with pytest.raises(StemobError, match="must be uint8"):
        policy.predict_action(batch["obs"] | {"cam": batch["obs"]["cam"].float()})
    with pytest.raises(StemobError, match="has 1 steps, needs 2"):
        policy.predict_action({k: v[:, :1] for k, v in batch["obs"].items()})
    longer = {k: torch.cat([v[:, :1], v], 1) for k, v in batch["obs"].items()}
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        policy.predict_action(longer, generator=g1),
        policy.predict_action(batch["obs"], generator=g2),
    )


def test_load_rejects_non_checkpoints(tmp_path):
    with pytest.raises(StemobError, match="is not a policy checkpoint: expected a policy folder"):
        load_policy(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StemobError, match="format"):
        load_policy(tmp_path)


def test_resnet18_and_small_cnn():
    x = torch.randn(2, 3, 64, 64)
    for group_norm in (False, True):
        net = ResNet18(group_norm=group_norm)
        assert net(x).shape == (2, 512, 2, 2)
        norms = {type(m).__name__ for m in net.modules()}
        assert ("GroupNorm" in norms) == group_norm and ("BatchNorm2d" in norms) != group_norm
    assert sum(p.numel() for p in ResNet18(group_norm=False).parameters()) == 11_176_512
    assert SmallCNN(4, 8)(torch.randn(1, 4, 32, 32)).shape == (1, 16, 4, 4)
    frame = torch.randn(1, 3, 96, 96)
    assert make_backbone("small_cnn", 3, True, 8)(frame).shape == (1, 16, 12, 12)
    assert make_backbone("small_cnn", 3, True, 8, stride=16)(frame).shape == (1, 16, 6, 6)
    with pytest.raises(StemobError, match="small_cnn stride 4"):
        make_backbone("small_cnn", 3, True, 8, stride=4)


def test_act_small_config_has_sixteen_keypoint_tokens_per_camera():
    from policies.act import small_config

    shapes = {"front_image": [3, 96, 96], "wrist_image": [3, 96, 96], "eef_pos": [3]}
    policy = make_policy("act", small_config(shapes, 7))
    images = {k: torch.zeros(2, 3, 96, 96) for k in ("front_image", "wrist_image")}
    tokens, pos = policy._image_tokens(images)
    assert tokens.shape == (2, 32, 64) and pos.shape == (1, 32, 64)
    grid = make_policy("act", small_config(shapes, 7, grid_tokens=True, keypoint_tokens=0,
                                           cnn_stride=16))  # fmt: skip
    tokens, pos = grid._image_tokens(images)
    assert tokens.shape == (2, 72, 64) and pos.shape == (1, 72, 64)  # the first config: 6x6 each
    with pytest.raises(StemobError, match="cnn_stride 12"):
        small_config(shapes, 7, cnn_stride=12)


def test_spatial_softmax_keypoints():
    layer = SpatialSoftmax(1, 1)
    with torch.no_grad():
        layer.proj.weight.fill_(1.0)
        layer.proj.bias.zero_()
    fmap = torch.full((1, 1, 5, 7), -1e4)
    fmap[0, 0, 4, 0] = 1e4  # bottom-left corner
    torch.testing.assert_close(layer(fmap), torch.tensor([[-1.0, 1.0]]))


def test_crops():
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6)
    centre = crop_images(images, (4, 4), random=False)
    torch.testing.assert_close(centre, images[:, :, 1:5, 1:5])
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        out = crop_images(images, (4, 4), random=True, generator=g)
        for b in range(2):
            top, left = divmod(int(out[b, 0, 0, 0] - images[b, 0, 0, 0]), 6)
            torch.testing.assert_close(out[b], images[b, :, top : top + 4, left : left + 4])
            seen.add((top, left))
    assert len(seen) > 3  # windows vary per sample and call
    with pytest.raises(StemobError, match="larger"):
        crop_images(images, (8, 8), random=False)


def test_variants_train_and_reload(tmp_path):
    """ACT without the CVAE, DP predicting the clean sample, and an EMA copy saved as the policy."""
    from policies.optim import EMA, make_optimizer

    shapes = {"cam": [3, 24, 24], "state": [2]}
    act = make_policy("act", tiny("act", shapes, use_vae=False, temporal_ensemble_coeff=None))
    batch = synthetic_batch(shapes, 3, 2, 1, act.config.horizon)
    loss, logs = act.compute_loss(batch)
    assert "kl" not in logs and logs["loss"] == pytest.approx(logs["l1"])
    act.eval()
    act.reset()
    chunk = act.predict_chunk(batch["obs"])
    first = act.select_action(batch["obs"])  # no ensembling: actions come from a queue
    torch.testing.assert_close(first, chunk[:, 0])
    torch.testing.assert_close(act.select_action(batch["obs"]), chunk[:, 1])

    dp = make_policy("diffusion", tiny("diffusion", shapes, prediction_type="sample"))
    batch = synthetic_batch(shapes, 3, 2, 2, dp.config.horizon)
    ema = EMA(dp)
    optimizer = make_optimizer(dp)
    for _ in range(3):
        loss, _ = dp.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.step(dp)
    assert ema.optimization_step == 3 and 0 < ema.decay < 1
    loaded = load_policy(ema.model.save(tmp_path / "ema"))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        loaded.predict_action(batch["obs"], generator=g1),
        ema.model.predict_action(batch["obs"], generator=g2),
        rtol=0,
        atol=0,
    )


def test_random_crop_of_strided_multichannel_images():
    base = torch.arange(5 * 3 * 9 * 7, dtype=torch.float32).reshape(5, 9, 7, 3)
    images = base.permute(0, 3, 1, 2)  # (N, C, H, W) view with channels-last strides
    g = torch.Generator().manual_seed(1)
    out = crop_images(images, (4, 5), random=True, generator=g)
    g = torch.Generator().manual_seed(1)
    top = torch.randint(0, 9 - 4 + 1, (5,), generator=g)
    left = torch.randint(0, 7 - 5 + 1, (5,), generator=g)
    for i in range(5):
        t, s = int(top[i]), int(left[i])
        torch.testing.assert_close(out[i], images[i, :, t : t + 4, s : s + 5])


def test_micro_batches_give_the_same_features(monkeypatch):
    from policies import encoders
    from policies.encoders import CameraEncoder

    torch.manual_seed(0)
    images = torch.randn(11, 3, 20, 20)
    for group_norm in (True, False):
        enc = CameraEncoder("small_cnn", 3, group_norm, 4, 8, (16, 16), width=8).eval()
        whole = enc(images)
        monkeypatch.setattr(encoders, "CPU_MICRO_BATCH", 4)
        torch.testing.assert_close(enc(images), whole)
        monkeypatch.undo()
    # BatchNorm in training needs the statistics of the whole batch: never split
    bn = CameraEncoder("small_cnn", 3, False, 4, 8, None, width=8).train()
    assert not encoders._splittable(bn) and encoders._splittable(bn.eval())


@pytest.mark.parametrize("name", ["diffusion", "act"])
def test_bf16_inference_stays_close_to_fp32(name):
    shapes = {"cam0": [3, 24, 24], "state": [5]}
    torch.manual_seed(0)
    policy = make_policy(name, tiny(name, shapes)).eval()
    batch = synthetic_batch(shapes, 3, 2, policy.config.n_obs_steps, policy.config.horizon)
    torch.manual_seed(1)
    full = policy.predict_action(batch["obs"])
    policy.config.inference_dtype = "bf16"
    torch.manual_seed(1)
    half = policy.predict_action(batch["obs"])
    assert half.dtype == torch.float32 and half.shape == full.shape
    scale = full.abs().max().item() + 1e-6
    # one forward (ACT) stays within 5 %; DP's 10 iterated denoising steps of an untrained net
    # amplify the rounding more
    tolerance = 0.05 if name == "act" else 0.25
    assert (half - full).abs().max().item() < tolerance * scale
    with pytest.raises(StemobError, match="inference_dtype"):
        tiny(name, shapes, inference_dtype="fp8")
