"""stemob.evaluation: lockstep rollouts, chunks and temporal ensembling, test-time inversion,
error capture, benchmark and reports."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from policies.base import Policy, PolicyConfig
from stemob.errors import StemobError
from stemob.evaluation import (
    EpisodeRecord,
    FactorResult,
    evaluate,
    load_benchmark,
    run_benchmark,
    write_comparison,
    write_report,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parent.parent
BASE = 100000
SHAPES = {"cam_image": [3, 16, 16], "pos": [1]}


class LineEnv(gym.Env):
    """x starts at (seed % 7) / 10 (+ a perturbation's ``shift``); each action adds to it;
    success (and termination) at x >= 1. Logs its actions per seed; can raise at one seed."""

    metadata = {"render_fps": 10}

    def __init__(self, log=None, crash_seed=None, shift=0.0) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "cam_image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                "pos": gym.spaces.Box(-10, 10, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-0.2, 0.2, (1,), np.float32)
        self.task = SimpleNamespace(max_episode_steps=12)
        self.log = log if log is not None else {}
        self.crash_seed, self.shift = crash_seed, shift

    def _obs(self):
        ramp = np.linspace(0, 255, 16)[None, :, None] * np.ones((16, 1, 3))
        image = (ramp * 0.5 + 120 * min(self.x, 2.0) + 7 * self.t) % 256
        return {"cam_image": image.astype(np.uint8), "pos": np.array([self.x], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = seed, 0
        self.x = (seed % 7) / 10 + self.shift
        self.log[seed] = []
        return self._obs(), {"is_success": False}

    def step(self, action):
        if self.seed_ == self.crash_seed and self.t == 2:
            raise RuntimeError("boom")
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -0.2, 0.2))
        self.log[self.seed_].append(a)
        self.x += a
        self.t += 1
        success = self.x >= 1.0
        return self._obs(), float(success), success, False, {"is_success": success}


class LinePolicy(Policy):
    """Deterministic and per-sample: the chunk repeats ``0.3 x - 0.05`` (x: the newest state)."""

    name = "line"

    def __init__(self, config, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.gain = nn.Parameter(torch.tensor(0.3))
        self.calls = 0
        self.seen: list[dict[str, torch.Tensor]] = []

    def predict_chunk(self, obs, **kwargs):
        self.calls += 1
        self.seen.append({k: v.clone() for k, v in obs.items()})
        x = obs["pos"][:, -1, 0].float()
        a = self.gain * x - 0.05
        return a[:, None, None].expand(-1, self.config.horizon, 1).clone()


def line_policy(**kwargs) -> LinePolicy:
    cfg = PolicyConfig(obs_shapes=SHAPES, action_dim=1, n_obs_steps=2, horizon=4, n_action_steps=3)
    return LinePolicy(cfg, **kwargs)


def factory(log=None, crash_seed=None):
    def make(env_args, perturbation):
        shift = (perturbation or {}).get("shift", 0.0)
        return LineEnv(log, crash_seed, shift)

    return make


def outcomes(result: FactorResult):
    return [(r.seed, r.success, r.length, round(r.reward, 6), r.error) for r in result.records]


def run(policy, episodes=7, n_envs=1, **kwargs) -> FactorResult:
    kwargs.setdefault("env_factory", factory())
    return evaluate(policy, {}, None, episodes, n_envs=n_envs, progress=False, **kwargs)


# ---------------------------------------------------------------------- rollouts


def test_lockstep_batches_give_the_same_episodes_as_one_env():
    logs = [{}, {}]
    single = run(line_policy(), env_factory=factory(logs[0]))
    batched = run(line_policy(), n_envs=3, env_factory=factory(logs[1]))  # batches 3, 3, 1
    assert outcomes(single) == outcomes(batched)
    assert logs[0] == logs[1]
    assert single.seeds == [BASE + i for i in range(7)]
    assert 0 < single.successes < 7  # the outcomes differ between seeds
    assert {r.length for r in single.records if not r.success} == {12}  # the task's max steps


def test_blind_evaluation_feeds_zero_images_and_keeps_the_state():
    policy = line_policy()
    run(policy, episodes=2, blind=True)
    assert policy.seen and all(int(obs["cam_image"].abs().sum()) == 0 for obs in policy.seen)
    assert any(float(obs["pos"].abs().sum()) > 0 for obs in policy.seen)
    seeing = line_policy()
    run(seeing, episodes=2)
    assert any(int(obs["cam_image"].sum()) > 0 for obs in seeing.seen)


def test_chunks_are_executed_and_stopped_at_termination():
    policy = line_policy()
    result = run(policy, episodes=7)
    # one planning call per chunk of n_action_steps=3 actions, the last one cut at termination
    assert policy.calls == sum(math.ceil(r.length / 3) for r in result.records)
    assert all(r.length % 3 == 0 for r in result.records if not r.success)
    short = run(line_policy(), episodes=3, max_steps=5)
    assert max(r.length for r in short.records) == 5


def test_temporal_ensembling_calls_select_action_every_step():
    from policies import make_policy
    from policies.act.config import small_config

    cfg = small_config(
        SHAPES, 1, n_obs_steps=1, horizon=4, n_action_steps=1, hidden_dim=16,
        dim_feedforward=32, n_heads=2, latent_dim=4, cnn_width=8, temporal_ensemble_coeff=0.01,
    )  # fmt: skip
    policy = make_policy("act", cfg).eval()
    logs = [{}, {}]
    one = run(policy, episodes=3, env_factory=factory(logs[0]), max_steps=6)
    assert policy.ensembler.step == one.records[-1].length  # one ensembled action per step
    three = run(policy, episodes=3, n_envs=3, env_factory=factory(logs[1]), max_steps=6)
    assert outcomes(one) == outcomes(three)
    for seed in logs[0]:
        np.testing.assert_allclose(logs[0][seed], logs[1][seed], atol=1e-5)


def test_a_crashing_episode_is_recorded_and_the_rest_go_on():
    clean = run(line_policy(), episodes=5, n_envs=2)
    crashed = run(line_policy(), episodes=5, n_envs=2, env_factory=factory(crash_seed=BASE + 2))
    assert crashed.errors == 1 and crashed.completed == 4
    bad = crashed.records[2]
    assert bad.seed == BASE + 2 and "RuntimeError: boom" in bad.error
    assert [o for o in outcomes(crashed) if o[0] != BASE + 2] == [
        o for o in outcomes(clean) if o[0] != BASE + 2
    ]
    good = [r for r in clean.records if r.seed != BASE + 2]
    assert crashed.rate == pytest.approx(sum(r.success for r in good) / 4)


def test_a_crashing_policy_call_fails_only_its_batch():
    policy = line_policy()
    original = policy.predict_chunk

    def flaky(obs, **kwargs):
        if obs["pos"].shape[0] == 1:
            raise ValueError("policy exploded")
        return original(obs, **kwargs)

    policy.predict_chunk = flaky
    result = run(policy, episodes=5, n_envs=2)  # batches of 2, 2, 1: the last one fails
    assert [r.error is not None for r in result.records] == [False] * 4 + [True]
    assert "policy exploded" in result.records[4].error


def test_test_time_inversion_uses_the_stored_settings_and_frame_ids(tiny_uncond_model):
    from stemob.inversion.inverter import Inverter
    from stemob.inversion.settings import InversionSettings

    settings = InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=8, seed=5)
    policy = line_policy(stemob=settings)
    run(policy, episodes=1, max_steps=4)
    frames = [LineEnv().reset(seed=BASE)[0]["cam_image"]]
    inverter = Inverter(settings)
    # first call: the reset frame, repeated; inverted with id (seed, 0, key)
    first = policy.seen[0]["cam_image"][0].permute(0, 2, 3, 1).numpy()
    expected0 = inverter.invert(frames[0], [(BASE, 0, "cam_image")])
    assert np.array_equal(first[0], expected0) and np.array_equal(first[1], expected0)
    assert not np.array_equal(expected0, frames[0])
    # low-dim keys pass through untouched
    assert policy.seen[0]["pos"].dtype == torch.float32


def test_inversion_frames_follow_the_env_steps(tiny_uncond_model):
    from stemob.inversion.inverter import Inverter
    from stemob.inversion.settings import InversionSettings

    settings = InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=8, seed=5)
    log: dict = {}
    policy = line_policy(stemob=settings)
    run(policy, episodes=1, max_steps=4, env_factory=factory(log))
    env = LineEnv()
    raw = [env.reset(seed=BASE)[0]["cam_image"]]
    raw += [env.step(np.array([a]))[0]["cam_image"] for a in log[BASE]]
    second = policy.seen[1]["cam_image"][0].permute(0, 2, 3, 1).numpy()  # steps 2 and 3
    ids = [(BASE, 2, "cam_image"), (BASE, 3, "cam_image")]
    expected = Inverter(settings).invert(np.stack(raw[2:4]), ids)
    assert np.array_equal(second, expected)


def test_bad_arguments_are_named():
    with pytest.raises(StemobError, match="episodes"):
        run(line_policy(), episodes=0)
    with pytest.raises(StemobError, match="env_args"):
        evaluate(line_policy(), None, None, 1, progress=False)
    cfg = PolicyConfig(obs_shapes={"cam_image": [3, 16, 16], "joint": [2]}, action_dim=1,
                       n_obs_steps=1, horizon=2, n_action_steps=1)  # fmt: skip
    with pytest.raises(StemobError, match="'joint'"):
        run(LinePolicy(cfg), episodes=1)


def test_tabletop_rollout_with_inversion_and_videos(tmp_path, tiny_uncond_model):
    from envs.record import env_args_of
    from envs.tabletop.env import TabletopEnv
    from policies import make_policy
    from policies.diffusion.config import small_config
    from stemob.inversion.settings import InversionSettings

    env = TabletopEnv("lift_cube", image_size=32, cameras=("front", "wrist"))
    env_args = env_args_of(env)
    env.close()
    shapes = {"front_image": [3, 32, 32], "wrist_image": [3, 32, 32], "eef_pos": [3]}
    settings = InversionSettings(pretrained=str(tiny_uncond_model), seed=0)
    policy = make_policy(
        "diffusion", small_config(shapes, 7, num_inference_steps=2), stemob=settings,
        env_args=env_args,
    )  # fmt: skip
    result = evaluate(
        policy, None, None, 3, n_envs=2, max_steps=5, video_dir=tmp_path, videos=2,
        progress=False, name="clean",
    )  # fmt: skip
    assert result.errors == 0 and [r.length for r in result.records] == [5, 5, 5]
    assert [Path(v).name for v in result.videos] == [
        f"clean_ep000_seed{BASE}.mp4",
        f"clean_ep001_seed{BASE + 1}.mp4",
    ]
    assert all(Path(v).stat().st_size > 0 for v in result.videos)
    assert result.wall_s > 0


# ---------------------------------------------------------------------- results, benchmark


def test_factor_result_statistics_and_round_trip():
    records = [
        EpisodeRecord(0, 10, True, 4),
        EpisodeRecord(1, 11, False, 12),
        EpisodeRecord(2, 12, True, 8),
        EpisodeRecord(3, 13, False, 2, error="ValueError: x"),
    ]
    result = FactorResult("mo_color", records, "configs/perturbation/mo_color.yaml")
    assert (result.episodes, result.errors, result.completed, result.successes) == (4, 1, 3, 2)
    assert result.rate == pytest.approx(2 / 3)
    assert result.stderr == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))
    assert result.mean_length == pytest.approx(8.0)
    assert result.seeds == [10, 11, 12, 13]
    again = FactorResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.to_dict() == result.to_dict()
    assert FactorResult("empty").rate == 0.0 and FactorResult("empty").stderr == 0.0


def test_load_benchmark_lists_the_colosseum_factors():
    factors = load_benchmark(REPO / "configs/benchmark/colosseum.yaml")
    assert len(factors) == 16 and factors["none"] is None
    assert factors["mo_color"] == REPO / "configs/perturbation/mo_color.yaml"
    assert all(p.is_file() for n, p in factors.items() if n != "none")


def test_load_benchmark_names_a_missing_factor_file(tmp_path):
    (tmp_path / "configs/benchmark").mkdir(parents=True)
    bench = tmp_path / "configs/benchmark/b.yaml"
    bench.write_text("perturbations: [none, nope]\n")
    with pytest.raises(StemobError, match="'nope'"):
        load_benchmark(bench)


def test_run_benchmark_evaluates_every_factor_on_the_same_seeds():
    seen = []
    results = run_benchmark(
        line_policy(), {}, {"none": None, "shifted": {"shift": 0.4}}, 4, progress=False,
        env_factory=factory(), on_result=lambda name, r: seen.append(name),
    )  # fmt: skip
    assert list(results) == seen == ["none", "shifted"]
    assert results["none"].seeds == results["shifted"].seeds
    assert results["shifted"].successes > results["none"].successes
    counts = run_benchmark(
        line_policy(), {}, {"none": None, "shifted": {"shift": 0.4}}, {"none": 3, "shifted": 1},
        progress=False, env_factory=factory(),
    )  # fmt: skip
    assert [r.episodes for r in counts.values()] == [3, 1]
    with pytest.raises(StemobError, match="shifted"):
        run_benchmark(line_policy(), {}, {"shifted": None}, {"none": 3}, progress=False)


def test_a_killed_benchmark_resumes_factor_by_factor(tmp_path):
    factors = {"none": None, "shifted": {"shift": 0.4}}
    made: list[float] = []

    def counting(env_args, perturbation):
        made.append((perturbation or {}).get("shift", 0.0))
        return LineEnv(shift=made[-1])

    def bench(episodes=4, key="a"):
        made.clear()
        return run_benchmark(line_policy(), {}, factors, episodes, progress=False,
                             env_factory=counting, resume_dir=tmp_path, resume_key={"policy": key})  # fmt: skip

    first = bench()
    assert set(made) == {0.0, 0.4}
    (tmp_path / "shifted.json").unlink()  # killed while evaluating `shifted`
    again = bench()
    assert set(made) == {0.4}  # only `shifted` ran again
    assert [outcomes(r) for r in again.values()] == [outcomes(r) for r in first.values()]
    (tmp_path / "none.json").write_text("{not json")
    bench()
    assert set(made) == {0.0}  # an unreadable saved factor is evaluated again
    bench(key="b")
    assert set(made) == {0.0, 0.4}  # another checkpoint: everything reruns
    bench(episodes=5, key="b")
    assert set(made) == {0.0, 0.4}  # another episode count too
    bench(episodes=5, key="b")
    assert made == []


def make_results(rates: dict[str, tuple[int, int]]) -> dict[str, FactorResult]:
    out = {}
    for name, (wins, n) in rates.items():
        records = [EpisodeRecord(i, BASE + i, i < wins, 10 + i) for i in range(n)]
        out[name] = FactorResult(name, records)
    return out


def test_write_report_holds_the_numbers(tmp_path):
    results = make_results({"none": (8, 10), "mo_color": (5, 10), "light_color": (2, 10)})
    results["light_color"].records.append(EpisodeRecord(10, BASE + 10, error="RuntimeError: x"))
    paths = write_report(results, tmp_path, "Lift", meta={"checkpoint": "ckpt"})
    data = json.loads(paths["json"].read_text())
    assert data["factors"]["none"]["successes"] == 8 and data["factors"]["none"]["rate"] == 0.8
    light = data["factors"]["light_color"]
    assert (light["episodes"], light["errors"], light["rate"]) == (11, 1, 0.2)
    assert light["stderr"] == pytest.approx(math.sqrt(0.2 * 0.8 / 10))
    assert light["mean_length"] == pytest.approx(14.5)
    mean = data["mean_over_perturbations"]
    assert mean["rate"] == pytest.approx(0.35) and mean["factors"] == ["mo_color", "light_color"]
    assert data["meta"] == {"checkpoint": "ckpt"}
    md = paths["markdown"].read_text()
    assert "| Train (none) | 0 no_variations | 80.0 ± 12.6 | 8 / 10 | 0 | 14.5 |" in md
    assert "| mo_color | 2 manip_obj_color |" in md  # Colosseum's numbered settings
    assert data["colosseum_settings"]["light_color"] == "8 light_color"
    assert "**35.0 ±" in md and "RuntimeError: x" in md
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))


def test_write_comparison_puts_methods_side_by_side(tmp_path):
    named = {
        "DP": make_results({"none": (9, 10), "mo_color": (3, 10)}),
        "DP + Stem-OB": make_results({"none": (9, 10), "mo_color": (7, 10)}),
    }
    paths = write_comparison(named, tmp_path, "Stem-OB vs baseline")
    md = paths["markdown"].read_text()
    assert "| setting | DP | DP + Stem-OB |" in md
    assert "| mo_color | 30.0 ± 14.5 | 70.0 ± 14.5 |" in md
    data = json.loads(paths["json"].read_text())
    assert data["methods"]["DP + Stem-OB"]["mean_over_perturbations"]["rate"] == 0.7
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_episode_limit_reads_each_backend_and_asks_otherwise():
    from stemob.evaluation.rollout import episode_limit

    assert episode_limit(LineEnv()) == 12  # tabletop style: env.task.max_episode_steps
    plain = LineEnv()
    plain.task = None
    plain.max_episode_steps = 30  # robosuite / RLBench style
    assert episode_limit(plain) == 30
    plain.max_episode_steps = None
    with pytest.raises(StemobError, match="max_steps"):
        episode_limit(plain)
    assert run(line_policy(), episodes=1, max_steps=3).records[0].length == 3
