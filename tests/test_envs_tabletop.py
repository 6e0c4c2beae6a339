"""The tabletop suite: registration, observations, action modes, reproducibility, experts."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.tabletop.env import TabletopEnv
from stemob.errors import StemobError

TASKS = ["lift_cube", "push_to_target", "open_drawer", "put_in_bowl"]


def run_expert(env: TabletopEnv, seeds: range) -> int:
    expert = env.task.make_expert(env)
    wins = 0
    for seed in seeds:
        env.reset(seed=seed)
        expert.reset()
        for _ in range(env.task.max_episode_steps):
            _, _, terminated, _, info = env.step(expert.act())
            if terminated:
                break
        wins += int(info["is_success"])
    return wins


def test_gym_make_observations_and_info():
    env = gym.make("tabletop/LiftCube-v0", image_size=48, cameras=("front", "wrist"))
    assert env.spec.max_episode_steps == 100
    obs, info = env.reset(seed=0)
    assert set(obs) == {
        "front_image",
        "wrist_image",
        "joint_positions",
        "gripper_open",
        "eef_pos",
        "eef_quat",
    }
    assert obs["front_image"].shape == (48, 48, 3) and obs["front_image"].dtype == np.uint8
    assert obs["joint_positions"].shape == (7,)
    assert obs["gripper_open"][0] == pytest.approx(1.0, abs=0.01)
    assert obs["eef_pos"][2] == pytest.approx(0.25, abs=0.01)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample() * 0)
    assert info["is_success"] is False and reward == 0.0
    assert info["joint_world_pos"].shape == (7, 3)
    cam = info["cameras"]["front"]
    assert cam["intrinsics"].shape == (3, 3) and cam["extrinsics"].shape == (4, 4)
    # The eef projects inside the image through the documented camera model.
    p = cam["extrinsics"] @ np.append(info["gripper_world_pos"], 1.0)
    uv = (cam["intrinsics"] @ p[:3])[:2] / p[2]
    assert p[2] > 0 and np.all((uv > 0) & (uv < 48))
    env.close()
    assert set(envs.GYM_IDS.values()) <= set(gym.registry)


def test_images_upright_and_fresh():
    env = TabletopEnv("lift_cube", image_size=64, cameras=("front",))
    obs, _ = env.reset(seed=1)
    img = obs["front_image"].astype(float)
    # Front camera: the table (brown) fills the bottom rows, the wall (grey-blue) the top rows.
    bottom, top = img[-5:].mean(axis=(0, 1)), img[:3].mean(axis=(0, 1))
    assert bottom[0] > bottom[2] and top[2] >= top[0] - 5
    before = obs["front_image"].copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([0.05, 0, 0, 0, 0, 0, 1], np.float32))
    assert np.abs(obs["front_image"].astype(int) - before).mean() > 0.5
    env.close()


def test_reset_is_reproducible():
    env = TabletopEnv("put_in_bowl", image_size=32, cameras=("overhead",))
    a, _ = env.reset(seed=5)
    qa = env.data.qpos.copy()
    b, _ = env.reset(seed=6)
    c, _ = env.reset(seed=5)
    np.testing.assert_array_equal(a["overhead_image"], c["overhead_image"])
    np.testing.assert_array_equal(qa, env.data.qpos)
    assert not np.array_equal(a["overhead_image"], b["overhead_image"])
    env.close()


def test_ee_delta_and_joint_position_modes():
    env = TabletopEnv("lift_cube", image_size=16, cameras=("front",))
    obs, _ = env.reset(seed=0)
    start = obs["eef_pos"].copy()
    for _ in range(4):
        obs, *_ = env.step(np.array([0.02, -0.01, -0.02, 0, 0, 0, 1], np.float32))
    for _ in range(4):  # the servo lags the goal by about a step; let it settle
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1], np.float32))
    np.testing.assert_allclose(obs["eef_pos"] - start, [0.08, -0.04, -0.08], atol=0.015)
    # Out-of-bounds actions are clipped to the documented bounds (5 cm per step).
    start = obs["eef_pos"].copy()
    obs, *_ = env.step(np.array([1.0, 0, 0, 0, 0, 0, 1], np.float32))
    assert obs["eef_pos"][0] - start[0] < 0.055
    env.close()

    env = TabletopEnv("lift_cube", image_size=16, cameras=("front",), action_mode="joint_position")
    obs, _ = env.reset(seed=0)
    target = obs["joint_positions"] + np.array([0.2, -0.1, 0, 0.1, 0, 0.1, 0.3], np.float32)
    for _ in range(10):
        obs, *_ = env.step(np.append(target, -1.0))
    np.testing.assert_allclose(obs["joint_positions"], target, atol=0.02)
    assert obs["gripper_open"][0] < 0.05
    env.close()


def test_state_roundtrip():
    env = TabletopEnv("push_to_target", image_size=32, cameras=("front",))
    env.reset(seed=2)
    for _ in range(3):
        env.step(np.array([0.01, 0.01, -0.02, 0, 0, 0.1, -1], np.float32))
    state = env.get_state()
    image = env.render_camera("front")
    env.reset(seed=9)
    env.set_state(state)
    np.testing.assert_array_equal(env.render_camera("front"), image)
    env.close()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"task": "fold_laundry"}, "task"),
        ({"cameras": ("front", "sky")}, "cameras"),
        ({"action_mode": "torque"}, "action_mode"),
    ],
)
def test_bad_options(kwargs, field):
    with pytest.raises(StemobError, match=field):
        TabletopEnv(**kwargs)


@pytest.mark.parametrize("task", TASKS)
def test_expert_fast(task):
    env = TabletopEnv(task, image_size=16, cameras=("front",))
    assert run_expert(env, range(10)) >= 9
    env.close()


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_expert_success_rate_100(task):
    env = TabletopEnv(task, image_size=16, cameras=("front",))
    assert run_expert(env, range(100)) >= 95
    env.close()


def test_unknown_camera_or_action_mode_is_refused_by_name():
    from envs.tabletop.env import TabletopEnv

    with pytest.raises(StemobError, match=r"camera\(s\) \['side'\].*'cameras'"):
        TabletopEnv("lift_cube", cameras="front,side")
    with pytest.raises(StemobError, match="action_mode 'torque'"):
        TabletopEnv("lift_cube", action_mode="torque")
