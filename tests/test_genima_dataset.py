"""GENIMA datasets built from recorded tabletop demos: layout, targets, resume, loading for
training, and the refusals."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from stemob.errors import StemobError
from stemob.genima import CLOSED_COLOR, OPEN_COLOR
from stemob.genima.dataset import GenimaDatasetConfig, build_dataset, main, target_index

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from envs.record import record

    out = tmp_path_factory.mktemp("genima") / "lift_joint.hdf5"
    record("lift_cube", 2, out, image_size=32, action_mode="joint_position", progress=False)
    return out


def test_builds_targets_controller_inputs_and_trains_from_them(demos, tmp_path):
    config = GenimaDatasetConfig(horizon=5)
    path = build_dataset(demos, config, tmp_path / "g.hdf5", progress=False)
    with h5py.File(path) as h5, h5py.File(demos) as src:
        demo, source = h5["data/demo_0"], src["data/demo_0"]
        length = len(source["actions"])
        obs = demo["obs"]
        assert obs["tiled_rgb"].shape == (length, 32, 64, 3)  # front | wrist in one row
        np.testing.assert_array_equal(obs["tiled_rgb"][:, :, :32], source["obs/front_image"][:])
        np.testing.assert_array_equal(demo["actions"][:], source["actions"][:])  # joint actions
        assert demo["actions"].shape[1] == 8
        index = demo["extras/target_index"][:]
        assert list(index) == [target_index(t, length, 5) for t in range(length)]
        assert index[0] == 5 and index[-1] == length - 2  # GENIMA's clamp (render_data.py)
        changed = (obs["tiled_target"][:] != obs["tiled_rgb"][:]).any(-1)
        assert changed.any(axis=(1, 2)).all()  # every frame has its spheres
        for t in range(length):  # the gripper sphere's colour follows the target's gripper
            colour = CLOSED_COLOR if source["obs/gripper_open"][index[t], 0] <= 0.1 else OPEN_COLOR
            target = obs["tiled_target"][t].reshape(-1, 3)
            assert (target == colour).all(-1).any(), t
        controller = obs["front_target"][:]
        assert controller.shape == (length, 32, 32, 3)
        assert (controller != source["obs/front_image"][:]).mean() > 0.5  # the scene is gone
        assert "genima" in h5["data"].attrs and h5["data"].attrs["env_args"]
    from stemob.data import DatasetConfig, DemoDataset

    keys = ["front_target", "wrist_target", "joint_positions", "gripper_open"]
    data = DemoDataset(DatasetConfig(path=str(path), obs_keys=keys, horizon=5, n_obs_steps=1,
                                     val_ratio=0.0))  # fmt: skip
    batch = data.get_batch([0, 1])
    assert batch["obs"]["front_target"].shape == (2, 1, 3, 32, 32)
    assert batch["action"].shape == (2, 5, 8)
    assert build_dataset(demos, config, tmp_path / "g.hdf5", progress=False) == path  # reused


def test_a_killed_build_resumes_and_other_settings_are_refused(demos, tmp_path):
    out = tmp_path / "g.hdf5"
    config = GenimaDatasetConfig(horizon=4)
    full = build_dataset(demos, config, tmp_path / "full.hdf5", progress=False)
    partial = out.with_name(out.name + ".partial")
    build_dataset(demos, config, partial, progress=False)  # stands in for a killed run's file
    with h5py.File(partial, "a") as h5:
        del h5["data/demo_1"]  # demo 1 never finished
        h5["data/demo_0"].attrs["genima_complete"] = True
        h5.create_group("data/demo_1").attrs["genima_complete"] = False
    before = partial.stat().st_mtime_ns
    build_dataset(demos, config, out, progress=False)
    assert out.is_file() and not partial.exists() and before
    with h5py.File(out) as a, h5py.File(full) as b:
        for key in ("obs/tiled_target", "obs/front_target", "actions"):
            np.testing.assert_array_equal(a[f"data/demo_1/{key}"][:], b[f"data/demo_1/{key}"][:])
    with pytest.raises(StemobError, match="other settings"):
        build_dataset(demos, GenimaDatasetConfig(horizon=3), out, progress=False)


def test_camera_jitter_moves_only_the_controllers_spheres_of_the_named_cameras(demos, tmp_path):
    from stemob.genima.dataset import CameraJitter

    plain = build_dataset(demos, GenimaDatasetConfig(horizon=5), tmp_path / "a.hdf5",
                          progress=False)  # fmt: skip
    jitter = GenimaDatasetConfig(horizon=5, camera_jitter={"cameras": ["front"]})
    assert isinstance(jitter.camera_jitter, CameraJitter)
    assert GenimaDatasetConfig(horizon=5).record() == {
        k: v for k, v in jitter.record().items() if k != "camera_jitter"
    }  # datasets built without the option keep their digests
    moved = build_dataset(demos, jitter, tmp_path / "b.hdf5", progress=False)
    with h5py.File(plain) as a, h5py.File(moved) as b:
        first, second = a["data/demo_0/obs"], b["data/demo_0/obs"]
        np.testing.assert_array_equal(first["tiled_target"][:], second["tiled_target"][:])
        np.testing.assert_array_equal(first["wrist_target"][:], second["wrist_target"][:])
        assert (first["front_target"][:] != second["front_target"][:]).any()
    rng = np.random.default_rng(0)
    e = np.eye(4)
    e[:3, 3] = [0.2, -0.1, 1.0]
    for _ in range(20):  # the centre moves by at most 0.1 m per axis, the view turns by <= 0.05
        m = CameraJitter().move(e, rng)
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
        centre, was = -m[:3, :3].T @ m[:3, 3], -e[:3, 3]
        assert np.abs(centre - was).max() <= 0.1 + 1e-12
        assert np.arccos(np.clip((np.trace(m[:3, :3]) - 1) / 2, -1, 1)) <= 0.05 * np.sqrt(3)
    with pytest.raises(StemobError, match=r"camera_jitter names camera\(s\) \['side'\]"):
        build_dataset(demos, GenimaDatasetConfig(camera_jitter={"cameras": ["side"]}),
                      tmp_path / "c.hdf5", progress=False)  # fmt: skip
    with pytest.raises(StemobError, match=r"camera_jitter: unknown option\(s\) \['angle'\]"):
        GenimaDatasetConfig(camera_jitter={"angle": 1})
    with pytest.raises(StemobError, match="probability must be in"):
        GenimaDatasetConfig(camera_jitter={"probability": 0})
    # probability 0.5: some frames from the real camera (as plain), some moved; its own digest
    half = GenimaDatasetConfig(horizon=5, camera_jitter={"cameras": ["front"], "probability": 0.5})
    assert "probability" not in jitter.record()["camera_jitter"]
    assert half.record()["camera_jitter"]["probability"] == 0.5
    mixed = build_dataset(demos, half, tmp_path / "d.hdf5", progress=False)
    with h5py.File(plain) as a, h5py.File(mixed) as b:  # the backgrounds have their own RNG
        real, drawn = a["data/demo_0/obs/front_target"][:], b["data/demo_0/obs/front_target"][:]
        same = (real == drawn).reshape(len(real), -1).all(1)
        assert 0 < same.sum() < len(same)  # real-camera frames equal plain's, the others moved


def test_bad_input_is_named(demos, tmp_path, capsys):
    with pytest.raises(StemobError, match=r"horizon 100 is not shorter than the episode"):
        build_dataset(demos, GenimaDatasetConfig(horizon=100), tmp_path / "a.hdf5", progress=False)
    with pytest.raises(
        StemobError, match=r"camera 'overhead' has no images \(key 'overhead_image'"
    ):
        build_dataset(demos, GenimaDatasetConfig(cameras=["overhead"]), tmp_path / "b.hdf5",
                      progress=False)  # fmt: skip
    stripped = tmp_path / "no_matrices.hdf5"
    with h5py.File(demos) as src, h5py.File(stripped, "w") as dst:
        src.copy("data", dst)
        for demo in dst["data"].values():
            del demo["extras/front_extrinsics"]
    with pytest.raises(StemobError, match=r"no_matrices.hdf5.*key 'front_extrinsics' is missing"):
        build_dataset(stripped, GenimaDatasetConfig(cameras=["front"]), tmp_path / "c.hdf5",
                      progress=False)  # fmt: skip
    assert not (tmp_path / "c.hdf5").exists()
    with pytest.raises(SystemExit) as stopped:
        main(["--dataset", str(tmp_path / "nothing.hdf5"), "--quiet"])
    assert stopped.value.code == 2
    assert "stemob-genima-dataset: error:" in capsys.readouterr().err


def test_rlbench_episodes_use_pyreps_camera_conventions(tmp_path):
    """RLBench misc: camera-to-world extrinsics and negative focal lengths (PyRep), joint_poses
    (8fc31bfa); the gripper sphere must land where the OpenCV projection puts it."""
    from stemob.data.episodes import Episode
    from stemob.data.rlbench import write_rlbench
    from stemob.genima import project

    length, size = 8, 64
    k_cv = np.array([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]])
    e_cv = np.eye(4)
    e_cv[:3, 3] = [0.0, 0.0, 1.0]  # the world origin 1 m in front of the camera
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    k_pyrep = k_cv.copy()
    k_pyrep[:, :2] *= -1
    ext_pyrep = np.linalg.inv(flip @ e_cv)
    gripper = np.zeros((length, 7))
    gripper[:, 0] = np.linspace(-0.1, 0.1, length)
    episode = Episode(
        obs={
            "joint_positions": np.zeros((length, 7), np.float32),
            "gripper_open": np.ones((length, 1), np.float32),
            "gripper_pose": gripper.astype(np.float32),
            "front_rgb": np.zeros((length, size, size, 3), np.uint8),
        },
        actions=np.zeros((length, 8), np.float32),
        extras={
            "front_camera_intrinsics": np.repeat(k_pyrep[None], length, 0),
            "front_camera_extrinsics": np.repeat(ext_pyrep[None], length, 0),
            "joint_poses": np.tile([0.0, 0.0, 5.0, 0, 0, 0, 1], (length, 7, 1)),  # far behind
        },
    )
    root = write_rlbench(tmp_path / "rlbench", [episode], task="open_drawer")
    config = GenimaDatasetConfig(horizon=2, cameras=["front"])
    path = build_dataset(root, config, tmp_path / "g.hdf5", progress=False)
    with h5py.File(path) as h5:
        drawn = h5["data/demo_0/obs/tiled_target"][0]
    mask = (drawn == OPEN_COLOR).all(-1)
    ys, xs = np.nonzero(mask)
    uv, _ = project(gripper[2:3, :3], k_cv, e_cv)  # the pose 2 steps ahead
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], uv[0], atol=0.5)
