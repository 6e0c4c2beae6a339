"""stemob.deploy: the observation history, batching, and the PolicyRunner round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.testing import batch_stats, synthetic_batch
from stemob.deploy import (
    ObservationHistory,
    PolicyRunner,
    invert_pending,
    next_actions,
    to_batch,
)
from stemob.errors import StemobError
from stemob.inversion.inverter import Inverter
from stemob.inversion.settings import InversionSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPES = {"front_image": [3, 24, 24], "wrist_image": [3, 24, 24], "eef_pos": [3]}
KEYS = ["front_image", "wrist_image"]


def obs_at(t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(t)
    return {
        "front_image": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
        "eef_pos": np.array([t, -t, 0.5 * t], np.float32),
    }


def test_history_repeats_the_first_frame_and_keeps_the_last():
    history = ObservationHistory(3, ["eef_pos"])
    with pytest.raises(StemobError, match="empty"):
        history.window()
    history.push(obs_at(0))
    assert history.window()["eef_pos"][:, 0].tolist() == [0, 0, 0]
    history.push(obs_at(1))
    assert history.window()["eef_pos"][:, 0].tolist() == [0, 0, 1]
    for t in (2, 3, 4):
        history.push(obs_at(t))
    assert history.window()["eef_pos"][:, 0].tolist() == [2, 3, 4]
    assert [f.step for f in history.frames] == [2, 3, 4]
    history.reset()
    history.push(obs_at(9))
    assert history.frames[0].step == 0
    with pytest.raises(StemobError, match="'eef_pos'"):
        history.push({"front_image": obs_at(0)["front_image"]})


def test_to_batch_follows_the_batch_contract():
    windows = []
    for e in range(2):
        history = ObservationHistory(2, ["front_image", "eef_pos"])
        history.push(obs_at(e))
        history.push(obs_at(e + 5))
        windows.append(history.window())
    batch = to_batch(windows, ["front_image"])
    assert batch["front_image"].dtype == torch.uint8
    assert tuple(batch["front_image"].shape) == (2, 2, 3, 24, 24)
    assert torch.equal(
        batch["front_image"][1, 1], torch.from_numpy(obs_at(6)["front_image"]).permute(2, 0, 1)
    )
    assert batch["eef_pos"].dtype == torch.float32 and tuple(batch["eef_pos"].shape) == (2, 2, 3)


def test_invert_pending_inverts_each_window_frame_once(tiny_uncond_model):
    inverter = Inverter(InversionSettings(pretrained=str(tiny_uncond_model), seed=1))
    calls = []

    class Counting:
        def invert(self, images, ids, **kwargs):
            calls.append(list(ids))
            return inverter.invert(images, ids, **kwargs)

    histories = [ObservationHistory(2, [*KEYS, "eef_pos"]) for _ in range(2)]
    for t in range(4):  # frames 0 and 1 leave the window before any planning call
        for h in histories:
            h.push(obs_at(t))
    assert invert_pending(Counting(), histories, [7, 8], KEYS) == 8
    assert len(calls) == 1
    assert sorted({(e, s) for e, s, _ in calls[0]}) == [(7, 2), (7, 3), (8, 2), (8, 3)]
    assert invert_pending(Counting(), histories, [7, 8], KEYS) == 0  # already inverted
    expected = inverter.invert(
        np.stack([obs_at(2)["front_image"], obs_at(3)["front_image"]]),
        [(8, 2, "front_image"), (8, 3, "front_image")],
    )
    assert np.array_equal(histories[1].window()["front_image"], expected)
    assert np.array_equal(histories[1].window()["eef_pos"][1], obs_at(3)["eef_pos"])


def make_checkpoint(
    path, policy_name: str, stemob=None, action_dim: int = 4, env_args=None, **overrides
):
    if policy_name == "act":
        from policies.act.config import small_config

        steps = dict(n_obs_steps=1, horizon=8, n_action_steps=4)
    else:
        from policies.diffusion.config import small_config

        steps = dict(n_obs_steps=2, horizon=8, n_action_steps=4, num_inference_steps=3)
    batch = synthetic_batch(SHAPES, action_dim, 4, steps["n_obs_steps"], 8)
    cfg = small_config(SHAPES, action_dim, cnn_width=8, **steps, **overrides)
    policy = make_policy(
        policy_name, cfg, stats=batch_stats(batch), stemob=stemob, env_args=env_args
    )
    policy.save(path)
    return path


@pytest.fixture(scope="module")
def settings(tiny_uncond_model) -> InversionSettings:
    return InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=6, seed=2)


def test_runner_round_trip_applies_inversion_and_history(tmp_path, settings):
    from policies import load_policy

    path = make_checkpoint(tmp_path / "dp", "diffusion", settings)
    runner = PolicyRunner.from_checkpoint(path)
    assert runner.inverter is not None and runner.inverter.settings == settings
    assert runner.actions_per_call == 4
    runner.reset(episode=3)
    images = lambda t: {k: obs_at(t)[k] for k in KEYS}  # noqa: E731
    chunk = runner.act(images(0), {"eef_pos": obs_at(0)["eef_pos"]})
    assert chunk.shape == (4, 4) and chunk.dtype == np.float32
    runner.observe(images(1), {"eef_pos": obs_at(1)["eef_pos"]})
    torch.manual_seed(0)  # the diffusion sampler's noise
    chunk = runner.act(images(2), {"eef_pos": obs_at(2)["eef_pos"]})
    # the same by hand: frames 1 and 2 inverted with ids (3, step, key), batch contract, policy
    policy = load_policy(path)
    inverter = Inverter(settings)
    window = {}
    for key in KEYS:
        window[key] = inverter.invert(
            np.stack([obs_at(1)[key], obs_at(2)[key]]), [(3, 1, key), (3, 2, key)]
        )
    window["eef_pos"] = np.stack([obs_at(1)["eef_pos"], obs_at(2)["eef_pos"]])
    torch.manual_seed(0)
    expected = policy.predict_action(to_batch([window], KEYS))[0].numpy()
    np.testing.assert_allclose(chunk, expected, rtol=1e-5, atol=1e-6)
    latency = runner.latency
    assert latency["calls"] == 2 and latency["median_inversion_ms"] > 0
    assert latency["last_total_ms"] == pytest.approx(
        latency["last_inversion_ms"] + latency["last_policy_ms"]
    )


def test_runner_with_temporal_ensembling_returns_one_action(tmp_path):
    path = make_checkpoint(tmp_path / "act_te", "act", None, temporal_ensemble_coeff=0.01)
    runner = PolicyRunner.from_checkpoint(path)
    assert runner.inverter is None and runner.actions_per_call == 1
    runner.reset()
    from policies import load_policy

    policy = load_policy(path)
    policy.reset()
    history = ObservationHistory(1, [*KEYS, "eef_pos"])
    for t in range(3):
        action = runner.act({k: obs_at(t)[k] for k in KEYS}, {"eef_pos": obs_at(t)["eef_pos"]})
        history.push(obs_at(t))
        expected = next_actions(policy, to_batch([history.window()], KEYS))[0].numpy()
        assert action.shape == (1, 4)
        np.testing.assert_allclose(action, expected, rtol=1e-5, atol=1e-6)
    assert runner.latency["median_inversion_ms"] == 0.0


def test_runner_names_missing_keys_and_bad_shapes(tmp_path):
    runner = PolicyRunner.from_checkpoint(make_checkpoint(tmp_path / "dp", "diffusion"))
    runner.reset()
    good = {k: obs_at(0)[k] for k in KEYS}
    state = {"eef_pos": obs_at(0)["eef_pos"]}
    with pytest.raises(StemobError, match="'wrist_image'"):
        runner.act({"front_image": good["front_image"]}, state)
    with pytest.raises(StemobError, match=r"'front_image'.*\(24, 24, 3\)"):
        runner.act({**good, "front_image": np.zeros((32, 32, 3), np.uint8)}, state)
    with pytest.raises(StemobError, match="uint8"):
        runner.act({**good, "front_image": np.zeros((24, 24, 3), np.float32)}, state)
    with pytest.raises(StemobError, match="'eef_pos'"):
        runner.act(good, {})
    with pytest.raises(StemobError, match="'eef_pos'.*3 values"):
        runner.act(good, {"eef_pos": np.zeros(2)})
    assert runner.act(good, state).shape == (4, 4)


def test_from_checkpoint_accepts_what_eval_accepts(tmp_path):
    """The README's snippet passes a run directory: its best policy, else its newest step's."""
    import shutil

    run = tmp_path / "outputs" / "train" / "run"
    older = make_checkpoint(run / "checkpoints" / "step_0000002" / "policy", "act", lr=2e-3)
    newer = make_checkpoint(run / "checkpoints" / "step_0000004" / "policy", "act", lr=4e-3)
    lr = lambda path: PolicyRunner.from_checkpoint(path).policy.config.lr  # noqa: E731
    assert lr(run) == 4e-3  # a run directory: its newest step
    assert lr(older.parent) == 2e-3  # a step folder
    assert lr(newer) == 4e-3  # a policy folder
    shutil.copytree(older, run / "checkpoints" / "best")
    assert lr(run) == 2e-3  # best wins
    (tmp_path / "empty").mkdir()
    with pytest.raises(StemobError, match="training run directory with checkpoints/best"):
        PolicyRunner.from_checkpoint(tmp_path / "empty")


def test_test_draws_average_the_policy_over_noise_draws(tmp_path, settings):
    """test_draws=M: frame ids (episode + m * DRAW_STRIDE, step, key), one policy batch of the M
    windows, actions averaged; the same in PolicyRunner and eval's rollout."""
    from policies import load_policy
    from stemob.deploy import DRAW_STRIDE, draw_episodes, mean_over_draws
    from stemob.evaluation.rollout import evaluate

    assert draw_episodes([3, 4], 2) == [3, 3 + DRAW_STRIDE, 4, 4 + DRAW_STRIDE]
    actions = torch.arange(12.0).reshape(4, 1, 3)
    assert torch.equal(
        mean_over_draws(actions, 2), torch.stack([actions[:2].mean(0), actions[2:].mean(0)])
    )
    path = make_checkpoint(tmp_path / "dp", "diffusion", settings)
    runner = PolicyRunner.from_checkpoint(path, test_draws=3)
    runner.reset(episode=3)
    torch.manual_seed(0)
    chunk = runner.act({k: obs_at(0)[k] for k in KEYS}, {"eef_pos": obs_at(0)["eef_pos"]})
    policy, inverter = load_policy(path), Inverter(settings)
    windows = []
    for episode in draw_episodes([3], 3):
        window = {k: np.stack([inverter.invert(obs_at(0)[k][None], [(episode, 0, k)])[0]] * 2)
                  for k in KEYS}  # fmt: skip
        window["eef_pos"] = np.stack([obs_at(0)["eef_pos"]] * 2)
        windows.append(window)
    assert not np.array_equal(windows[0]["front_image"], windows[1]["front_image"])
    torch.manual_seed(0)
    expected = policy.predict_action(to_batch(windows, KEYS)).mean(0).numpy()
    np.testing.assert_allclose(chunk, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(StemobError, match="test_draws > 1"):
        PolicyRunner.from_checkpoint(make_checkpoint(tmp_path / "raw", "diffusion"), test_draws=2)
    with pytest.raises(StemobError, match="positive integer"):
        PolicyRunner(policy, test_draws=0)
    from envs.tabletop.env import TabletopEnv

    env = TabletopEnv("lift_cube", image_size=24)
    env_args = env.env_args
    env.close()
    seven = load_policy(make_checkpoint(tmp_path / "dp7", "diffusion", settings, action_dim=7))
    result = evaluate(seven, env_args, episodes=2, n_envs=2, test_draws=2, max_steps=8,
                      progress=False)  # fmt: skip
    assert result.completed == 2 and result.errors == 0


def test_compared_policies_take_test_draws_only_where_inversion_draws_noise(tmp_path, settings):
    """eval.py comparison mode with test_draws=2: the Stem-OB policy is evaluated with two draws,
    the policy without Stem-OB with one (said in its report); when no policy draws noise, one
    error before any rollout."""
    from envs.tabletop.env import TabletopEnv
    from stemob.evaluation.suite import evaluate_from_config
    from tests.test_training import compose

    env = TabletopEnv("lift_cube", image_size=24)
    env_args = env.env_args
    env.close()
    stem = make_checkpoint(
        tmp_path / "stem", "diffusion", settings, action_dim=7, env_args=env_args
    )
    raw = make_checkpoint(tmp_path / "raw", "diffusion", action_dim=7, env_args=env_args)

    def run(checkpoints: str, names: str, out: str):
        cfg = compose([f"checkpoint={checkpoints}", f"names={names}", "perturbation=none",
                       "episodes=1", "envs=1", "videos=0", "max_steps=4", "test_draws=2",
                       "logger.name=none", f"output_dir={tmp_path / out}"], config_name="eval")  # fmt: skip
        return evaluate_from_config(cfg)

    out = run(f"[{stem},{raw}]", "[stemob,org]", "both")
    stem_meta = json.loads((out / "stemob" / "results.json").read_text())["meta"]
    raw_meta = json.loads((out / "org" / "results.json").read_text())["meta"]
    assert stem_meta["test_draws"] == "2"
    assert raw_meta["test_draws"].startswith("1 (the policy has no Stem-OB settings")
    assert (out / "comparison.md").is_file()
    with pytest.raises(StemobError, match="no policy evaluated here draws noise.*raw"):
        run(f"[{raw},{raw}]", "[a,b]", "none")
    assert not (tmp_path / "none" / "a").exists()
