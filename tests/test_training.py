"""Training runs end to end on tiny configs: artefacts, exact resume, errors, accelerate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stemob.errors import StemobError

REPO = Path(__file__).resolve().parents[1]
TINY_POLICY = [
    "policy=diffusion_small",
    "policy.config.down_dims=[8,16]",
    "policy.config.cnn_width=8",
    "policy.config.num_keypoints=4",
    "policy.config.image_feature_dim=8",
    "policy.config.step_embed_dim=16",
]


def compose(overrides: list[str], config_name: str = "train") -> dict:
    """The composed run config as train.py would see it (hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Four recorded lift_cube demos at 32 px (front + wrist)."""
    from envs.record import record

    path = tmp_path_factory.mktemp("data") / "lift.hdf5"
    record("lift_cube", 4, path, image_size=32, progress=False, valid_fraction=0.25)
    return path


def run_config(demos: Path, run_dir: Path, *extra: str) -> dict:
    return compose(
        [
            *TINY_POLICY,
            "training=smoke",
            "logger=none",
            "task.env_args.env_kwargs.image_size=32",
            f"dataset.path={demos}",
            "dataset.val_ratio=0.25",
            f"run_dir={run_dir}",
            "evaluation.enabled=false",
            *extra,
        ]
    )


def test_run_writes_config_log_checkpoints_and_grid(demos, tmp_path, one_torch_thread):
    from stemob.training.loggers import read_log
    from stemob.training.run import train

    run = train(run_config(demos, tmp_path / "run", "logger=wandb"))
    assert (run / "config.yaml").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [
        "step_0000002",
        "step_0000004",
    ]
    policy_dir = run / "checkpoints" / "step_0000004" / "policy"
    assert {"config.json", "normalization.json", "model.safetensors"} <= {
        p.name for p in policy_dir.iterdir()
    }
    records = read_log(run)
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert any("val/loss" in r for r in records)
    assert any("time/forward_backward_ms" in r for r in records)
    assert (run / "observations.png").is_file()  # original above inverted frames
    assert list((run / "wandb").glob("offline-run-*"))
    from policies.base import load_policy

    policy = load_policy(policy_dir)
    assert policy.stemob["mode"] == "ddpm" and policy.env_args["type"] == "stemob_tabletop"


def test_resume_after_interruption_matches_uninterrupted_run(demos, tmp_path, one_torch_thread):
    from stemob.training.run import train

    extra = ("training.steps=6", "training.checkpoint_every=3", "training.val_every=0")
    full = train(run_config(demos, tmp_path / "full", *extra))
    cut_cfg = run_config(demos, tmp_path / "cut", *extra)
    train(cut_cfg, stop_at=3)  # as if killed right after the step-3 checkpoint
    assert not (tmp_path / "cut" / "checkpoints" / "step_0000006").exists()
    resumed = train({**cut_cfg, "resume": True})
    for name in ("model.safetensors",):
        a = load_file(full / "checkpoints" / "step_0000006" / "policy" / name)
        b = load_file(resumed / "checkpoints" / "step_0000006" / "policy" / name)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    state_a = torch.load(full / "checkpoints/step_0000006/train_state.pt", weights_only=True)
    state_b = torch.load(resumed / "checkpoints/step_0000006/train_state.pt", weights_only=True)
    for key in state_a["model"]:
        torch.testing.assert_close(state_a["model"][key], state_b["model"][key], rtol=0, atol=0)
    assert state_a["data"] == state_b["data"]


def test_existing_run_without_resume_and_changed_settings_are_refused(demos, tmp_path):
    from stemob.training.run import train

    cfg = run_config(demos, tmp_path / "run", "training.steps=2", "training.val_every=0")
    train(cfg, stop_at=2)
    with pytest.raises(StemobError, match="resume=true"):
        train(cfg)
    changed = run_config(demos, tmp_path / "run", "stemob=none", "training.steps=2")
    with pytest.raises(StemobError, match="stemob"):
        train({**changed, "resume": True})


def test_dataset_keys_that_do_not_exist_fail_before_training(demos, tmp_path):
    from stemob.training.run import train

    cfg = run_config(demos, tmp_path / "run", "task.obs_keys=[overhead_image,eef_pos]")
    with pytest.raises(StemobError, match="overhead_image"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_unknown_group_option_or_key_is_one_clear_error(tmp_path):
    bad_group = _cli(sys.executable, "train.py", "policy=nonexistent", f"run_dir={tmp_path}/a")
    assert bad_group.returncode != 0
    assert "nonexistent" in bad_group.stderr and "policy" in bad_group.stderr
    bad_key = _cli(sys.executable, "train.py", "training.stepz=3", f"run_dir={tmp_path}/b")
    assert bad_key.returncode != 0 and "stepz" in bad_key.stderr


@pytest.mark.slow
def test_accelerate_two_cpu_processes_train_and_checkpoint(demos, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    overrides = [
        *TINY_POLICY,
        "training=smoke",
        "logger=none",
        "task.env_args.env_kwargs.image_size=32",
        f"dataset.path={demos}",
        "dataset.val_ratio=0.25",
        f"run_dir={tmp_path}/ddp",
        "evaluation.enabled=false",
    ]
    result = _cli(
        str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "train.py", *overrides,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "checkpoints" / "step_0000004" / "policy").is_dir()
    assert len(list((tmp_path / "ddp" / "checkpoints").glob(".tmp*"))) == 0


@pytest.mark.slow
def test_end_to_end_record_invert_train_resume_evaluate(tmp_path, one_torch_thread, monkeypatch):
    """The issue's tiny run: 2 demos recorded on the fly, inverted, trained, resumed, then
    evaluated on 2 factors by eval.py's code (single report and comparison mode)."""
    from stemob.evaluation.suite import after_training, evaluate_from_config
    from stemob.training.run import train

    cfg = compose(
        [
            *TINY_POLICY,
            "training=smoke",
            "logger=wandb",
            "task.env_args.env_kwargs.image_size=32",
            "task.demos.episodes=2",
            f"dataset.path={tmp_path}/data/demos.hdf5",
            "dataset.val_ratio=0",
            f"run_dir={tmp_path}/run",
            "evaluation.episodes=2",
            "evaluation.perturbation_episodes=2",
            "evaluation.envs=2",
            "evaluation.videos=1",
            "benchmark.perturbations=[none,light_color]",
        ]
    )
    train(cfg, stop_at=2)
    run = train({**cfg, "resume": True})
    assert (tmp_path / "data" / "demos.hdf5").is_file()
    assert list((tmp_path / "data").glob("demos.stemob-*.hdf5"))  # the Stem-OB cache
    final = after_training(cfg, run)
    report = json.loads((final / "results.json").read_text())
    assert set(report["factors"]) == {"none", "light_color"}
    for factor in report["factors"].values():
        assert factor["episodes"] == 2 and 0.0 <= factor["rate"] <= 1.0
    assert (final / "results.md").is_file() and (final / "results.png").is_file()
    assert list(final.rglob("*.mp4"))
    # a rerun on the same checkpoint (e.g. after a kill) reuses every finished factor
    import stemob.evaluation.benchmark as benchmark

    def no_rollouts(*args, **kwargs):
        raise AssertionError("a finished factor was evaluated again")

    with monkeypatch.context() as patch:
        patch.setattr(benchmark, "evaluate", no_rollouts)
        again = json.loads((after_training(cfg, run) / "results.json").read_text())
    assert again["factors"] == report["factors"]

    eval_cfg = compose(
        [
            f"checkpoint=[{run},{run}/checkpoints/step_0000002]",
            "names=[final,early]",
            "perturbation=light_color",
            "episodes=2",
            "envs=2",
            "videos=0",
            "logger.name=none",
            f"output_dir={tmp_path}/eval",
        ],
        config_name="eval",
    )
    assert eval_cfg["perturbation"]["env"]["scene"]["factors"][0]["name"] == "light_color"
    out = evaluate_from_config(eval_cfg)
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()
    for name in ("final", "early"):
        data = json.loads((out / name / "results.json").read_text())
        assert list(data["factors"]) == ["light_color"]
    # inference-only policy fields can be overridden from eval.py; the report records them
    steps_cfg = compose(
        [
            f"checkpoint={run}",
            "perturbation=light_color",
            "episodes=2",
            "envs=2",
            "videos=0",
            "logger.name=none",
            "policy_overrides={num_inference_steps:2}",
            f"output_dir={tmp_path}/eval_steps",
        ],
        config_name="eval",
    )
    data = json.loads((evaluate_from_config(steps_cfg) / "results.json").read_text())
    assert json.loads(data["meta"]["policy_overrides"]) == {"num_inference_steps": 2}
    with pytest.raises(StemobError, match="cannot be overridden"):
        evaluate_from_config({**steps_cfg, "policy_overrides": {"down_dims": [8]}})


def test_a_dataset_without_env_args_takes_the_tasks(demos):
    """RLBench folders store no env_args: the task config's go into the checkpoint."""
    from stemob.training.prepare import build_dataset, build_policy

    cfg = run_config(demos, Path("unused"), "stemob=none")
    data = build_dataset(cfg["dataset"], cfg["policy"], None)
    assert data.env_args["type"] == "stemob_tabletop"  # robomimic files store them
    data.env_args = None
    fallback = {"env_name": "rlbench/open_drawer", "type": "stemob_rlbench", "env_kwargs": {}}
    policy = build_policy(cfg["policy"], data, None, fallback)
    assert policy.env_args == fallback


def test_latent_inputs_train_evaluate_and_deploy(demos, tmp_path, one_torch_thread):
    """dataset.stemob_latents: the cache is built with latents, the policy reads (C, h, w) maps of
    the same values as the cache, and evaluation and the deploy runner invert to latents."""
    import shutil

    import h5py
    import numpy as np

    from policies.base import load_policy
    from stemob.deploy import PolicyRunner
    from stemob.evaluation.rollout import evaluate
    from stemob.inversion.dataset_cache import CacheMismatchError, build_cache
    from stemob.inversion.settings import InversionSettings
    from stemob.training.prepare import build_dataset
    from stemob.training.run import train

    extra = (f"dataset.cache_dir={tmp_path}/cache", "training.steps=2", "training.val_every=0")
    cfg = run_config(demos, tmp_path / "run", "dataset.stemob_latents=true", *extra)
    run = train(cfg)
    policy = load_policy(run / "checkpoints" / "step_0000002" / "policy")
    assert sorted(policy.config.latent_keys) == ["front_image", "wrist_image"]
    assert policy.config.obs_shapes["front_image"] == [4, 8, 8]  # the prior's 4x VAE at 32 px
    data = build_dataset(cfg["dataset"], cfg["policy"], InversionSettings(**cfg["stemob"]))
    batch = data[[0, 1]]
    assert batch["obs"]["front_image"].dtype == torch.float32
    assert tuple(batch["obs"]["front_image"].shape) == (2, 2, 4, 8, 8)
    with h5py.File(data.cache_path, "r") as cache:
        first = cache["data"][data.episode_names[0]]["latents"]["front_image"][0]
    np.testing.assert_array_equal(data.arrays["front_image"][0], first)
    index = data.sampler.windows([0]).obs_index[0]
    expected = data.arrays["front_image"][index].astype(np.float32)
    np.testing.assert_array_equal(batch["obs"]["front_image"][0].numpy(), expected)
    assert len(data.stats["front_image"].mean) == 4

    result = evaluate(policy, episodes=1, max_steps=4, progress=False)
    assert result.records[0].error is None, result.records[0].error
    assert result.records[0].length == 4
    runner = PolicyRunner(policy)
    frame = np.zeros((32, 32, 3), np.uint8)
    state = {k: np.zeros(policy.config.obs_shapes[k], np.float32) for k in runner.state_keys}
    actions = runner.act({"front_image": frame, "wrist_image": frame}, state)
    assert actions.shape[1] == policy.config.action_dim and np.isfinite(actions).all()

    # a damaged latent cache (a copy) is named, never half-read
    second = data.episode_names[1]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    shutil.copy(data.cache_path, damaged / data.cache_path.name)
    dataset_cfg = {**cfg["dataset"], "cache_dir": str(damaged)}
    with h5py.File(damaged / data.cache_path.name, "r+") as cache:
        latents = cache["data"][second]["latents"]
        shape = latents["front_image"].shape
        del latents["front_image"]
    with pytest.raises(StemobError, match=f"{second}.*latents of 'front_image' are missing"):
        build_dataset(dataset_cfg, cfg["policy"], InversionSettings(**cfg["stemob"]))
    with h5py.File(damaged / data.cache_path.name, "r+") as cache:
        cache["data"][second]["latents"]["front_image"] = np.zeros((shape[0], 4, 4, 4), np.float16)
    with pytest.raises(StemobError, match=r"have shape .*expected \(\d+, 4, 8, 8\)"):
        build_dataset(dataset_cfg, cfg["policy"], InversionSettings(**cfg["stemob"]))

    # a cache built without latents is never reused for a run that needs them
    settings = InversionSettings(**cfg["stemob"])
    build_cache(demos, settings, cache_dir=tmp_path / "rgb_cache", progress=False)
    with pytest.raises(CacheMismatchError, match="without latents"):
        build_cache(demos, settings, cache_dir=tmp_path / "rgb_cache", store_latents=True)
    rgb_only = {**cfg["dataset"], "cache_dir": str(tmp_path / "rgb_cache")}
    with pytest.raises(CacheMismatchError, match="without latents"):
        build_dataset(rgb_only, cfg["policy"], settings)


def test_resume_accepts_options_added_since_the_run_was_saved_only_while_off():
    from stemob.training.run import _same_section

    saved = {"path": "d.hdf5", "stemob_keys": None}
    assert _same_section(saved, {**saved, "stemob_latents": False})
    assert _same_section(saved, {**saved, "new_option": None})
    assert not _same_section(saved, {**saved, "stemob_latents": True})
    assert not _same_section(saved, {**saved, "count": 0})
    assert not _same_section({**saved, "gone": 1}, saved)
    assert not _same_section(saved, {**saved, "path": "other.hdf5"})
    assert _same_section(saved, {**saved, "stemob_draws": 1})  # numeric options off at default
    assert not _same_section(saved, {**saved, "stemob_draws": 4})
    assert _same_section({"drawer": {"steps": 2}}, {"drawer": {"steps": 2, "shift": 0}})
