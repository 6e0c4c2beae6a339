"""robosuite scripted experts (envs/robosuite/experts.py) and their recordings: robomimic files
whose actions replay to success in a rebuilt env, train.py's automatic recording for
``task=robosuite_lift`` / ``task=robosuite_stack``, and the combined perturbation of the robosuite benchmark.

Skipped where the ``robosuite`` extra is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

pytest.importorskip("robosuite")

from envs.record import make_env_from_args, record, run_episode  # noqa: E402
from envs.robosuite.experts import default_env_args, make_expert  # noqa: E402
from stemob.data.robomimic import stemob_attrs  # noqa: E402
from stemob.errors import StemobError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_lift_demos_are_robomimic_files_whose_actions_replay_to_success(tmp_path):
    out = tmp_path / "lift.hdf5"
    report = record("robosuite/Lift", 2, out, image_size=32, progress=False)
    assert report["kept"] == 2 and report["success_rate"] == 1.0
    with h5py.File(out) as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        assert env_args["env_name"] == "Lift" and env_args["type"] == 1
        controller = env_args["env_kwargs"][
            "controller_configs"
        ]  # robosuite's default, written out
        assert (
            controller["type"] == "BASIC"
            and controller["body_parts"]["right"]["type"] == "OSC_POSE"
        )
        assert env_args["env_kwargs"]["camera_names"] == ["agentview", "robot0_eye_in_hand"]
        demo = f["data/demo_0"]
        obs = demo["obs"]
        for key in ("agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos",
                    "robot0_eef_quat", "robot0_gripper_qpos", "object"):  # fmt: skip
            assert key in obs, key
        assert obs["agentview_image"].shape[1:] == (32, 32, 3)
        assert demo["actions"].shape[1] == 7 and np.abs(demo["actions"][:]).max() <= 1.0
        assert "agentview_extrinsics" in demo["extras"] and "joint_world_pos" in demo["extras"]
        actions, states = demo["actions"][:], demo["states"][:]
        seed = stemob_attrs(demo)["seed"]
    env = make_env_from_args(env_args, cameras=[])  # the file alone rebuilds the env
    try:
        env.reset(seed=seed)
        env.set_state(states[0])
        np.testing.assert_allclose(env.get_state(), states[0])
        for action in actions:
            _, _, terminated, _, info = env.step(action)
        assert info["is_success"] and terminated
    finally:
        env.close()
    from stemob.genima.dataset import GenimaDatasetConfig, build_dataset

    genima = build_dataset(out, GenimaDatasetConfig(horizon=5), tmp_path / "g.hdf5", progress=False)
    with h5py.File(genima) as f:  # the recording carries what GENIMA's targets are drawn from
        obs = f["data/demo_0/obs"]
        assert {"agentview_target", "robot0_eye_in_hand_target", "tiled_target"} <= set(obs)
        assert obs["tiled_target"].shape[1:] == (32, 64, 3)
        assert (obs["tiled_target"][:] != obs["tiled_rgb"][:]).any(axis=(1, 2, 3)).all()


def test_dart_recordings_keep_the_executed_actions_which_replay_to_success(tmp_path):
    """With action_noise the file's actions are the expert's labels; extras/executed_actions are
    what the env ran, and they replay to success from the demo's first state."""
    out = tmp_path / "dart.hdf5"
    record("robosuite/Lift", 1, out, image_size=16, progress=False, action_noise=0.2)
    with h5py.File(out) as f:
        demo = f["data/demo_0"]
        env_args = json.loads(f["data"].attrs["env_args"])
        executed, states = demo["extras/executed_actions"][:], demo["states"][:]
        assert not np.allclose(executed[:, :-1], demo["actions"][:, :-1])
        seed = stemob_attrs(demo)["seed"]
    env = make_env_from_args(env_args, cameras=[])
    try:
        env.reset(seed=seed)
        env.set_state(states[0])
        for action in executed:
            _, _, terminated, _, info = env.step(action)
        assert info["is_success"] and terminated
    finally:
        env.close()


def test_stack_expert_stacks_and_unknown_tasks_are_refused():
    env = make_env_from_args(default_env_args("Stack"), cameras=[])
    try:
        for seed in (11, 14):  # cubes close together: the fingers must close across the line
            _, success = run_episode(env, seed)
            assert success, seed
    finally:
        env.close()
    with pytest.raises(
        StemobError, match=r"'Door' has no scripted expert \(experts: \['Lift', 'Stack'\]\)"
    ):
        default_env_args("Door")
    door = make_env_from_args({"env_name": "Door", "type": 1, "env_kwargs": {"robots": ["Panda"]}},
                              cameras=[])  # fmt: skip
    try:
        with pytest.raises(StemobError, match="'Door' has no scripted expert"):
            make_expert(door)
    finally:
        door.close()


@pytest.mark.parametrize("name", ["robosuite_lift", "robosuite_stack"])
def test_train_records_missing_robosuite_demos_from_the_task_config(name, tmp_path):
    from stemob.training.prepare import ensure_demonstrations

    task = yaml.safe_load((ROOT / "configs" / "task" / f"{name}.yaml").read_text())
    env_name = task["env_args"]["env_name"]
    assert task["env_args"] == default_env_args(env_name)  # the config is the expert's env
    task["demos"]["episodes"] = 1
    task["env_args"]["env_kwargs"].update(camera_heights=16, camera_widths=16)
    path = ensure_demonstrations({"path": str(tmp_path / "d.hdf5")}, task)
    with h5py.File(path) as f:
        assert f["data/demo_0/obs/agentview_image"].shape[1:] == (16, 16, 3)
        assert set(task["obs_keys"]) <= set(f["data/demo_0/obs"])


def test_the_benchmarks_combined_factor_applies_colour_then_texture():
    """robosuite_all colours the cube, then re-textures it (object_color detaches the
    material's texture; the texture factor must find it again)."""
    bench = yaml.safe_load((ROOT / "configs" / "benchmark" / "robosuite.yaml").read_text())
    assert "robosuite_all" in bench["perturbations"]
    path = ROOT / "configs" / "perturbation" / "robosuite_all.yaml"
    env = make_env_from_args(default_env_args("Lift"), cameras=["agentview"], image_size=32,
                             perturbation=str(path))  # fmt: skip
    try:
        first, _ = env.reset(seed=3)
        again, _ = env.reset(seed=3)
        np.testing.assert_array_equal(first["agentview_image"], again["agentview_image"])
    finally:
        env.close()
    plain = make_env_from_args(default_env_args("Lift"), cameras=["agentview"], image_size=32)
    try:
        clean, _ = plain.reset(seed=3)
    finally:
        plain.close()
    assert np.abs(first["agentview_image"].astype(int) - clean["agentview_image"]).mean() > 10
