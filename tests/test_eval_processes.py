"""Evaluation with environments in their own processes and across ranks: the same episodes as a
single process with in-process lockstep envs, for the same seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.subprocess_env import SubprocessEnv, SubprocessEnvError, parallel_calls
from stemob.errors import StemobError
from stemob.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tabletop_policy(tmp_path=None):
    """A randomly initialised small ACT on the 32 px lift_cube env (deterministic: z = 0)."""
    from envs.record import env_args_of
    from envs.tabletop.env import TabletopEnv
    from policies import make_policy
    from policies.act.config import small_config

    env = TabletopEnv("lift_cube", image_size=32, cameras=("front",))
    env_args = env_args_of(env)
    env.close()
    torch.manual_seed(0)
    shapes = {"front_image": [3, 32, 32], "eef_pos": [3]}
    cfg = small_config(shapes, 7, horizon=4, n_action_steps=4, temporal_ensemble_coeff=None)
    policy = make_policy("act", cfg, env_args=env_args)
    for p in policy.parameters():  # actions large enough to move the arm differently per seed
        p.data.mul_(3.0)
    return policy, env_args


class Watching:
    """Wraps a policy and keeps every observation batch it is given."""

    def __init__(self, policy):
        self.policy, self.seen = policy, []

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def predict_action(self, obs, **kwargs):
        self.seen.append({k: v.clone() for k, v in obs.items()})
        return self.policy.predict_action(obs, **kwargs)


def outcomes(result):
    return [(r.seed, r.success, r.length, r.error) for r in result.records]


def test_subprocess_envs_give_the_same_episodes_as_in_process_lockstep():
    policy, env_args = tabletop_policy()
    runs = {}
    for processes in (False, True):
        watched = Watching(policy)
        result = evaluate(
            watched, env_args, None, 3, n_envs=2, max_steps=6, progress=False,
            env_processes=processes,
        )  # fmt: skip
        runs[processes] = (outcomes(result), watched.seen)
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 3
    assert len(runs[True][1]) == len(runs[False][1]) > 1
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    eef = torch.cat([b["eef_pos"] for b in runs[True][1]])
    assert eef.std(0).max() > 1e-4  # the arm moved: the comparison is not of still frames


def test_subprocess_env_reports_the_childs_errors_and_refuses_lambdas():
    from envs.record import make_env_from_args

    _, env_args = tabletop_policy()
    env = SubprocessEnv(make_env_from_args, env_args)
    obs, info = env.reset(seed=3)
    assert obs["front_image"].shape == (32, 32, 3) and env.max_episode_steps > 0
    with pytest.raises(
        SubprocessEnvError, match=r"action must have shape \(7,\), got \(3,\).*in the env process"
    ):
        env.step(np.zeros(3))
    answers = parallel_calls([env], [(0, "step", (np.zeros(7, np.float32),), {})])
    assert answers[0][0] is True  # the child is still up after an error
    env.close()
    with pytest.raises(StemobError, match="picklable"):
        SubprocessEnv(lambda: None)
    broken = SubprocessEnv(make_env_from_args, {"type": "nope"})
    with pytest.raises(SubprocessEnvError, match="env_args type 'nope'"):
        broken.reset(seed=0)
    broken.close()


def test_rlbench_envs_run_one_per_process_by_default():
    """PyRep allows one simulator per process: envs=2 on RLBench must not build two in this
    process (the fake refuses it, as the adapter does); each child installs its own fake."""
    from envs.rlbench import RLBenchEnv
    from envs.rlbench.testing import fake_env_factory, fake_rlbench
    from policies.base import Policy, PolicyConfig

    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, max_episode_steps=15)
        env_args = env.env_args
        env.close()

    class ToOpen(Policy):  # drive joint 0 to 1.2 rad: the fake's success after 11 steps
        name = "to_open"

        def predict_chunk(self, obs, **kwargs):
            target = torch.zeros(obs["joint_positions"].shape[0], 1, 8)
            target[..., 0], target[..., 7] = 1.2, 1.0
            return target

    policy = ToOpen(PolicyConfig(
        obs_shapes={"front_image": [3, 16, 16], "joint_positions": [7]}, action_dim=8,
        n_obs_steps=1, horizon=1, n_action_steps=1,
    ))  # fmt: skip
    result = evaluate(
        policy, env_args, None, 3, n_envs=2, progress=False, env_factory=fake_env_factory
    )
    assert [(r.success, r.length, r.error) for r in result.records] == [(True, 11, None)] * 3
    with fake_rlbench(colosseum=False), pytest.raises(StemobError, match="one CoppeliaSim"):
        evaluate(policy, env_args, None, 2, n_envs=2, progress=False, env_processes=False,
                 env_factory=fake_env_factory)  # fmt: skip


@pytest.mark.slow
def test_sharded_evaluation_merges_to_the_single_process_report(tmp_path):
    """accelerate launch --cpu --num_processes 2 eval.py: the same records as one process."""
    policy, _ = tabletop_policy()
    checkpoint = policy.save(tmp_path / "policy")
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    args = [
        f"checkpoint={checkpoint}", "benchmark.perturbations=[none,light_color]", "episodes=5",
        "envs=2", "videos=5", "max_steps=6", "logger.name=none", "threads=1",
    ]  # fmt: skip
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    subprocess.run([sys.executable, "eval.py", *args, f"output_dir={single}"], cwd=REPO,
                   env=env, check=True, capture_output=True)  # fmt: skip
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    subprocess.run([*launch, "eval.py", *args, f"output_dir={sharded}"], cwd=REPO, env=env,
                   check=True, capture_output=True)  # fmt: skip
    a = json.loads((single / "results.json").read_text())
    b = json.loads((sharded / "results.json").read_text())
    for factor in ("none", "light_color"):
        keep = ("index", "seed", "success", "length", "reward", "error")
        ra = [{k: r[k] for k in keep} for r in a["records"][factor]]
        rb = [{k: r[k] for k in keep} for r in b["records"][factor]]
        assert ra == rb and len(ra) == 5
    for factor, summary in a["factors"].items():  # all but the time and the video folders
        drop = ("wall_s", "videos")
        assert {k: v for k, v in summary.items() if k not in drop} == {
            k: v for k, v in b["factors"][factor].items() if k not in drop
        }
    assert sorted(p.name for p in (sharded / "factors").iterdir()) == [
        "light_color.json",
        "none.json",
    ]
    # every episode's video (episodes 2-3 ran on rank 1): the same frames, so the same files
    videos = sorted((sharded / "videos").rglob("*.mp4"))
    assert len(videos) == 10
    for video in videos:
        twin = single / video.relative_to(sharded)
        assert video.read_bytes() == twin.read_bytes(), video.name
