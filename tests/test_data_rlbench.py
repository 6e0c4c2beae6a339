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


def test_reads_numpy1_style_and_upstream_pickles(tmp_path, monkeypatch, real_classes):
    """A pickle made by the real classes (module names rlbench.*), with numpy 1.x names."""
    Demo, Observation = real_classes
    demo_mod = sys.modules["rlbench.demo"]
    rng = np.random.default_rng(1)
    observations = []
    for step in range(4):
        misc = {
            "front_camera_near": np.float64(0.1),
            "variation_index": 0,
            "forked_extra": "tolerated",
        }
        if step:  # RLBench 7c3f425's key: 7 joint targets, no gripper (scene.py:548-551)
            misc["executed_demo_joint_position_action"] = np.full(7, step, np.float64)
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
        np.testing.assert_allclose(episode.actions[0], [*np.full(7, 1.0), 1.0])  # + gripper_open
        np.testing.assert_allclose(episode.actions[2], [*np.full(7, 3.0), 1.0])
        assert episode.attrs["action_source"] == (
            "recorded executed_demo_joint_position_action (7 joints) + next gripper_open"
        )
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


# ------------------------------------------------------------------ both RLBench action layouts


@pytest.fixture
def real_classes(monkeypatch):
    """``rlbench.demo.Demo`` and ``rlbench.backend.observation.Observation`` as pickled by RLBench
    (module names as in the real package; attributes as set by rlbench/backend/scene.py)."""
    demo_mod = types.ModuleType("rlbench.demo")
    obs_mod = types.ModuleType("rlbench.backend.observation")

    class Demo:
        def __init__(self, observations, random_seed=None, num_reset_attempts=None):
            self._observations = observations
            self.random_seed = random_seed
            self.num_reset_attempts = num_reset_attempts

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
    return Demo, Observation


def write_real_episode(folder, classes, misc_of_step, length=5, seed=0):
    """One episode as RLBench writes it; ``misc_of_step(step, joints, gripper)`` adds the action
    key the commit under test records."""
    Demo, Observation = classes
    rng = np.random.default_rng(seed)
    joints = rng.normal(size=(length, 7))
    gripper = np.array([1.0, 1.0, 0.0, 0.0, 0.0][:length] + [0.0] * max(0, length - 5))
    observations = []
    for step in range(length):
        misc = {"variation_index": 0, **misc_of_step(step, joints, gripper)}
        observations.append(
            Observation(
                joint_positions=joints[step], gripper_open=float(gripper[step]),
                gripper_pose=rng.normal(size=7), misc=misc,
            )
        )  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "front_rgb").mkdir()
    for step in range(length):
        Image.new("RGB", (8, 8), (step, 0, 0)).save(folder / "front_rgb" / f"{step}.png")
    demo = Demo(observations, np.random.RandomState(0).get_state(), 1)
    (folder / "low_dim_obs.pkl").write_bytes(pickle.dumps(demo, protocol=2))
    return joints, gripper


def test_reads_the_8_dim_joint_position_action_of_rlbench_8fc31bfa(tmp_path, real_classes):
    # scene.py:374 at 8fc31bfa: np.append(path qs, gripper_open) on every frame but frame 0
    targets = np.random.default_rng(5).normal(size=(5, 7))

    def misc(step, joints, gripper):
        if step == 0:
            return {}
        return {"joint_position_action": np.append(targets[step], gripper[step])}

    folder = tmp_path / "t" / "variation0" / "episodes" / "episode0"
    joints, gripper = write_real_episode(folder, real_classes, misc)
    episode = RLBenchReader(tmp_path).read(0)
    np.testing.assert_allclose(episode.actions[:4, :7], targets[1:], rtol=1e-6)  # not joints
    np.testing.assert_allclose(episode.actions[:4, 7], gripper[1:])
    assert not np.allclose(episode.actions[:4, :7], joints[1:])
    assert episode.attrs["action_source"] == "recorded joint_position_action (7 joints + gripper)"
    recorded = RLBenchReader(tmp_path, actions="recorded").read(0)
    np.testing.assert_array_equal(recorded.actions, episode.actions)
    observed = RLBenchReader(tmp_path, actions="observed").read(0)
    np.testing.assert_allclose(observed.actions[:4, :7], joints[1:], rtol=1e-6)
    assert "observed" in observed.attrs["action_source"]
    assert RLBenchReader(tmp_path).info()["action_source (episode 0)"].startswith("recorded")


def test_reads_the_7_dim_executed_action_of_rlbench_7c3f425_and_says_what_it_filled(
    tmp_path, real_classes
):
    # scene.py:366-371,548-551 at 7c3f425: 7 joint targets, only after path steps (frame 3 here
    # stands for a gripper-actuation frame, which has none)
    targets = np.random.default_rng(6).normal(size=(5, 7))

    def misc(step, joints, gripper):
        return {} if step in (0, 3) else {"executed_demo_joint_position_action": targets[step]}

    folder = tmp_path / "t" / "variation0" / "episodes" / "episode0"
    joints, gripper = write_real_episode(folder, real_classes, misc)
    episode = RLBenchReader(tmp_path).read(0)
    for step in (0, 1, 3):  # action t comes from frame t + 1
        np.testing.assert_allclose(episode.actions[step, :7], targets[step + 1], rtol=1e-6)
    np.testing.assert_allclose(episode.actions[2, :7], joints[3], rtol=1e-6)  # filled
    np.testing.assert_allclose(episode.actions[:, 7], [*gripper[1:], gripper[-1]])
    assert episode.attrs["action_source"] == (
        "recorded executed_demo_joint_position_action (7 joints) + next gripper_open; "
        "1 of 4 steps from the next observed joints"
    )
    with pytest.raises(StemobError, match=r"episode0.*actions='recorded'.*steps \[2\].*7c3f425"):
        RLBenchReader(tmp_path, actions="recorded").read(0)


def test_a_recorded_action_of_the_wrong_size_or_none_at_all_is_an_error(tmp_path, real_classes):
    bad = tmp_path / "bad"
    write_real_episode(
        bad / "t" / "variation0" / "episodes" / "episode0", real_classes,
        lambda step, j, g: {"executed_demo_joint_position_action": np.zeros(8)} if step else {},
    )  # fmt: skip
    with pytest.raises(
        StemobError, match=r"'executed_demo_joint_position_action' at frame 1 has 8"
    ):
        RLBenchReader(bad).read(0)
    none = tmp_path / "none"
    write_real_episode(
        none / "t" / "variation0" / "episodes" / "episode0", real_classes, lambda *a: {}
    )
    assert "no recorded joint targets" in RLBenchReader(none).read(0).attrs["action_source"]
    with pytest.raises(StemobError, match="no frame has 'joint_position_action' or"):
        RLBenchReader(none, actions="recorded").read(0)
    with pytest.raises(StemobError, match="actions must be one of"):
        RLBenchReader(none, actions="guess")


def test_reads_colosseums_per_episode_variation_layout(tmp_path, real_classes):
    # colosseum/tools/dataset_generator.py:158-233 (098a910): settings 13 and 15 write
    # <task>_<i>/episodes/episode<N>/ with per-episode variation files
    for n, variation in enumerate((2, 0)):
        folder = tmp_path / "open_drawer_13" / "episodes" / f"episode{n}"
        write_real_episode(folder, real_classes, lambda *a: {}, seed=n)
        (folder / "variation_descriptions.pkl").write_bytes(
            pickle.dumps([f"open the drawer {variation}"], protocol=2)
        )
        (folder / "variation_number.pkl").write_bytes(pickle.dumps(variation, protocol=2))
    (tmp_path / "open_drawer_13" / "episodes" / "save_state.pkl").write_bytes(b"not an episode")
    reader = RLBenchReader(tmp_path)
    assert reader.names == ["open_drawer_13/episode0", "open_drawer_13/episode1"]
    first = reader.read(0)
    assert first.attrs["language"] == ["open the drawer 2"]
    assert first.attrs["variation_index"] == 0  # misc wins over variation_number.pkl


def test_written_episodes_have_what_rlbench_get_stored_demos_checks(tmp_path):
    # rlbench/utils.py:94-100 (7c3f425 and 8fc31bfa): rgb and depth of all 5 cameras, one PNG per
    # frame, else 'Broken dataset assumption'
    from stemob.data.rlbench import RLBENCH_CAMERAS, depth_to_png, png_to_depth

    episodes = rlbench_episodes(1, 4)
    depth = np.random.default_rng(2).uniform(0, 1, (4, 12, 16))
    episodes[0].obs["front_depth"] = depth.astype(np.float32)
    root = write_rlbench(tmp_path, episodes, task="open_drawer")
    folder = root / "open_drawer" / "variation0" / "episodes" / "episode0"
    for camera in RLBENCH_CAMERAS:
        for kind in ("rgb", "depth"):
            assert len(os.listdir(folder / f"{camera}_{kind}")) == 4, (camera, kind)
    with Image.open(folder / "front_depth" / "2.png") as image:
        np.testing.assert_allclose(png_to_depth(np.asarray(image)), depth[2], atol=1e-6)
    np.testing.assert_array_equal(depth_to_png(np.array([[1.0]]))[0, 0], [255, 255, 255])
    demo = safe_load(folder / "low_dim_obs.pkl")
    assert demo.num_reset_attempts is None and demo.random_seed is None  # not from RLBench
    back = RLBenchReader(root).read(0)
    assert back.image_keys == ["front_rgb", "wrist_rgb"]  # the black placeholders stay out
    assert back.attrs["action_source"] == "recorded joint_position_action (7 joints + gripper)"
