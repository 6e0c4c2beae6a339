"""robosuite backend: rebuild Lift from a recorded dataset's env_args, upright images,
perturbation factors through the model's arrays, and a short rollout of a tiny policy.

Skipped where the ``robosuite`` extra is not installed.
"""

from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pytest

robosuite = pytest.importorskip("robosuite")

from envs.record import make_env_from_args  # noqa: E402
from stemob.data.episodes import Episode  # noqa: E402
from stemob.data.robomimic import write_robomimic  # noqa: E402
from stemob.errors import StemobError  # noqa: E402

SIZE = 48
# env_args as robomimic v1.4 datasets store them (robosuite 1.4 controller config).
LIFT_ENV_ARGS = {
    "env_name": "Lift",
    "type": 1,
    "env_kwargs": {
        "has_renderer": False,
        "has_offscreen_renderer": True,
        "ignore_done": True,
        "use_object_obs": True,
        "use_camera_obs": True,
        "control_freq": 20,
        "controller_configs": {
            "type": "OSC_POSE", "input_max": 1, "input_min": -1,
            "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
            "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
            "kp": 150, "damping_ratio": 1, "impedance_mode": "fixed", "kp_limits": [0, 300],
            "damping_ratio_limits": [0, 10], "position_limits": None,
            "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True,
            "interpolation": None, "ramp_ratio": 0.2,
        },
        "robots": ["Panda"],
        "camera_depths": False,
        "camera_heights": SIZE,
        "camera_widths": SIZE,
        "reward_shaping": False,
        "camera_names": ["agentview", "robot0_eye_in_hand"],
    },
}  # fmt: skip


def factor(variation: str, **params) -> dict:
    entry = {"variation": variation, "name": variation, "enabled": True, "seed": 7, **params}
    return {"env": {"scene": {"factors": [entry]}}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A two-step robomimic HDF5 recorded from robosuite's Lift, with v1.4-style env_args."""
    from envs.robosuite.env import RobosuiteEnv

    env = RobosuiteEnv("Lift", LIFT_ENV_ARGS["env_kwargs"], image_size=SIZE)
    obs, _ = env.reset(seed=3)
    frames, actions, states = [obs], [], [env.get_state()]
    for _ in range(2):
        a = np.zeros(7, np.float32)
        obs, *_ = env.step(a)
        actions.append(a)
        frames.append(obs)
        states.append(env.get_state())
    env.close()
    keys = ("agentview_image", "robot0_eef_pos", "object")
    episode = Episode(
        obs={k: np.stack([f[k] for f in frames[:-1]]) for k in keys},
        actions=np.stack(actions),
        states=np.stack(states[:-1]),
    )
    path = tmp_path_factory.mktemp("rs") / "lift.hdf5"
    write_robomimic(path, [episode], env_args=LIFT_ENV_ARGS)
    return path


@pytest.fixture(scope="module")
def env(dataset):
    with h5py.File(dataset, "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    env = make_env_from_args(env_args, cameras=["agentview"], image_size=SIZE)
    yield env
    env.close()


def cube_pixel(env) -> tuple[float, float]:
    """Where the cube centre projects in the agentview image (row from the top, column)."""
    sim = env.env.sim
    m, d = sim.model._model, sim.data._data
    cid = m.camera("agentview").id
    body = m.body(env.env.cube.root_body).id
    rel = d.cam_xmat[cid].reshape(3, 3).T @ (d.xpos[body] - d.cam_xpos[cid])
    f = 0.5 * SIZE / np.tan(np.deg2rad(m.cam_fovy[cid]) / 2)
    return SIZE / 2 - f * rel[1] / -rel[2], SIZE / 2 + f * rel[0] / -rel[2]


def red_centroid(img: np.ndarray) -> tuple[float, float]:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    mask = (r > 100) & (r > 2 * g) & (r > 2 * b)
    assert mask.sum() >= 2, "cube not visible"
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def test_rebuilt_from_dataset_env_args(env, dataset):
    assert env.env_name == "Lift"
    assert env.env_args["type"] == 1
    obs, info = env.reset(seed=0)
    assert obs["agentview_image"].shape == (SIZE, SIZE, 3)
    assert obs["agentview_image"].dtype == np.uint8
    assert info["is_success"] is False
    # the dataset's low-dim keys are present with the stored shapes
    with h5py.File(dataset, "r") as f:
        for key in ("robot0_eef_pos", "object"):
            assert obs[key].shape == f[f"data/demo_0/obs/{key}"].shape[1:]
    q = obs["robot0_eef_quat"]
    np.testing.assert_allclose(obs["eef_quat"], [q[3], q[0], q[1], q[2]])
    obs2, reward, terminated, truncated, info = env.step(np.zeros(7))
    assert set(obs2) == set(obs) and not terminated and not truncated
    assert info["is_success"] is False


def test_images_are_upright(env):
    obs, _ = env.reset(seed=1)
    row, col = red_centroid(obs["agentview_image"])
    exp_row, exp_col = cube_pixel(env)
    assert abs(row - exp_row) < 4 and abs(col - exp_col) < 4, ((row, col), (exp_row, exp_col))


def test_reset_seed_is_reproducible(env):
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=6)
    c, _ = env.reset(seed=5)
    np.testing.assert_array_equal(a["object"], c["object"])
    assert not np.allclose(a["object"], b["object"])


def test_success_reaches_info(env):
    env.reset(seed=0)
    sim = env.env.sim
    joint = env.env.cube.joints[0]
    qpos = sim.data.get_joint_qpos(joint).copy()
    qpos[2] += 0.2
    sim.data.set_joint_qpos(joint, qpos)
    sim.forward()
    _, _, terminated, _, info = env.step(np.zeros(7))
    assert info["is_success"] is True and terminated


IMAGE_FACTORS = {
    "light_color": factor("light_color", color_range=[[0, 0, 0], [0.3, 0.3, 0.3]]),
    "camera_pose": factor(
        "camera_pose", targets=["front"], euler_range=[[-0.1] * 3, [0.1] * 3],
        position_range=[[-0.1] * 3, [0.1] * 3],
    ),
    "mo_color": factor("object_color", targets=["manipulated_object"],
                       color_range=[[0, 0.5, 0], [0, 1, 0]]),
    "table_color": factor("table_color", color_range=[[0, 0, 0.5], [0, 0, 1]]),
    "mo_texture": factor("object_texture", targets=["manipulated_object"], texture_pool="eval"),
    "table_texture": factor("table_texture", texture_pool="eval"),
    "background_texture": factor("background_texture", texture_pool="eval"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(IMAGE_FACTORS))
def test_factor_changes_image(dataset, name):
    with h5py.File(dataset, "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    plain = make_env_from_args(env_args, cameras=["agentview"], image_size=SIZE)
    base = plain.reset(seed=2)[0]["agentview_image"]
    plain.close()
    env = make_env_from_args(
        env_args, cameras=["agentview"], image_size=SIZE, perturbation=IMAGE_FACTORS[name]
    )
    first = env.reset(seed=2)[0]["agentview_image"]
    other = env.reset(seed=3)[0]["agentview_image"]
    again = env.reset(seed=2)[0]["agentview_image"]
    env.close()
    changed = (np.abs(first.astype(int) - base).sum(-1) > 30).sum()
    assert changed >= 4, (name, changed)
    np.testing.assert_array_equal(first, again)  # same reset seed, same appearance
    assert not np.array_equal(first, other)
    if name == "mo_color":  # the red cube turned green
        r, g, b = (first[..., i].astype(int) for i in range(3))
        assert ((g > 2 * r + 10) & (g > 2 * b + 10)).sum() >= 2
        assert red_centroid(base)  # it was red before


def test_physics_factors_change_the_model():
    args = copy.deepcopy(LIFT_ENV_ARGS)
    cfg = factor("object_friction", targets=["manipulated_object"], friction_range=[1.7, 1.9])
    cfg["env"]["scene"]["factors"].append(
        {"variation": "object_mass", "name": "m", "enabled": True, "seed": 3,
         "targets": ["manipulated_object"], "mass_range": [0.5, 0.6]}
    )  # fmt: skip
    env = make_env_from_args(args, cameras=[], perturbation=cfg)
    env.reset(seed=0)
    m = env.env.sim.model._model
    body = m.body(env.env.cube.root_body).id
    geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] == body]
    assert all(1.7 <= m.geom_friction[g, 0] <= 1.9 for g in geoms)
    assert 0.5 <= m.body_mass[body] <= 0.6
    env.close()


@pytest.mark.parametrize("variation", ["object_size", "distractor_object"])
def test_unsupported_factors_are_refused(variation):
    params = (
        {"targets": ["manipulated_object"], "scale_range": [0.8, 1.2]}
        if variation == "object_size"
        else {"num_objects": 2}
    )
    with pytest.raises(StemobError, match=f"{variation} cannot be expressed"):
        make_env_from_args(LIFT_ENV_ARGS, cameras=[], perturbation=factor(variation, **params))


def test_bad_targets_and_args_are_clear():
    cfg = factor("object_color", targets=["receiver_object"], color_range=[[0] * 3, [1] * 3])
    with pytest.raises(StemobError, match="receiver_object"):
        make_env_from_args(LIFT_ENV_ARGS, cameras=[], perturbation=cfg)
    with pytest.raises(StemobError, match="NoSuchEnv"):
        make_env_from_args({**LIFT_ENV_ARGS, "env_name": "NoSuchEnv"}, cameras=[])
    with pytest.raises(StemobError, match="env_args type"):
        make_env_from_args({**LIFT_ENV_ARGS, "type": 99})


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_policy_rollout(env):
    import torch

    from policies import make_policy
    from policies.diffusion import small_config
    from policies.testing import batch_stats, synthetic_batch

    shapes = {"agentview_image": [3, SIZE, SIZE], "robot0_eef_pos": [3]}
    config = small_config(
        shapes, 7, horizon=8, n_action_steps=4, down_dims=[16, 32], num_inference_steps=2
    )
    stats = batch_stats(synthetic_batch(shapes, 7, batch=2, n_obs_steps=2, horizon=8))
    torch.manual_seed(0)
    policy = make_policy("diffusion", config, stats=stats, env_args=env.env_args).eval()
    obs, _ = env.reset(seed=0)
    history = [obs, obs]
    for _ in range(5):
        batch = {
            "agentview_image": torch.from_numpy(
                np.stack([h["agentview_image"] for h in history])
            ).permute(0, 3, 1, 2)[None],
            "robot0_eef_pos": torch.from_numpy(np.stack([h["robot0_eef_pos"] for h in history]))[
                None
            ],
        }
        action = policy.select_action(batch)[0].numpy()
        assert action.shape == (7,) and np.isfinite(action).all()
        obs, _, terminated, truncated, info = env.step(action)
        assert isinstance(info["is_success"], bool)
        history = [history[-1], obs]
        if terminated or truncated:
            break
    assert policy.env_args["env_name"] == "Lift"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_runs_on_the_dataset_env(dataset):
    """The evaluation runner rebuilds the dataset's robosuite env from the policy's env_args."""
    import torch

    from policies import make_policy
    from policies.diffusion import small_config
    from policies.testing import batch_stats, synthetic_batch
    from stemob.evaluation import evaluate

    with h5py.File(dataset, "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    shapes = {"agentview_image": [3, SIZE, SIZE], "object": [10]}
    config = small_config(
        shapes, 7, horizon=8, n_action_steps=4, down_dims=[16, 32], num_inference_steps=2
    )
    stats = batch_stats(synthetic_batch(shapes, 7, batch=2, n_obs_steps=2, horizon=8))
    torch.manual_seed(0)
    policy = make_policy("diffusion", config, stats=stats, env_args=env_args).eval()
    result = evaluate(policy, episodes=1, max_steps=6, progress=False)
    assert result.errors == 0, [r.error for r in result.records]
    assert result.records[0].length == 6 and result.records[0].success is False


def test_every_build_draws_the_same_scene():
    """robosuite draws Lift's cube size at build from an unseeded generator; the backend seeds
    it, so two envs of one run (two factors, two evaluation sub-envs) hold the same cube."""
    masses = []
    for _ in range(2):
        env = make_env_from_args(LIFT_ENV_ARGS, cameras=[], image_size=SIZE)
        masses.append(env.env.sim.model._model.body_mass.copy())
        env.close()
    np.testing.assert_array_equal(masses[0], masses[1])


def test_envs_built_after_a_close_render_like_the_first():
    """robosuite frees a closed env's GL context whenever the garbage collector gets to it, and
    then frees the current (next) env's buffers: black or striped frames. The backend frees it
    at close, and makes each env's context current before it renders."""
    import gc

    def frames(env):
        first = env.reset(seed=0)[0]["agentview_image"]
        return first, env.step(np.zeros(env.action_space.shape))[0]["agentview_image"]

    env = make_env_from_args(LIFT_ENV_ARGS, cameras=["agentview"], image_size=SIZE)
    expected = frames(env)
    env.close()
    for _ in range(2):
        env = make_env_from_args(LIFT_ENV_ARGS, cameras=["agentview"], image_size=SIZE)
        gc.collect()  # where robosuite's own clean-up of the closed env would run
        for got, want in zip(frames(env), expected, strict=True):
            differ = (np.abs(got.astype(int) - want).sum(-1) > 30).mean()
            assert differ < 0.01, f"{differ:.0%} of the pixels differ from the first env's"
        env.close()
    # two envs alive at once render their own scenes, whichever was built last
    a = make_env_from_args(LIFT_ENV_ARGS, cameras=["agentview"], image_size=SIZE)
    b = make_env_from_args(LIFT_ENV_ARGS, cameras=["agentview"], image_size=SIZE,
                           perturbation=IMAGE_FACTORS["table_color"])  # fmt: skip
    got = a.reset(seed=0)[0]["agentview_image"]
    b.reset(seed=0)
    assert (np.abs(got.astype(int) - expected[0]).sum(-1) > 30).mean() < 0.01
    assert (np.abs(a.render().astype(int) - expected[0]).sum(-1) > 30).mean() < 0.01
    a.close()
    b.close()


def test_rerendered_robosuite_demos_carry_camera_matrices_and_poses_for_genima(dataset, tmp_path):
    """envs.rerender adds every frame's camera matrices and joint / gripper world poses to a
    robosuite file; the matrices project the cube onto its pixels and GENIMA's dataset is built."""
    from envs.rerender import rerender
    from stemob.genima.dataset import GenimaDatasetConfig, build_dataset
    from stemob.genima.targets import project

    out = rerender(dataset, tmp_path / "lift_poses.hdf5", cameras=["agentview"], image_size=SIZE)
    with h5py.File(out, "r") as f:
        demo = f["data/demo_0"]
        assert demo["extras/joint_world_pos"].shape == (2, 7, 3)
        k, e = demo["extras/agentview_intrinsics"][0], demo["extras/agentview_extrinsics"][0]
        cube = demo["obs/object"][0, :3]  # robosuite's cube_pos
        image = demo["obs/agentview_image"][0]
        assert demo["obs/gripper_open"].shape == (2, 1)
    (u, v), _ = project(cube[None], k, e)[0][0], None
    row, col = red_centroid(image)
    assert abs(row - (v - 0.5)) < 1.5 and abs(col - (u - 0.5)) < 1.5  # pixel centres at +0.5
    with pytest.raises(StemobError, match="horizon 5 is not shorter"):
        build_dataset(out, GenimaDatasetConfig(horizon=5), tmp_path / "g.hdf5", progress=False)
    path = build_dataset(out, GenimaDatasetConfig(horizon=1), tmp_path / "g.hdf5", progress=False)
    with h5py.File(path, "r") as f:
        assert f["data/demo_0/obs/agentview_target"].shape == (2, SIZE, SIZE, 3)
