"""Expert demonstrations in robomimic layout, and re-rendering them from simulator states."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from envs import record as rec
from envs.record import main, make_env_from_args, record
from envs.rerender import rerender
from stemob.errors import StemobError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rec") / "lift.hdf5"
    report = record(
        "lift_cube",
        3,
        out,
        image_size=32,
        cameras=("front", "wrist"),
        valid_fraction=0.34,
        progress=False,
    )
    assert report["kept"] == 3
    return out


def test_layout(demos):
    with h5py.File(demos) as h5:
        data = h5["data"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["type"] == "stemob_tabletop"
        assert env_args["env_name"] == "tabletop/LiftCube-v0"
        assert env_args["env_kwargs"]["cameras"] == ["front", "wrist"]
        names = sorted(data.keys())
        assert names == ["demo_0", "demo_1", "demo_2"]
        total = 0
        for name in names:
            g = data[name]
            n = int(g.attrs["num_samples"])
            total += n
            assert g.attrs["model_file"].startswith("<mujoco")
            assert g["actions"].shape == (n, 7) and g["rewards"].shape == (n,)
            assert g["dones"][-1] == 1 and g["rewards"][-1] == 1.0
            assert g["states"].shape[0] == n
            assert g["obs/front_image"].shape == (n, 32, 32, 3)
            assert g["obs/front_image"].dtype == np.uint8
            for key in ("joint_positions", "gripper_open", "eef_pos", "eef_quat", "wrist_image"):
                assert g[f"obs/{key}"].shape[0] == n
        assert data.attrs["total"] == total
        train = [n.decode() for n in h5["mask/train"][()]]
        valid = [n.decode() for n in h5["mask/valid"][()]]
        assert sorted(train + valid) == names and len(valid) == 1


def test_states_reproduce_observations(demos):
    with h5py.File(demos) as h5:
        env_args = json.loads(h5["data"].attrs["env_args"])
        g = h5["data/demo_1"]
        states, frames = g["states"][()], g["obs/front_image"][()]
        seed = json.loads(g.attrs["stemob_attrs"])["seed"]
    env = make_env_from_args(env_args)
    env.reset(seed=seed)
    for t in (0, len(states) // 2, len(states) - 1):
        env.set_state(states[t])
        np.testing.assert_array_equal(env.render_camera("front"), frames[t])
    env.close()


def test_rerender_other_cameras_and_perturbation(demos, tmp_path):
    out = rerender(
        demos,
        tmp_path / "re.hdf5",
        str(ROOT / "configs/perturbation/table_color.yaml"),
        cameras=("overhead",),
        image_size=24,
    )
    with h5py.File(demos) as a, h5py.File(out) as b:
        assert set(b["data/demo_0/obs"]) == {
            "overhead_image",
            "joint_positions",
            "gripper_open",
            "eef_pos",
            "eef_quat",
        }
        assert b["data/demo_0/obs/overhead_image"].shape[1:] == (24, 24, 3)
        np.testing.assert_array_equal(a["data/demo_0/actions"], b["data/demo_0/actions"])
        kwargs = json.loads(b["data"].attrs["env_args"])["env_kwargs"]
        assert kwargs["cameras"] == ["overhead"] and kwargs["perturbation"] is not None
        assert list(b["mask/valid"][()]) == list(a["mask/valid"][()])


def test_expert_failure_is_reported(tmp_path, monkeypatch):
    real = rec.run_episode

    def failing(env, seed, steps_after_success=0, action_noise=0.0):
        episode, _ = real(env, seed, steps_after_success, action_noise)
        return episode, False

    monkeypatch.setattr(rec, "run_episode", failing)
    out = tmp_path / "x.hdf5"
    with pytest.raises(StemobError, match="kept 0 of 1 demos in 2 attempts; failed seeds"):
        record(
            "lift_cube", 1, out, image_size=16, cameras=("front",), max_attempts=2, progress=False
        )
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_bad_input(capsys, tmp_path):
    assert main(["task=lift_cube", "episodes=1", f"out={tmp_path / 'a.hdf5'}", "cameras=sky"]) == 2
    assert "camera" in capsys.readouterr().err
    assert main(["task=lift_cube", "episodes=1"]) == 2
    assert "missing option out" in capsys.readouterr().err


def _assert_option_recorded_and_checked(option, value, default, bad, out, plain, tmp_path):
    """``out`` (recorded with ``option=value``) keeps it in ``stemob_attrs``; a training run asking
    for ``value`` takes ``out`` and refuses ``plain`` (recorded with ``default``); ``bad`` is
    refused by the recorder with the option's name."""
    from stemob.training.prepare import ensure_demonstrations

    with h5py.File(out) as f:
        assert json.loads(f["data/demo_0"].attrs["stemob_attrs"])[option] == value
    task = {"env_args": {"type": "stemob_tabletop"}, "demos": {option: value}}
    assert ensure_demonstrations({"path": str(out)}, task) == out
    with pytest.raises(StemobError, match=f"recorded with {option}={default}"):
        ensure_demonstrations({"path": str(plain)}, task)
    with pytest.raises(StemobError, match=f"{option}: expected >= 0"):
        record("lift_cube", 1, tmp_path / "x.hdf5", progress=False, **{option: bad})


def test_steps_after_success_extend_each_demo(demos, tmp_path):
    """The expert goes on past success (holding the cube up); the longer demo starts like the
    plain one, stays a success to its last step and records the option; a training run whose task
    asks for another value than the file's is refused before it reads the file."""
    out = tmp_path / "hold.hdf5"
    record("lift_cube", 1, out, image_size=32, valid_fraction=0, progress=False,
           steps_after_success=6)  # fmt: skip
    with h5py.File(demos) as plain, h5py.File(out) as longer:
        a, b = plain["data/demo_0"], longer["data/demo_0"]
        n = int(a.attrs["num_samples"])
        assert int(b.attrs["num_samples"]) == n + 6
        np.testing.assert_array_equal(b["actions"][:n], a["actions"][:n])
        assert np.all(b["rewards"][n - 1 :] == 1.0) and list(b["dones"][-7:]) == [0] * 6 + [1]
    _assert_option_recorded_and_checked("steps_after_success", 6, 0, -1, out, demos, tmp_path)


def test_action_noise_perturbs_the_states_and_records_the_experts_actions(demos, tmp_path):
    """DART-style recording: the executed actions are noisy, so the path leaves the noiseless
    expert's, while the file keeps the expert's own (clean) actions, whose gripper stays exactly
    open or closed, and the executed ones in extras (they retrace the demo); the option is recorded and a training run asking for another value is refused."""
    out = tmp_path / "noisy.hdf5"
    record("lift_cube", 1, out, image_size=32, valid_fraction=0, progress=False, action_noise=0.1)
    with h5py.File(demos) as plain, h5py.File(out) as noisy:
        a, b = plain["data/demo_0"], noisy["data/demo_0"]
        np.testing.assert_array_equal(a["states"][0], b["states"][0])  # same reset(seed)
        assert not np.allclose(a["obs/eef_pos"][1:5], b["obs/eef_pos"][1:5])
        assert set(np.unique(b["actions"][:, -1])) <= {-1.0, 1.0}
        assert np.abs(b["actions"][()]).max() <= 1.0
        executed, labels = b["extras/executed_actions"][()], b["actions"][()]
        np.testing.assert_array_equal(executed[:, -1], labels[:, -1])  # the gripper is not noised
        assert not np.allclose(executed[:, :-1], labels[:, :-1])
        env_args, states = json.loads(noisy["data"].attrs["env_args"]), b["states"][()]
        seed = json.loads(b.attrs["stemob_attrs"])["seed"]
        assert "executed_actions" not in a["extras"]  # noiseless: the actions are what ran
    env = make_env_from_args(env_args)
    try:  # the executed actions retrace the demo from its first state
        env.reset(seed=seed)
        env.set_state(states[0])
        for action in executed[:10]:
            env.step(action)
        np.testing.assert_allclose(env.get_state(), states[10], atol=1e-6)
    finally:
        env.close()
    again = rerender(out, tmp_path / "noisy_re.hdf5", None, image_size=16)
    with h5py.File(again) as f:  # a re-rendered DART file still replays
        np.testing.assert_array_equal(f["data/demo_0/extras/executed_actions"][()], executed)
    _assert_option_recorded_and_checked("action_noise", 0.1, 0.0, -0.1, out, demos, tmp_path)


def test_concurrent_runs_record_missing_demos_once(tmp_path, capsys):
    """Two training runs that find the same demos missing (two study lanes on a fresh machine):
    the first records while holding the file's lock, the second waits, says so, and then takes
    the finished file instead of recording it again."""
    import threading

    from stemob.training.prepare import ensure_demonstrations, one_builder

    out = tmp_path / "demos" / "d.hdf5"
    task = {
        "env_args": {"type": "stemob_tabletop",
                     "env_kwargs": {"task": "lift_cube", "image_size": 32, "cameras": ["front"]}},
        "demos": {"episodes": 1},
    }  # fmt: skip
    out.parent.mkdir()
    holding, done = threading.Event(), []

    def first_run() -> None:  # holds the lock as a recording run does, then writes the file
        with one_builder(out, "its demonstrations"):
            holding.set()
            record("lift_cube", 1, out, image_size=32, cameras=("front",), progress=False)
            done.append(out.stat().st_mtime_ns)

    thread = threading.Thread(target=first_run)
    thread.start()
    holding.wait(10)
    assert ensure_demonstrations({"path": str(out)}, task) == out
    thread.join()
    assert "waiting for another process building its demonstrations" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == done[0]  # not recorded a second time
