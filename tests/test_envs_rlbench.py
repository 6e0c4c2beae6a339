"""RLBench + Colosseum backend: lazy imports, role resolution for Colosseum, and the adapter's
logic against the fake backend of envs/rlbench/testing.py (no CoppeliaSim here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from envs.rlbench import (
    TASK_TARGETS,
    RLBenchEnv,
    camera_params_opencv,
    resolve_colosseum_config,
)
from envs.rlbench.testing import MAX_JOINT_STEP, fake_rlbench
from stemob.data.rlbench import RLBenchObservation, dump_demo
from stemob.errors import StemobError

ROOT = Path(__file__).resolve().parents[1]
GENIMA = ROOT / "configs/perturbation/genima"


def factor(variation: str, **params) -> dict:
    entry = {"variation": variation, "name": variation, "enabled": True, "seed": 5, **params}
    return {"env": {"scene": {"factors": [entry]}}}


def test_importing_does_not_need_rlbench():
    code = (
        "import sys, envs, envs.rlbench, envs.robosuite, envs.record\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('rlbench', 'pyrep', 'colosseum', 'robosuite')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.skipif(importlib.util.find_spec("rlbench") is not None, reason="rlbench installed")
def test_missing_install_names_the_steps():
    with pytest.raises(StemobError) as err:
        RLBenchEnv("open_drawer")
    text = str(err.value)
    for needle in ("CoppeliaSim 4.1", "PyRep", "COPPELIASIM_ROOT", "LD_LIBRARY_PATH",
                   "QT_QPA_PLATFORM_PLUGIN_PATH", "xvfb-run", "rlbench"):  # fmt: skip
        assert needle in text


def test_observations_follow_the_tabletop_keys():
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("front", "overhead"), image_size=24)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert obs["front_image"].shape == (24, 24, 3) and obs["front_image"].dtype == np.uint8
        pose = obs["gripper_pose"]  # RLBench order x y z qx qy qz qw
        np.testing.assert_allclose(obs["eef_pos"], pose[:3])
        np.testing.assert_allclose(obs["eef_quat"], [pose[6], pose[3], pose[4], pose[5]])
        assert info["is_success"] is False and info["variation"] == 0
        assert info["descriptions"] == ["variation 0"]
        env.close()
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("wrist",), image_size=16, image_suffix="rgb")
        assert set(env.reset(seed=0)[0]) >= {"wrist_rgb", "joint_positions", "gripper_open"}


def test_joint_actions_gripper_success_and_truncation():
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, max_episode_steps=3)
        env.reset(seed=0)
        a = np.zeros(8, np.float32)
        a[7] = 0.3  # below 0.5: close
        obs, r, term, trunc, info = env.step(a)
        assert obs["gripper_open"][0] == 0.0 and r == 0.0 and not term and not trunc
        a[7], a[0] = 0.8, 0.5
        obs, r, term, trunc, info = env.step(a)
        # JointPosition sets the target and steps once (arm_action_modes.py:97-134): the joint
        # moves one physics step's worth toward it, not to it
        assert obs["gripper_open"][0] == 1.0
        assert obs["joint_positions"][0] == pytest.approx(MAX_JOINT_STEP)
        a[0] = 0.6
        *_, term, trunc, info = env.step(a)
        assert trunc and not term  # the third step hits max_episode_steps
        env.close()
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, max_episode_steps=50)
        env.reset(seed=0)
        a[0] = 1.2  # the fake task succeeds past 1.0 rad on joint 0: 11 steps of 0.1 rad
        steps = 0
        while True:
            _, r, term, trunc, info = env.step(a)
            steps += 1
            if term or trunc:
                break
        assert info["is_success"] is True and r == 1.0 and term and steps == 11
        with pytest.raises(StemobError, match="shape"):
            env.step(np.zeros(7))
        env.close()


def test_end_effector_mode_normalises_and_survives_invalid_actions():
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("close_box", cameras=("front",), image_size=16, action_mode="gripper_pose")
        first, _ = env.reset(seed=0)
        a = np.array([0.3, 0.1, 1.0, 0.0, 0.0, 0.0, 2.0, 1.0])  # quaternion not unit
        obs, _, term, _, info = env.step(a)
        np.testing.assert_allclose(obs["eef_quat"], [1, 0, 0, 0], atol=1e-6)
        a[:3] = [5.0, 0.0, 0.0]  # the fake planner finds no path
        obs2, r, term, _, info = env.step(a)
        assert term and r == 0.0 and info["is_success"] is False and "invalid_action" in info
        np.testing.assert_array_equal(obs2["front_image"], obs["front_image"])


def test_reset_seed_reproduces_the_placement():
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16)
        a = env.reset(seed=3)[0]["front_image"]
        b = env.reset(seed=4)[0]["front_image"]
        c = env.reset(seed=3)[0]["front_image"]
        np.testing.assert_array_equal(a, c)
        assert not np.array_equal(a, b)


def write_episode(folder: Path, random_state, variation: int) -> Path:
    folder.mkdir(parents=True)
    obs = RLBenchObservation(
        joint_positions=np.zeros(7), gripper_open=1.0, gripper_pose=np.zeros(7),
        misc={"variation_index": variation},
    )  # fmt: skip
    dump_demo([obs], folder / "low_dim_obs.pkl", random_seed=random_state)
    return folder


def test_reset_to_demo_restores_a_validation_episode(tmp_path):
    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, variation=0)
        np.random.seed(123)
        state = np.random.get_state()
        env.task_env.set_variation(2)
        recorded = env.task_env.reset()[1].front_rgb  # what the recorder saw
        folder = write_episode(tmp_path / "episode0", state, variation=2)
        env.reset(seed=9)
        obs, info = env.reset(options={"demo": folder})
        np.testing.assert_array_equal(obs["front_image"], recorded)
        assert info["variation"] == 2
        obs2, _ = env.reset_to_demo(folder / "low_dim_obs.pkl")
        np.testing.assert_array_equal(obs2["front_image"], recorded)
        missing = write_episode(tmp_path / "episode1", None, variation=0)
        with pytest.raises(StemobError, match="random_seed"):
            env.reset_to_demo(missing)


def test_genima_configs_resolve_to_colosseum_names():
    files = sorted(GENIMA.glob("*.yaml"))
    assert len(files) == 6
    for path in files:
        cfg = yaml.safe_load(path.read_text())
        task = cfg["env"]["task_name"]
        out = resolve_colosseum_config(path, task)
        assert out["task_name"] == task
        for f in out["scene"]["factors"]:
            assert "texture_pool" not in f
            assert not {"manipulated_object", "front", "lights", "distractor_area"} & set(
                f.get("targets", [])
            )
    cams = resolve_colosseum_config(GENIMA / "move_hanger_random_camera_poses.yaml", "move_hanger")
    # the camera targets of Colosseum's own move_hanger.yaml
    assert cams["scene"]["factors"][0]["targets"] == [
        "cam_front", "cam_over_shoulder_left", "cam_over_shoulder_right",
    ]  # fmt: skip
    table = resolve_colosseum_config(
        GENIMA / "basketball_in_hoop_random_table_textures.yaml", "basketball_in_hoop"
    )
    assert "targets" not in table["scene"]["factors"][0]  # Colosseum's table factors take none
    drawers = resolve_colosseum_config(
        GENIMA / "open_drawer_random_object_color.yaml", "open_drawer"
    )
    assert "drawer_frame" in drawers["scene"]["factors"][0]["targets"]
    lights = resolve_colosseum_config(
        GENIMA / "open_drawer_lighting_variations.yaml", "open_drawer"
    )
    assert lights["scene"]["factors"][0]["targets"] == [
        "DefaultLightA", "DefaultLightB", "DefaultLightD",
    ]  # fmt: skip


def test_shipped_configs_resolve_for_every_role_they_can():
    distractors = resolve_colosseum_config(ROOT / "configs/perturbation/mo_color.yaml", "hockey")
    assert distractors["scene"]["factors"][0]["targets"] == ["hockey_stick"]
    with pytest.warns(UserWarning, match="fixed number"):
        d = resolve_colosseum_config(
            ROOT / "configs/perturbation/distractor_object.yaml", "basketball_in_hoop"
        )
    f = d["scene"]["factors"][0]
    assert f["num_objects"] == 4 and "spawn_area" not in f and "size_range" not in f
    assert f["targets"] == ["spawn_boundary0", "spawn_boundary1"]
    assert len(TASK_TARGETS) >= 7


def test_roles_a_task_lacks_are_refused():
    cfg = factor("object_color", targets=["receiver_object"], color_range=[[0] * 3, [1] * 3])
    with pytest.raises(StemobError, match=r"factors\[0\].*receiver_object.*open_drawer"):
        resolve_colosseum_config(cfg, "open_drawer")
    with pytest.raises(StemobError, match="role table"):
        resolve_colosseum_config(cfg, "some_other_task")
    named = factor("object_color", targets=["my_shape"], color_range=[[0] * 3, [1] * 3])
    assert resolve_colosseum_config(named, "some_other_task")["scene"]["factors"][0]["targets"] == [
        "my_shape"
    ]
    bad = factor("table_color", targets=["lights"], color_range=[[0] * 3, [1] * 3])
    with pytest.raises(StemobError, match="whole table"):
        resolve_colosseum_config(bad, "open_drawer")


def test_colosseum_receives_the_resolved_config_and_perturbs():
    cfg = GENIMA / "open_drawer_random_object_color.yaml"
    with fake_rlbench(colosseum=True) as fake:
        plain = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, colosseum=False)
        base = plain.reset(seed=0)[0]["front_image"]
        plain.close()  # PyRep: one simulator per process
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, perturbation=cfg)
        assert env.use_colosseum and fake.launched[-1].path_task_ttms == "<fake ttms>"
        given = fake.launched[-1].env_config
        assert given["scene"]["factors"][0]["targets"][0] == "drawer_frame"
        perturbed = env.reset(seed=0)[0]["front_image"]
        assert not np.array_equal(base[..., 2], perturbed[..., 2])
        np.testing.assert_array_equal(base[..., 0], perturbed[..., 0])  # same placement
        assert env.env_args["env_kwargs"]["perturbation"]["env"]["task_name"] == "open_drawer"
        env.close()
        assert fake.shutdowns == 2
        with pytest.raises(StemobError, match="need Colosseum"):
            RLBenchEnv("open_drawer", perturbation=cfg, colosseum=False)
        with pytest.raises(StemobError, match="role table"):
            RLBenchEnv("not_a_task", perturbation=cfg)
        with pytest.raises(StemobError, match="Colosseum has no task"):
            RLBenchEnv("not_a_task", perturbation=GENIMA / "open_drawer_lighting_variations.yaml")
    with fake_rlbench(colosseum=False), pytest.raises(StemobError, match="colosseum"):
        RLBenchEnv("open_drawer", perturbation=cfg)


def test_bad_options_are_named():
    with fake_rlbench(colosseum=False):
        for kwargs, needle in (
            ({"cameras": ("side",)}, "cameras"),
            ({"action_mode": "torque"}, "action_mode"),
            ({"variation": 7}, "variation"),
            ({"image_suffix": "png"}, "image_suffix"),
        ):
            with pytest.raises(StemobError, match=needle):
                RLBenchEnv("open_drawer", **kwargs)
        with pytest.raises(StemobError, match="no task"):
            RLBenchEnv("not_a_task")


def test_env_args_round_trip_through_the_record_dispatcher():
    from envs.record import make_env_from_args

    with fake_rlbench(colosseum=False):
        env = RLBenchEnv("move_hanger", cameras=("front", "wrist"), image_size=20, variation=1)
        args = env.env_args
        assert args["type"] == "stemob_rlbench" and args["env_name"] == "rlbench/move_hanger"
        env.close()
        again = make_env_from_args(args, image_size=32)
        assert isinstance(again, RLBenchEnv)
        assert again.env_kwargs == {**env.env_kwargs, "image_size": 32}
        assert again.reset(seed=0)[0]["wrist_image"].shape == (32, 32, 3)
    with pytest.raises(StemobError, match="env_args type"):
        make_env_from_args({"env_name": "x", "type": "nope", "env_kwargs": {}})


def test_camera_matrices_match_pyrep_projection():
    rng = np.random.default_rng(0)
    k_pyrep = np.array([[-110.0, 0, 64], [0, -110.0, 64], [0, 0, 1]])
    ext = np.eye(4)  # camera to world: a rotation about z and a translation
    c, s = np.cos(0.4), np.sin(0.4)
    ext[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    ext[:3, 3] = [0.2, -0.1, -1.0]
    cv = camera_params_opencv(k_pyrep, ext)
    assert cv["intrinsics"][0, 0] > 0 and cv["intrinsics"][1, 1] > 0
    for _ in range(5):
        point = np.append(rng.uniform(-0.3, 0.3, 3), 1.0)
        ref = k_pyrep @ (np.linalg.inv(ext) @ point)[:3]
        cam = cv["extrinsics"] @ point
        ours = cv["intrinsics"] @ cam[:3]
        np.testing.assert_allclose(ours[:2] / ours[2], ref[:2] / ref[2])


# ---------------------------------------------------------------- conformance with the real commits


def live_demo(env, min_attempts=1, variation=0):
    """A live demo of the fake task whose placement took at least ``min_attempts`` draws."""
    for seed in range(200):
        np.random.seed(seed)
        env.task_env.set_variation(variation)
        demo = env.task_env.get_demos(1, live_demos=True)[0]
        if demo.num_reset_attempts >= min_attempts:
            return demo
    raise AssertionError("no such demo")


@pytest.mark.parametrize("commit", ["8fc31bfa", "7c3f425"])
def test_reset_to_demo_replays_the_placement_as_each_rlbench_commit_does(commit):
    with fake_rlbench(colosseum=False, rlbench_commit=commit):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16)
        demo = live_demo(env, min_attempts=2, variation=1)  # earlier placements failed validation
        recorded = demo[0].front_rgb
        env.reset(seed=7)
        obs, info = env.reset_to_demo(demo)
        assert info["variation"] == 1
        replayed = np.array_equal(obs["front_image"], recorded)
        # 8fc31bfa re-samples num_reset_attempts times (c7c50edb); 7c3f425 stops at the first
        # placement in demo mode (scene.py:114-148) and lands elsewhere
        assert replayed == (commit == "8fc31bfa")
        env.close()


def test_reset_to_demo_restores_the_variation_colosseums_task_env_forgets():
    with fake_rlbench(colosseum=True, colosseum_commit="098a910"):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16, colosseum=True)
        demo = live_demo(env, variation=2)
        env.reset(seed=0)  # variation 0
        # the real TaskEnvironmentExt.reset_to_demo is restore_state(); reset() (098a910,
        # extensions/task_environment.py:83-85): the variation stays 0
        assert env.task_env.reset_to_demo(demo)[1].misc["variation_index"] == 0
        obs, info = env.reset_to_demo(demo)
        assert info["variation"] == 2
        np.testing.assert_array_equal(obs["front_image"], demo[0].front_rgb)
        env.close()


@pytest.mark.parametrize(
    "commit, source",
    [
        ("8fc31bfa", "recorded joint_position_action (7 joints + gripper)"),
        ("7c3f425", "recorded executed_demo_joint_position_action (7 joints) + next gripper_open; "
                    "1 of 12 steps from the next observed joints"),
    ],
)  # fmt: skip
def test_live_demo_files_load_with_their_recorded_actions(tmp_path, commit, source):
    """Files as RLBench's dataset generator writes them (pickle.dump of the Demo with the images
    set to None, PNGs beside it) from each commit's recorder; read without rlbench."""
    import pickle

    from PIL import Image

    from stemob.data.rlbench import RLBenchReader

    folder = tmp_path / "open_drawer" / "variation0" / "episodes" / "episode0"
    (folder / "front_rgb").mkdir(parents=True)
    with fake_rlbench(colosseum=False, rlbench_commit=commit):
        env = RLBenchEnv("open_drawer", cameras=("front",), image_size=16)
        demo = live_demo(env)
        env.close()
        for i, o in enumerate(demo._observations):
            Image.fromarray(o.front_rgb).save(folder / "front_rgb" / f"{i}.png")
            for cam in ("left_shoulder", "right_shoulder", "overhead", "wrist", "front"):
                setattr(o, f"{cam}_rgb", None)
        (folder / "low_dim_obs.pkl").write_bytes(pickle.dumps(demo))
    episode = RLBenchReader(tmp_path).read(0)  # the fake is gone: no rlbench module now
    assert episode.attrs["action_source"] == source
    observations = demo._observations
    for t in range(len(observations) - 1):
        misc = observations[t + 1].misc
        if "joint_position_action" in misc:
            np.testing.assert_allclose(episode.actions[t], misc["joint_position_action"])
        elif "executed_demo_joint_position_action" in misc:
            np.testing.assert_allclose(
                episode.actions[t], [*misc["executed_demo_joint_position_action"],
                                     observations[t + 1].gripper_open],
            )  # fmt: skip
    # the recorded targets lead the observed joints: they are not the next joint positions
    assert not np.allclose(episode.actions[:-1, :7], episode.obs["joint_positions"][1:])
    assert ("joint_poses" in episode.extras) == (commit == "8fc31bfa")


def test_colosseum_refuses_rlbench_head_and_the_adapter_names_the_pin():
    with fake_rlbench(colosseum=True, rlbench_commit="02720bba") as fake:
        from envs.rlbench.testing import EnvironmentExt, MoveArmThenGripper

        with pytest.raises(RuntimeError, match="Unexpected number of arguments"):
            EnvironmentExt(MoveArmThenGripper(None, None))  # what Colosseum itself does
        with pytest.raises(StemobError, match=r"(?s)has 15.*02720bba.*RLBench.git@8fc31bfa"):
            RLBenchEnv("open_drawer", colosseum=True)
        assert not fake.running
    with fake_rlbench(colosseum=False, rlbench_commit="02720bba"):  # plain RLBench HEAD works
        RLBenchEnv("open_drawer", cameras=("front",), image_size=16).close()


def test_one_simulator_per_process():
    with fake_rlbench(colosseum=False):
        first = RLBenchEnv("open_drawer", cameras=("front",), image_size=16)
        with pytest.raises(StemobError, match="one CoppeliaSim per process"):
            RLBenchEnv("open_drawer", cameras=("front",), image_size=16)
        first.close()
        RLBenchEnv("open_drawer", cameras=("front",), image_size=16).close()
        with pytest.raises(StemobError, match="variation"):  # a refused env frees the simulator
            RLBenchEnv("open_drawer", variation=7)
        RLBenchEnv("open_drawer", cameras=("front",), image_size=16).close()
