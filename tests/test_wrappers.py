"""envs.wrappers: test-time Stem-OB inversion (== the dataset cache), vector batching, multi-step
chunks and videos."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from envs.wrappers import (
    MultiStepWrapper,
    StemobObservation,
    VectorStemobObservation,
    VideoRecorder,
    invert_observations,
    write_mp4,
)
from stemob.errors import StemobError
from stemob.inversion.inverter import Inverter
from stemob.inversion.settings import InversionSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CAMERAS = ("front", "wrist")
KEYS = ("front_image", "wrist_image")


@pytest.fixture(scope="module")
def settings(tiny_uncond_model) -> InversionSettings:
    return InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=10, seed=3)


@pytest.fixture(scope="module")
def inverter(settings) -> Inverter:
    return Inverter(settings)


@pytest.fixture(scope="module")
def demos(tmp_path_factory, settings):
    """Two recorded lift_cube demos (32 px, front + wrist) and their Stem-OB cache."""
    from envs.record import record
    from stemob.inversion.dataset_cache import build_cache

    folder = tmp_path_factory.mktemp("demos")
    path = folder / "lift.hdf5"
    record("lift_cube", 2, path, image_size=32, cameras=CAMERAS, seed=0, progress=False)
    cache = build_cache(path, settings, device="cpu", progress=False)
    return path, cache


def make_env(**kwargs):
    from envs.tabletop.env import TabletopEnv

    return TabletopEnv("lift_cube", image_size=32, cameras=CAMERAS, **kwargs)


def test_wrapper_reproduces_the_dataset_cache(demos, inverter):
    from envs.record import make_env_from_args

    path, cache = demos
    with h5py.File(path, "r") as src, h5py.File(cache, "r") as inv:
        env_kwargs = json.loads(src["data"].attrs["env_args"])["env_kwargs"]
        for number in range(2):
            demo = f"demo_{number}"
            seed = json.loads(src["data"][demo].attrs["stemob_attrs"])["seed"]
            base = make_env_from_args({"type": "stemob_tabletop", "env_kwargs": env_kwargs})
            env = StemobObservation(base, inverter=inverter)
            assert seed == number  # the cache's episode id is the demo number
            obs, _ = env.reset(seed=seed)
            actions = src["data"][demo]["actions"][:]
            for step in range(len(actions)):
                for key in KEYS:
                    raw = src["data"][demo]["obs"][key][step]
                    cached = inv["data"][demo]["obs"][key][step]
                    assert np.array_equal(env.unwrapped._obs()[key], raw), (demo, step, key)
                    assert not np.array_equal(cached, raw)
                    assert np.array_equal(obs[key], cached), (demo, step, key)
                obs, *_ = env.step(actions[step])
            env.close()


def test_demo_seed_is_the_episode_when_the_expert_never_fails(demos):
    path, _ = demos
    with h5py.File(path, "r") as src:
        seeds = [json.loads(src["data"][f"demo_{i}"].attrs["stemob_attrs"])["seed"] for i in (0, 1)]
    assert seeds == [0, 1]  # record(seed=0): attempts 0, 1 both succeed, demo_i has seed i


def test_wrapper_frame_ids_and_settings(inverter, settings):
    env = StemobObservation(make_env(), settings, inverter=inverter)
    obs, _ = env.reset(seed=11)
    assert (env.episode, env.step_count) == (11, 0)
    raw = env.unwrapped._obs()
    expected = inverter.invert(np.stack([raw[k] for k in KEYS]), [(11, 0, k) for k in KEYS])
    for key, image in zip(KEYS, expected, strict=True):
        assert np.array_equal(obs[key], image)
    assert np.array_equal(obs["joint_positions"], raw["joint_positions"])
    env.step(np.zeros(7))
    env.step(np.zeros(7))
    assert env.step_count == 2
    obs, _ = env.reset(seed=11, options={"episode": 4})  # e.g. demo_4 recorded with seed 11
    assert (env.episode, env.step_count) == (4, 0)
    renamed = inverter.invert(np.stack([raw[k] for k in KEYS]), [(4, 0, k) for k in KEYS])
    assert np.array_equal(obs["front_image"], renamed[0])
    assert not np.array_equal(renamed[0], expected[0])  # another episode id, other noise
    other = make_env()
    with pytest.raises(StemobError, match="settings"):
        StemobObservation(other, InversionSettings(seed=99), inverter=inverter)
    with pytest.raises(StemobError, match="not in the observation space"):
        StemobObservation(other, inverter=inverter, keys=["overhead_image"])
    other.close()
    env.close()


def test_invert_observations_uses_one_call_per_size(inverter):
    calls = []

    class Counting:
        def invert(self, images, ids, **kwargs):
            calls.append(list(ids))
            return inverter.invert(images, ids, **kwargs)

    rng = np.random.default_rng(0)
    observations = [
        {k: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for k in KEYS} for _ in range(3)
    ]
    out = invert_observations(Counting(), observations, [(5, 0), (6, 2), (7, 1)], KEYS)
    assert len(calls) == 1 and len(calls[0]) == 6
    assert (6, 2, "wrist_image") in calls[0]
    single = inverter.invert(observations[1]["wrist_image"], [(6, 2, "wrist_image")])
    # the same frame id gives the same noise; batched convolutions may round 1 level apart
    diff = np.abs(out[1]["wrist_image"].astype(int) - single.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05


def test_vector_wrapper_matches_single_env_wrappers(inverter):
    vec = gym.vector.SyncVectorEnv([make_env, make_env])
    wrapped = VectorStemobObservation(vec, inverter=inverter)
    singles = [StemobObservation(make_env(), inverter=inverter) for _ in range(2)]
    obs, _ = wrapped.reset(seed=[20, 31])
    ref = [s.reset(seed=seed)[0] for s, seed in zip(singles, (20, 31), strict=True)]
    rng = np.random.default_rng(1)
    for step in range(3):
        for i in range(2):
            for key in KEYS:
                assert np.array_equal(obs[key][i], ref[i][key]), (step, i, key)
        actions = rng.uniform(-0.05, 0.05, (2, 7)).astype(np.float32)
        obs, *_ = wrapped.step(actions)
        ref = [s.step(a)[0] for s, a in zip(singles, actions, strict=True)]
    assert wrapped.steps.tolist() == [3, 3] and wrapped.episodes.tolist() == [20, 31]
    wrapped.close()
    for single in singles:
        single.close()


def test_latent_output_matches_the_inverter_and_the_observation_space(inverter):
    """output='latent': single and vector wrappers emit the inverter's latents of the same frame
    ids, with the shape their observation spaces declare."""
    single = StemobObservation(make_env(), inverter=inverter, output="latent")
    raw = make_env()
    obs, _ = single.reset(seed=5)
    frames, _ = raw.reset(seed=5)
    stacked = np.stack([frames[key] for key in KEYS])  # one call for both cameras, as the wrapper
    expected = inverter.invert(stacked, [(5, 0, key) for key in KEYS], output="latent").numpy()
    for key, latent in zip(KEYS, expected, strict=True):
        assert (
            obs[key].dtype == np.float32 and obs[key].shape == single.observation_space[key].shape
        )
        np.testing.assert_array_equal(obs[key], latent)
    vec = gym.vector.SyncVectorEnv([make_env, make_env])
    wrapped = VectorStemobObservation(vec, inverter=inverter, output="latent")
    batch, _ = wrapped.reset(seed=[5, 6])
    assert batch["front_image"].shape == (2, *single.observation_space["front_image"].shape)
    assert wrapped.observation_space["front_image"].shape == batch["front_image"].shape
    np.testing.assert_array_equal(batch["front_image"][0], obs["front_image"])
    with pytest.raises(StemobError, match="output"):
        StemobObservation(make_env(), inverter=inverter, output="latents")
    for env in (single, raw, wrapped):
        env.close()


def test_vector_wrapper_autoreset_restarts_frame_ids(inverter):
    vec = gym.vector.SyncVectorEnv(
        [lambda: gym.wrappers.TimeLimit(make_env(), max_episode_steps=2)] * 2
    )
    wrapped = VectorStemobObservation(vec, inverter=inverter)
    wrapped.reset(seed=0)
    assert wrapped.episodes.tolist() == [0, 1]
    for _ in range(2):
        _, _, _, truncated, _ = wrapped.step(np.zeros((2, 7), np.float32))
    assert truncated.all()
    wrapped.step(np.zeros((2, 7), np.float32))  # NextStep autoreset: the reset observations
    assert wrapped.steps.tolist() == [0, 0]
    assert wrapped.episodes.tolist() == [int(s) for s in vec.get_attr("reset_seed")]
    wrapped.close()


# ---------------------------------------------------------------------- multi-step


class CounterEnv(gym.Env):
    """obs = the step counter (image and state); terminates when the counter reaches ``end``."""

    def __init__(self, end: int = 100) -> None:
        self.end = end
        self.observation_space = gym.spaces.Dict(
            {
                "cam_image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                "count": gym.spaces.Box(-1e9, 1e9, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(-10, 10, (1,), np.float32)
        self.actions: list[float] = []

    def _obs(self):
        return {
            "cam_image": np.full((16, 16, 3), self.t, np.uint8),
            "count": np.array([self.t], np.float32),
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {"t": 0}

    def step(self, action):
        self.actions.append(float(np.asarray(action).reshape(-1)[0]))
        self.t += 1
        return self._obs(), 1.0 + self.t, self.t >= self.end, False, {"t": self.t}


def test_multistep_stacks_and_repeats_the_first_observation():
    env = MultiStepWrapper(CounterEnv(), n_obs_steps=3, n_action_steps=2)
    obs, _ = env.reset()
    assert obs["count"].shape == (3, 1) and obs["count"][:, 0].tolist() == [0, 0, 0]
    assert obs["cam_image"].shape == (3, 16, 16, 3)
    assert env.observation_space["cam_image"].shape == (3, 16, 16, 3)
    obs, reward, terminated, truncated, info = env.step(np.arange(5.0)[:, None])
    assert obs["count"][:, 0].tolist() == [0, 1, 2]  # only n_action_steps=2 actions ran
    assert env.env.actions == [0.0, 1.0]
    assert reward == pytest.approx(2.0 + 3.0) and info == {"t": 2, "executed_steps": 2}
    obs, *_ = env.step(np.array([7.0]))  # a single action
    assert obs["count"][:, 0].tolist() == [1, 2, 3]


def test_multistep_stops_a_chunk_at_termination_and_max_steps():
    env = MultiStepWrapper(CounterEnv(end=3), n_obs_steps=2)
    env.reset()
    _, reward, terminated, truncated, info = env.step(np.zeros((8, 1)))
    assert terminated and not truncated and info["executed_steps"] == 3
    assert reward == pytest.approx(2 + 3 + 4)
    env = MultiStepWrapper(CounterEnv(), n_obs_steps=1, max_episode_steps=4)
    env.reset()
    assert not env.step(np.zeros((3, 1)))[3]
    _, _, terminated, truncated, info = env.step(np.zeros((3, 1)))
    assert truncated and not terminated and info["executed_steps"] == 1
    with pytest.raises(StemobError, match="chunk"):
        env.step(np.zeros((2, 2, 1)))


# ---------------------------------------------------------------------- videos


def test_video_recorder_writes_the_first_episodes(tmp_path):
    import imageio.v2 as imageio

    env = VideoRecorder(CounterEnv(end=4), tmp_path, key="cam_image", episodes=1, fps=10)
    for _ in range(2):
        env.reset()
        for _ in range(4):
            env.step(np.zeros(1))
    env.close()
    assert [p.name for p in env.paths] == ["episode_000.mp4"]
    with imageio.get_reader(env.paths[0]) as reader:
        frames = [frame for frame in reader]  # noqa: C416 (list() asks len(): inf)
    assert len(frames) == 5 and frames[0].shape == (16, 16, 3)
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_mp4_pads_odd_sizes_and_rejects_bad_frames(tmp_path):
    import imageio.v2 as imageio

    path = write_mp4(tmp_path / "odd.mp4", [np.zeros((7, 9, 3), np.uint8)] * 3, fps=5)
    with imageio.get_reader(path) as reader:
        assert next(iter(reader)).shape == (8, 10, 3)
    with pytest.raises(StemobError, match="uint8"):
        write_mp4(tmp_path / "bad.mp4", [np.zeros((8, 8), np.uint8)])
    with pytest.raises(StemobError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])


def test_video_recorder_refuses_stacked_frames(tmp_path):
    stacked = MultiStepWrapper(CounterEnv(), n_obs_steps=2)
    with pytest.raises(StemobError, match="inside MultiStepWrapper"):
        VideoRecorder(stacked, tmp_path, key="cam_image")
    with pytest.raises(StemobError, match="'nope'"):
        VideoRecorder(CounterEnv(), tmp_path, key="nope")
