"""RLBench episode folders: the restricted unpickler, the reader and the writer."""

from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
from PIL import Image

from stemob.data.detect import detect_format
from stemob.data.episodes import Episode
from stemob.data.rlbench import RLBenchReader, safe_load, write_rlbench
from stemob.errors import StemobError


def rlbench_episodes(count=2, length=6, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        out.append(
            Episode(
                obs={
                    "joint_positions": rng.normal(size=(length, 7)).astype(np.float32),
                    "gripper_open": rng.integers(0, 2, (length, 1)).astype(np.float32),
                    "gripper_pose": rng.normal(size=(length, 7)).astype(np.float32),
                    "front_rgb": rng.integers(0, 256, (length, 12, 16, 3), dtype=np.uint8),
                    "wrist_rgb": rng.integers(0, 256, (length, 12, 16, 3), dtype=np.uint8),
                },
                actions=rng.normal(size=(length, 8)).astype(np.float32),
                name=f"e{i}",
                extras={
                    "front_camera_extrinsics": rng.normal(size=(length, 4, 4)),
                    "front_camera_intrinsics": rng.normal(size=(length, 3, 3)),
                    "joint_poses": rng.normal(size=(length, 7, 7)),
                },
            )
        )
    return out


def test_rlbench_round_trip(tmp_path):
    episodes = rlbench_episodes()
    root = write_rlbench(
        tmp_path / "data",
        episodes,
        task="open_drawer",
        variation=2,
        descriptions=["open the drawer"],
    )
    episode_dir = root / "open_drawer" / "variation2" / "episodes" / "episode1"
    assert (episode_dir / "front_rgb" / "5.png").is_file()
    assert detect_format(root) == "rlbench"
    for path in (root, root / "open_drawer", episode_dir.parent, episode_dir):
        assert len(RLBenchReader(path)) == (1 if path == episode_dir else 2)
    reader = RLBenchReader(root)
    assert reader.names == ["open_drawer/variation2/episode0", "open_drawer/variation2/episode1"]
    for original, back in zip(episodes, reader, strict=True):
        for key in ("joint_positions", "gripper_open", "gripper_pose", "front_rgb", "wrist_rgb"):
            np.testing.assert_allclose(back.obs[key], original.obs[key], rtol=1e-6)
        np.testing.assert_allclose(back.actions[:-1], original.actions[:-1], rtol=1e-6)
        last = np.concatenate(
            [original.obs["joint_positions"][-1], original.obs["gripper_open"][-1]]
        )
        np.testing.assert_allclose(back.actions[-1], last, rtol=1e-6)  # holds the last state
        for key, value in original.extras.items():
            np.testing.assert_allclose(back.extras[key], value)
        assert back.attrs["variation_index"] == 2 and back.attrs["language"] == ["open the drawer"]
    assert RLBenchReader(root, cameras=["front"]).read(0).image_keys == ["front_rgb"]
    pose = RLBenchReader(root, action_mode="gripper_pose").read(0)
    np.testing.assert_allclose(pose.actions[0, :7], episodes[0].obs["gripper_pose"][1], rtol=1e-6)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_refuses_foreign_classes(tmp_path):
    evil = tmp_path / "low_dim_obs.pkl"
    evil.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(StemobError, match=r"refusing to load (posix|os)\.system"):
        safe_load(evil, "episode0")
    evil.write_bytes(pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(StemobError, match="refusing"):
        safe_load(evil)
    # a Demo that smuggles a foreign class inside an observation
    root = write_rlbench(tmp_path / "d", rlbench_episodes(1, 3))
    pkl = root / "task" / "variation0" / "episodes" / "episode0" / "low_dim_obs.pkl"
    data = pkl.read_bytes()
    assert b"rlbench.demo" in data
    pkl.write_bytes(data.replace(b"_codecs\nencode", b"builtins\nexec"))
    with pytest.raises(
        StemobError, match=r"low_dim_obs.pkl.*episode0.*refusing to load builtins.exec"
    ):
        RLBenchReader(root).read(0)
    pkl.write_bytes(data[: len(data) // 2])
    with pytest.raises(StemobError, match="truncated or corrupt"):
        RLBenchReader(root).read(0)


def test_reads_numpy1_style_and_upstream_pickles(tmp_path, monkeypatch):
    """A pickle made by the real classes (module names rlbench.*), with numpy 1.x names."""
    demo_mod = types.ModuleType("rlbench.demo")
    obs_mod = types.ModuleType("rlbench.backend.observation")

    class Demo:
        def __init__(self, observations, random_seed=None):
            self._observations = observations
            self.random_seed = random_seed
            self.num_reset_attempts = 0

    class Observation:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    Demo.__module__, Demo.__qualname__ = "rlbench.demo", "Demo"
    Observation.__module__, Observation.__qualname__ = "rlbench.backend.observation", "Observation"
    demo_mod.Demo, obs_mod.Observation = Demo, Observation
    for name, module in (
        ("rlbench", types.ModuleType("rlbench")),
        ("rlbench.backend", types.ModuleType("rlbench.backend")),
        ("rlbench.demo", demo_mod),
        ("rlbench.backend.observation", obs_mod),
    ):
        monkeypatch.setitem(sys.modules, name, module)
    rng = np.random.default_rng(1)
    observations = []
    for step in range(4):
        misc = {
            "front_camera_near": np.float64(0.1),
            "variation_index": 0,
            "forked_extra": "tolerated",
        }
        if step:
            misc["executed_demo_joint_position_action"] = np.full(8, step, np.float64)
        fields = dict(
            joint_positions=rng.normal(size=7),
            gripper_open=1.0,
            gripper_pose=rng.normal(size=7),
            misc=misc,
            fork_only_field=[1, 2],
            joint_velocities=None,
        )
        observations.append(Observation(**fields))  # no joint_forces etc.: absences are fine
    demo = Demo(observations, random_seed=np.random.RandomState(0).get_state())
    folder = tmp_path / "t" / "variation0" / "episodes" / "episode0"
    (folder / "front_rgb").mkdir(parents=True)
    for step in range(4):
        Image.new("RGB", (8, 8), (step, 0, 0)).save(folder / "front_rgb" / f"{step}.png")
    for protocol in (2, 4, 5):
        data = pickle.dumps(demo, protocol=protocol)
        if protocol == 2:  # rewrite to the spelling numpy 1.x writes
            data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            assert b"numpy.core.multiarray\n_reconstruct" in data
        (folder / "low_dim_obs.pkl").write_bytes(data)
        monkeypatch.delitem(sys.modules, "rlbench.demo")  # reading must not need rlbench
        episode = RLBenchReader(tmp_path).read(0)
        monkeypatch.setitem(sys.modules, "rlbench.demo", demo_mod)
        assert len(episode) == 4 and episode.obs["front_rgb"][2, 0, 0, 0] == 2
        np.testing.assert_allclose(episode.actions[0], np.full(8, 1.0))
        np.testing.assert_allclose(episode.actions[2], np.full(8, 3.0))
        np.testing.assert_allclose(episode.extras["front_camera_near"], 0.1)
        np.testing.assert_allclose(
            episode.obs["joint_positions"], [o.joint_positions for o in observations], rtol=1e-6
        )


def test_rlbench_missing_frame_and_field(tmp_path):
    root = write_rlbench(tmp_path / "d", rlbench_episodes(1, 3))
    folder = root / "task" / "variation0" / "episodes" / "episode0"
    (folder / "wrist_rgb" / "2.png").unlink()
    with pytest.raises(StemobError, match=r"2.png.*episode0.*'wrist_rgb'.*frame 2 is missing"):
        RLBenchReader(root).read(0)
    with pytest.raises(StemobError, match=r"episode0.*'joint_velocities' is missing"):
        RLBenchReader(root, cameras=["front"], extra_obs=["joint_velocities"]).read(0)
