"""GENIMA's controller: ACT's binary gripper dimension, oracle targets from the scripted expert,
and the train.py -> eval.py path (dataset=genima, policy=genima_controller, genima_oracle)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from stemob.errors import StemobError

os.environ.setdefault("MUJOCO_GL", "egl")

TINY_ACT = {"hidden_dim": 16, "dim_feedforward": 32, "n_heads": 2, "latent_dim": 4, "cnn_width": 8}


def _tiny_act(**overrides):
    from policies.act.config import small_config
    from policies.act.policy import ACTPolicy

    config = small_config(
        {"front_target": [3, 32, 32], "joint_positions": [7]}, 8, horizon=4, n_action_steps=4,
        temporal_ensemble_coeff=None, **{**TINY_ACT, **overrides},
    )  # fmt: skip
    stats = {
        "action": {"min": [-1.0] * 7 + [-1.0], "max": [1.0] * 7 + [1.0],
                   "mean": [0.0] * 8, "std": [1.0] * 8},
        "joint_positions": {"min": [-1.0] * 7, "max": [1.0] * 7, "mean": [0.0] * 7,
                            "std": [1.0] * 7},
    }  # fmt: skip
    return ACTPolicy(config, stats=stats)


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(0)
    action = torch.rand(b, 4, 8, generator=g) * 2 - 1
    action[..., 7] = torch.where(action[..., 7] > 0, 1.0, -1.0)
    obs = {
        "front_target": torch.randint(0, 255, (b, 1, 3, 32, 32), dtype=torch.uint8, generator=g),
        "joint_positions": torch.rand(b, 1, 7, generator=g),
    }
    return {"obs": obs, "action": action, "action_is_pad": torch.zeros(b, 4, dtype=torch.bool)}


def test_binary_gripper_is_a_logit_trained_with_bce_and_output_as_min_or_max():
    torch.manual_seed(0)
    policy = _tiny_act(binary_action_dims=[7])
    batch = _batch()
    loss, logs = policy.compute_loss(batch)
    assert "bce" in logs and logs["bce"] > 0
    optimiser = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = logs["bce"]
    for _ in range(200):  # the gripper's logits learn the batch's open / closed pattern
        loss, logs = policy.compute_loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert logs["bce"] < first / 3
    policy.eval()
    chunk = policy.predict_chunk(batch["obs"])
    assert set(chunk[..., 7].unique().tolist()) <= {-1.0, 1.0}
    agree = (chunk[..., 7] == batch["action"][..., 7]).float().mean()
    assert agree > 0.9
    assert not set(chunk[..., :7].flatten().tolist()) <= {-1.0, 1.0}  # the joints are regressed


def test_binary_dims_outside_the_action_are_refused():
    with pytest.raises(StemobError, match=r"binary_action_dims \[8\]"):
        _tiny_act(binary_action_dims=[8])


@pytest.fixture(scope="module")
def joint_demos(tmp_path_factory):
    from envs.record import record

    out = tmp_path_factory.mktemp("genima_ctrl") / "lift_joint.hdf5"
    record("lift_cube", 4, out, image_size=32, action_mode="joint_position", progress=False,
           valid_fraction=0.25)  # fmt: skip
    return out


def _env(action_mode: str = "joint_position"):
    from envs.tabletop.env import TabletopEnv

    return TabletopEnv("lift_cube", image_size=32, action_mode=action_mode)


def test_oracle_draws_the_pose_the_expert_reaches_horizon_steps_later_and_restores_the_state():
    from envs.record import run_episode
    from stemob.evaluation.genima_oracle import OracleTargets

    horizon = 10
    recorded, _ = run_episode(_env(), seed=3)
    env = OracleTargets(_env(), horizon=horizon)
    obs, _ = env.reset(seed=3)
    # the recorded episode's obs at step 0 is the state the lookahead started from ...
    np.testing.assert_array_equal(obs["front_image"], recorded.obs["front_image"][0])
    assert not np.array_equal(obs["front_target"], obs["front_image"])  # spheres drawn
    pose = env.target_pose  # ... and the expert's pose `horizon` steps on is the recorded one
    np.testing.assert_allclose(
        pose["joint_world_pos"], recorded.extras["joint_world_pos"][horizon], atol=1e-9
    )
    np.testing.assert_allclose(
        pose["gripper_world_pos"], recorded.extras["gripper_world_pos"][horizon], atol=1e-9
    )
    # following the recorded actions through the wrapper reproduces the recording (state restored)
    for t in range(2 * horizon):
        obs, *_ = env.step(recorded.actions[t])
        np.testing.assert_array_equal(obs["front_image"], recorded.obs["front_image"][t + 1])
    env.close()


def test_oracle_texture_background_shows_the_spheres_on_a_random_texture():
    """``genima_oracle.background=texture``: the same spheres, the frame behind them replaced by a
    texture (as in the controller's training inputs), the same one for the same reset seed."""
    from stemob.evaluation.genima_oracle import OracleTargets

    plain, _ = OracleTargets(_env(), horizon=5).reset(seed=3)
    env = OracleTargets(_env(), horizon=5, background="texture")
    obs, _ = env.reset(seed=3)
    for cam in ("front", "wrist"):
        spheres = np.any(plain[f"{cam}_target"] != plain[f"{cam}_image"], axis=-1)
        assert spheres.any()
        view = obs[f"{cam}_target"]
        assert np.mean(view[~spheres] != obs[f"{cam}_image"][~spheres]) > 0.5  # the scene is gone
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(again["front_target"], obs["front_target"])
    other, _ = env.reset(seed=4)
    assert not np.array_equal(other["front_target"], obs["front_target"])
    with pytest.raises(StemobError, match="genima_oracle.background: expected one of"):
        OracleTargets(_env(), background="none")
    from stemob.evaluation.suite import target_factory

    factory = target_factory("unused", 20, None, 20, "texture")  # eval.py's genima_oracle section
    assert factory.describe()["background"] == "texture"  # a resumed evaluation must match it
    assert "background" not in target_factory("unused", 20, None, 20).describe()


def test_the_controller_runs_as_many_actions_as_the_targets_horizon():
    """Between drawings the controller executes ``horizon`` actions of its chunk: a shorter
    horizon shortens the executed chunk (else redrawing would change nothing), a longer one than
    the chunk is refused by name, an explicit ``n_action_steps`` override is kept."""
    from stemob.evaluation.genima_drawn import DrawnEnvFactory
    from stemob.evaluation.suite import chunk_overrides

    config = _tiny_act().config  # chunks of 4, all executed
    every = {h: DrawnEnvFactory("unused", horizon=h) for h in (3, 4, 5)}
    assert chunk_overrides(config, {}, None, "genima_agent") == {}  # not a GENIMA evaluation
    assert chunk_overrides(config, {}, every[4], "genima_agent") == {}  # already matching
    assert chunk_overrides(config, {"inference_dtype": "float32"}, every[3], "genima_agent") == {
        "inference_dtype": "float32", "n_action_steps": 3
    }  # fmt: skip
    assert chunk_overrides(config, {"n_action_steps": 2}, every[3], "x") == {"n_action_steps": 2}
    with pytest.raises(StemobError, match=r"genima_agent.horizon=5: .* chunks of 4 actions"):
        chunk_overrides(config, {}, every[5], "genima_agent")


def test_oracle_refuses_an_end_effector_env():
    from stemob.evaluation.genima_oracle import OracleTargets

    with pytest.raises(StemobError, match="action_mode=joint_position"):
        OracleTargets(_env("ee_delta"))


def test_controller_trains_on_a_genima_dataset_and_evaluates_on_oracle_targets(
    joint_demos, tmp_path, one_torch_thread
):
    from stemob.evaluation.suite import evaluate_from_config
    from stemob.training.run import train
    from tests.test_training import compose

    cfg = compose(
        [
            "task=lift_cube_joint",
            "dataset=genima",
            "policy=genima_controller",
            *[f"policy.config.{k}={v}" for k, v in TINY_ACT.items()],
            "stemob=none",
            "training=smoke",
            "logger=none",
            "task.env_args.env_kwargs.image_size=32",
            f"dataset.path={joint_demos}",
            "dataset.val_ratio=0.25",
            "dataset.genima.horizon=5",
            f"run_dir={tmp_path / 'run'}",
            "evaluation.enabled=false",
        ]
    )  # fmt: skip
    from stemob.evaluation.suite import make_evaluator

    run = train(cfg, evaluator_factory=make_evaluator)  # as train.py: final clean rollouts
    assert json.loads((run / "checkpoints" / "best.json").read_text())  # on oracle targets
    built = list(joint_demos.parent.glob("lift_joint.genima-*.hdf5"))
    assert len(built) == 1  # built beside the source on first use
    saved = json.loads(next((run / "checkpoints").glob("step_*/policy/config.json")).read_text())
    assert set(saved["config"]["obs_shapes"]) == {
        "front_target", "wrist_target", "joint_positions", "gripper_open"
    }  # fmt: skip
    assert saved["config"]["binary_action_dims"] == [7]
    eval_cfg = compose(
        [
            f"checkpoint={run}",
            "perturbation=light_color",
            "episodes=2",
            "envs=2",
            "videos=1",
            "logger.name=none",
            "genima_oracle.horizon=5",
            f"output_dir={tmp_path}/eval",
        ],
        config_name="eval",
    )
    out = evaluate_from_config(eval_cfg)
    result = json.loads((out / "results.json").read_text())["factors"]["light_color"]
    assert result["completed"] == 2 and result["errors"] == 0
    with pytest.raises(StemobError, match="front_target"):  # without oracle targets: named key
        evaluate_from_config({**eval_cfg, "genima_oracle": {"horizon": None},
                              "output_dir": str(tmp_path / "eval2")})  # fmt: skip
    # the closed loop: a (barely trained) drawer draws the targets the controller follows
    from stemob.evaluation.genima_drawn import DrawnEnvFactory, drawer_layout
    from stemob.training.genima_drawer import run as drawer_cli

    drawer = tmp_path / "drawer"
    drawer_cli(["train", "--dataset", str(built[0]), "--out", str(drawer), "--steps", "2",
                "--batch", "2", "--held-out", "1"])  # fmt: skip
    assert drawer_layout(drawer) == (["front", "wrist"], (1, 2))
    closed = evaluate_from_config({**eval_cfg, "genima_oracle": {"horizon": None},
                                   "genima_agent": {"drawer": str(drawer), "horizon": 5},
                                   "output_dir": str(tmp_path / "eval3")})  # fmt: skip
    result = json.loads((closed / "results.json").read_text())["factors"]["light_color"]
    assert result["completed"] == 2 and result["errors"] == 0
    env = DrawnEnvFactory(str(drawer), horizon=5)(json.loads(saved_env_args(run)), None)
    obs, _ = env.reset(seed=1)
    assert obs["front_target"].shape == obs["front_image"].shape and len(env.drawing_ms) == 1
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    assert len(env.drawing_ms) == 2  # redrawn every horizon steps
    env.close()
    with pytest.raises(StemobError, match="choose one target source"):
        evaluate_from_config({**eval_cfg, "genima_agent": {"drawer": str(drawer)},
                              "output_dir": str(tmp_path / "eval4")})  # fmt: skip
    # the drawer scored under each factor, on the held-out demo re-recorded under it
    import h5py

    from stemob.evaluation.genima_spheres import held_out_demos, record_targets
    from stemob.evaluation.rollout import default_env_factory

    demos = held_out_demos(built[0], 1)
    env = default_env_factory(demos.env_args, None)
    observations, truth = record_targets(env, demos, demos.seeds[0])
    env.close()
    with h5py.File(built[0], "r") as h5:  # clean: the dataset's own held-out frames
        last = h5["data"][sorted(h5["data"])[-1]]["obs"]
        assert np.array_equal(observations, last["tiled_rgb"][()])
        assert np.array_equal(truth, last["tiled_target"][()])
    from stemob.evaluation.genima_spheres import run as scoring_cli

    scores = scoring_cli(["score", "--checkpoint", str(drawer), "--dataset", str(built[0]),
                         "--benchmark", "quick", "--held-out", "1", "--frames", "4",
                         "--figure", str(tmp_path / "factors.png")])  # fmt: skip
    factors = scores["factors"]
    assert list(factors) == ["none", "light_color", "table_color", "mo_color"]
    assert factors["none"]["spheres"] > 0 and factors["none"]["frames"] == 4
    assert {f["spheres"] for f in factors.values()} == {factors["none"]["spheres"]}  # same poses
    assert (tmp_path / "factors.png").is_file()
    with pytest.raises(StemobError, match="benchmark file"):
        scoring_cli(["score", "--checkpoint", str(drawer), "--dataset", str(built[0]),
                    "--benchmark", "no_such_benchmark"])  # fmt: skip
    with pytest.raises(StemobError, match="stemob.evaluation.genima_spheres"):
        drawer_cli(["score", "--checkpoint", str(drawer), "--dataset", str(built[0]),
                    "--benchmark", "quick"])  # fmt: skip


def saved_env_args(run) -> str:
    """The env_args stored in a run's policy checkpoint (JSON)."""
    config = json.loads(next((run / "checkpoints").glob("step_*/policy/config.json")).read_text())
    return json.dumps(config["env_args"])


def test_policy_genima_trains_both_stages_and_runs_closed_loop_in_eval_and_the_runner(
    joint_demos, tmp_path, one_torch_thread
):
    """`train.py policy=genima`: the controller, then the drawer in <run>/drawer (resumable);
    the final evaluation, eval.py and PolicyRunner find the drawer and draw the targets."""
    from stemob.deploy import PolicyRunner
    from stemob.evaluation.rollout import video_frame
    from stemob.evaluation.suite import after_training, evaluate_from_config
    from stemob.training.run import train
    from tests.test_training import compose

    overrides = [
        "task=lift_cube_joint", "dataset=genima", "policy=genima",
        *[f"policy.config.{k}={v}" for k, v in TINY_ACT.items()],
        "policy.drawer.steps=2", "policy.drawer.batch=2", "policy.drawer.held_out=1",
        "stemob=none", "training=smoke", "logger=none", "task.env_args.env_kwargs.image_size=32",
        f"dataset.path={joint_demos}", "dataset.val_ratio=0.25", "dataset.genima.horizon=5",
        f"run_dir={tmp_path / 'run'}", "evaluation.episodes=2", "evaluation.perturbation_episodes=1",
        "evaluation.envs=1", "evaluation.videos=0", "benchmark.perturbations=[none]",
    ]  # fmt: skip
    with pytest.raises(StemobError, match="dataset=genima"):
        train(compose([o for o in overrides if not o.startswith(("dataset=", "dataset.genima"))]))
    cfg = compose(overrides)
    run = train(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["drawer"] == str(run / "drawer" / "latest")
    assert (run / "drawer" / "latest" / "train_state.pt").is_file()
    train({**cfg, "resume": True})  # both stages finished: nothing retrained, no error
    final = after_training(cfg, run)  # drawn targets, not the expert's
    assert json.loads((final / "results.json").read_text())["factors"]["none"]["errors"] == 0
    eval_cfg = compose([f"checkpoint={run}", "perturbation=light_color", "episodes=1", "envs=1",
                        "videos=1", "logger.name=none", "genima_agent.horizon=5",
                        f"output_dir={tmp_path}/eval"], config_name="eval")  # fmt: skip
    result = json.loads((evaluate_from_config(eval_cfg) / "results.json").read_text())
    assert result["factors"]["light_color"]["completed"] == 1
    assert result["factors"]["light_color"]["errors"] == 0
    assert list((tmp_path / "eval").rglob("*.mp4"))  # observation | drawn target
    frame = np.zeros((32, 32, 3), np.uint8)
    assert video_frame({"front_image": frame, "front_target": frame}, "front_target").shape == (
        32, 64, 3
    )  # fmt: skip
    runner = PolicyRunner.from_checkpoint(run)
    assert runner.painter is not None and runner.painter.cameras == ["front", "wrist"]
    env = _env()
    obs, _ = env.reset(seed=3)
    images = {k: obs[k] for k in ("front_image", "wrist_image")}
    state = {k: obs[k] for k in ("joint_positions", "gripper_open")}
    runner.reset(episode=3)
    actions = runner.act(images, state)
    assert actions.shape == (20, 8) and len(runner.painter.drawing_ms) == 1
    runner.observe(images, state)  # between decisions: the last drawing is kept
    assert len(runner.painter.drawing_ms) == 1 and runner.latency["last_drawing_ms"] > 0
    with pytest.raises(StemobError, match="wrist_image"):
        runner.act({"front_image": images["front_image"]}, state)
    env.close()
    # the same agent on the RLBench backend (its fake: envs/rlbench/testing.py), joint positions
    from envs.rlbench.testing import fake_rlbench
    from policies import load_policy
    from stemob.evaluation.genima_drawn import DrawnEnvFactory
    from stemob.evaluation.rollout import evaluate

    env_args = {"env_name": "rlbench/open_drawer", "type": "stemob_rlbench",
                "env_kwargs": {"cameras": ["front", "wrist"], "image_size": 32}}  # fmt: skip
    with fake_rlbench(colosseum=False) as fake:
        rlbench = evaluate(load_policy(run), env_args, episodes=1, max_steps=12, progress=False,
                           env_processes=False,  # the fake lives in this process
                           env_factory=DrawnEnvFactory(str(run / "drawer"), horizon=5))  # fmt: skip
        assert fake.launched  # the fake simulator ran the episode
    assert rlbench.completed == 1 and rlbench.errors == 0 and rlbench.records[0].length == 12
