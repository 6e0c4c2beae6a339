"""ACT: overfitting a tiny dataset, checkpoints, temporal ensembling, every decoder layer used."""

from __future__ import annotations

import math

import pytest
import torch

from policies import load_policy
from policies.act import ACTPolicy, TemporalEnsembler, paper_config, small_config
from policies.optim import make_optimizer
from policies.testing import batch_stats, synthetic_batch
from stemob.errors import StemobError

torch.set_flush_denormal(True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SHAPES = {"cam": [3, 16, 16], "state": [4]}
STEPS = 200
LOSS_DROP = 50.0


def tiny_config(**overrides):
    values = dict(
        horizon=10,
        n_action_steps=10,
        hidden_dim=32,
        dim_feedforward=64,
        cnn_width=8,
        dropout=0.0,
        latent_dim=8,
        lr=1e-3,
        backbone_lr=1e-3,
    )
    values.update(overrides)
    return small_config(SHAPES, 3, **values)


@pytest.fixture(scope="module")
def trained():
    batch = synthetic_batch(SHAPES, 3, batch=4, n_obs_steps=1, horizon=10)
    batch["action_is_pad"][0, -3:] = True  # padded steps are left out of the loss
    big = {
        "obs": {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in batch["obs"].items()},
        "action": batch["action"].repeat(2, 1, 1),
        "action_is_pad": batch["action_is_pad"].repeat(2, 1),
    }
    torch.manual_seed(0)
    policy = ACTPolicy(tiny_config(), stats=batch_stats(batch), env_args={"env_name": "Lift"})
    optimizer = make_optimizer(policy)
    losses = []
    for _ in range(STEPS):
        loss, logs = policy.compute_loss(big)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(logs)
    return policy.eval(), batch, losses


def test_loss_falls_and_actions_match(trained):
    policy, batch, logs = trained
    first = sum(x["loss"] for x in logs[:10]) / 10
    last = sum(x["loss"] for x in logs[-10:]) / 10
    assert last * LOSS_DROP < first, (first, last)
    assert {"l1", "kl", "loss"} <= set(logs[-1])
    pred = policy.predict_chunk(batch["obs"])
    keep = ~batch["action_is_pad"]
    # actions span about [-1, 1.2]: mean error below 0.05, worst step below 0.2
    err = (pred - batch["action"]).abs()[keep]
    assert err.mean() < 0.05 and err.max() < 0.2


def test_save_load_identical(trained, tmp_path):
    policy, batch, _ = trained
    loaded = load_policy(policy.save(tmp_path / "act"))
    assert isinstance(loaded, ACTPolicy)
    assert loaded.env_args == {"env_name": "Lift"} and loaded.stemob is None
    torch.testing.assert_close(
        loaded.predict_action(batch["obs"]), policy.predict_action(batch["obs"]), rtol=0, atol=0
    )


def test_load_overrides_inference_fields_only(trained, tmp_path):
    """Temporal ensembling can be switched off at load time; a model-shaping field cannot."""
    policy, batch, _ = trained
    folder = policy.save(tmp_path / "act")
    chunked = load_policy(folder, overrides={"temporal_ensemble_coeff": None, "n_action_steps": 4})
    assert chunked.ensembler is None and chunked.config.n_action_steps == 4
    assert load_policy(folder).ensembler is not None  # the checkpoint itself is unchanged
    torch.testing.assert_close(
        chunked.select_action(batch["obs"]), policy.predict_chunk(batch["obs"])[:, 0]
    )
    with pytest.raises(StemobError, match=r"\['hidden_dim'\] cannot be overridden"):
        load_policy(folder, overrides={"hidden_dim": 64})
    with pytest.raises(StemobError, match="n_action_steps"):
        load_policy(folder, overrides={"n_action_steps": 0})


def test_every_decoder_layer_matters(trained):
    """Changing the last decoder layer changes the output (the reference used only the first)."""
    policy, batch, _ = trained
    before = policy.predict_chunk(batch["obs"])
    for layer in policy.decoder.layers:
        saved = {k: v.clone() for k, v in layer.state_dict().items()}
        with torch.no_grad():
            for p in layer.parameters():
                p.mul_(1.5)
        assert not torch.allclose(policy.predict_chunk(batch["obs"]), before)
        layer.load_state_dict(saved)
    torch.testing.assert_close(policy.predict_chunk(batch["obs"]), before)


def test_temporal_ensembling_weights_and_bookkeeping():
    ens = TemporalEnsembler(coeff=0.01, chunk_size=3)
    w = ens.weights(3)
    expected = torch.tensor([1.0, math.exp(-0.01), math.exp(-0.02)], dtype=torch.float64)
    torch.testing.assert_close(w, expected / expected.sum())
    # chunk predicted at step s holds the value 10 * s + k at offset k (B=1, A=1)
    chunks = [torch.tensor([[[10.0 * s + k] for k in range(3)]]) for s in range(5)]
    outs = [ens.update(c) for c in chunks]
    # step 0: only chunk 0 -> 0
    assert outs[0].item() == pytest.approx(0.0)
    # step 1: chunk 0 offset 1 (1), chunk 1 offset 0 (10), weights oldest first
    w2 = ens.weights(2).float()
    assert outs[1].item() == pytest.approx(float(w2[0] * 1 + w2[1] * 10), rel=1e-6)
    # step 4: chunks 2 (offset 2: 22), 3 (offset 1: 31), 4 (offset 0: 40); chunks 0, 1 expired
    w3 = ens.weights(3).float()
    assert outs[4].item() == pytest.approx(float(w3[0] * 22 + w3[1] * 31 + w3[2] * 40), rel=1e-6)
    assert [start for start, _ in ens.chunks] == [2, 3, 4]
    ens.reset()
    assert ens.step == 0 and not ens.chunks
    with pytest.raises(StemobError, match="chunk has shape"):
        ens.update(torch.zeros(1, 2, 1))


def test_select_action_uses_ensembler(trained):
    policy, batch, _ = trained
    obs = {k: v[:1] for k, v in batch["obs"].items()}
    policy.reset()
    first = policy.select_action(obs)
    torch.testing.assert_close(first, policy.predict_chunk(obs)[:, 0])
    second = policy.select_action(obs)  # same obs: both chunks agree on their overlap
    chunk = policy.predict_chunk(obs)
    w = policy.ensembler.weights(2).float()
    torch.testing.assert_close(second, w[0] * chunk[:, 1] + w[1] * chunk[:, 0])
    policy.reset()
    assert policy.ensembler.step == 0


def test_paper_defaults_and_param_groups():
    cfg = paper_config({"top": [3, 48, 64], "qpos": [14]}, 14)
    assert cfg.chunk_size == 100 and cfg.kl_weight == 10
    assert (cfg.hidden_dim, cfg.dim_feedforward, cfg.n_heads) == (512, 3200, 8)
    assert (cfg.n_encoder_layers, cfg.n_decoder_layers, cfg.latent_dim) == (4, 7, 32)
    assert (cfg.lr, cfg.backbone_lr, cfg.weight_decay) == (1e-5, 1e-5, 1e-4)
    assert cfg.temporal_ensemble_coeff == 0.01
    policy = ACTPolicy(tiny_config(backbone_lr=1e-5))
    optimizer = make_optimizer(policy)
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs == [1e-5, 1e-3]
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in policy.parameters())


def test_config_validation():
    with pytest.raises(StemobError, match="n_obs_steps"):
        tiny_config(n_obs_steps=2)
    with pytest.raises(StemobError, match="divisible by n_heads"):
        tiny_config(hidden_dim=30)
    with pytest.raises(StemobError, match="n_action_steps"):
        tiny_config(n_action_steps=11)


def test_attention_matches_multihead_attention():
    from policies.act.transformer import attention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, dropout=0.0, batch_first=True)
    q, kv = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    for training in (True, False):
        mha.train(training)
        ref = mha(q, kv, kv, key_padding_mask=pad, need_weights=False)[0]
        torch.testing.assert_close(attention(mha, q, kv, kv, pad), ref)
        ref = mha(kv, kv, q[:, :1].expand(-1, 7, -1), need_weights=False)[0]
        torch.testing.assert_close(attention(mha, kv, kv, q[:, :1].expand(-1, 7, -1)), ref)


def test_attention_dropout_in_training_only():
    from policies.act.transformer import attention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 2, dropout=0.5, batch_first=True)
    x = torch.randn(2, 6, 16)
    mha.eval()
    torch.testing.assert_close(attention(mha, x, x, x), attention(mha, x, x, x))
    mha.train()
    a, b = attention(mha, x, x, x), attention(mha, x, x, x)
    assert not torch.allclose(a, b) and torch.isfinite(a).all()
    # the expectation over dropout masks is the dropout-free output
    mean = torch.stack([attention(mha, x, x, x) for _ in range(2000)]).mean(0)
    mha.eval()
    torch.testing.assert_close(mean, attention(mha, x, x, x), atol=0.05, rtol=0.05)


@pytest.mark.slow
def test_compiled_inference_matches_eager(trained):
    policy, batch = trained[0], trained[1]
    obs = {k: v[:2] for k, v in batch["obs"].items()}
    eager = policy.predict_chunk(obs)
    clone = ACTPolicy(policy.config, stats=policy.stats)
    clone.load_state_dict(policy.state_dict())
    clone.eval().compile_inference()
    torch.testing.assert_close(clone.predict_chunk(obs), eager, rtol=1e-4, atol=1e-4)
    assert set(clone.state_dict()) == set(policy.state_dict())


def test_image_tokens_grid_keypoints_or_both():
    """The paper's grid of feature cells, the CPU config's keypoints, or both, per camera."""
    shapes = {"front": [3, 32, 32], "wrist": [3, 32, 32], "state": [4]}
    images = {k: torch.rand(2, 3, 32, 32) for k in ("front", "wrist")}
    counts = {}
    for grid, keypoints in ((True, 0), (False, 6), (True, 6)):
        cfg = small_config(shapes, 3, grid_tokens=grid, keypoint_tokens=keypoints, cnn_width=8)
        policy = ACTPolicy(cfg).eval()
        tokens, pos = policy._image_tokens(images)
        assert tokens.shape[1] == pos.shape[1] and tokens.shape[0] == 2
        counts[(grid, keypoints)] = tokens.shape[1]
        assert ("input_proj.16.weight" in policy.state_dict() or not grid) and (
            any(k.startswith("keypoint_net") for k in policy.state_dict()) == bool(keypoints)
        )
    cells = 2 * (32 // 8) ** 2  # stride 8: a 4x4 map per camera
    assert counts == {(True, 0): cells, (False, 6): 12, (True, 6): cells + 12}
    paper = paper_config(shapes, 3)
    assert paper.grid_tokens and paper.keypoint_tokens == 0  # the paper's tokens stay
    with pytest.raises(StemobError, match="grid_tokens=false needs keypoint_tokens"):
        small_config(shapes, 3, grid_tokens=False, keypoint_tokens=0)


def test_a_keypoint_moves_with_the_object_it_tracks():
    """The point of keypoint tokens: a small bright square's position is in the tokens."""
    torch.manual_seed(0)
    cfg = small_config({"cam": [3, 32, 32]}, 3, cnn_width=8)
    policy = ACTPolicy(cfg).eval()
    frames = torch.zeros(2, 3, 32, 32)
    frames[0, :, 4:8, 4:8] = 1.0  # top left
    frames[1, :, 24:28, 24:28] = 1.0  # bottom right
    features = policy._features(policy.backbones[0], frames)
    xy = policy.keypoint_net[str(features.shape[1])](features).view(2, -1, 2)
    assert (xy[1] - xy[0]).abs().max() > 0.05  # some keypoint follows the square
