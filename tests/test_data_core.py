"""stemob.data core: episodes, sampler, normaliser, robomimic HDF5 and DemoDataset (with Stem-OB)."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch

from stemob.data.dataset import DatasetConfig, DemoDataset
from stemob.data.episodes import Episode
from stemob.data.normalizer import Normalizer, compute_stats
from stemob.data.robomimic import RobomimicReader, write_robomimic
from stemob.data.sampler import SequenceSampler, split_episodes
from stemob.errors import CacheMismatchError, StemobError
from stemob.inversion.dataset_cache import FORMAT_VERSION, cache_path, read_layout
from stemob.inversion.settings import InversionSettings


def make_episodes(count=3, lengths=(12, 7, 9), size=16, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        t = lengths[i % len(lengths)]
        out.append(
            Episode(
                obs={
                    "front_rgb": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
                    "wrist_rgb": rng.integers(0, 256, (t, size, size + 4, 3), dtype=np.uint8),
                    "joint_positions": rng.normal(size=(t, 7)).astype(np.float32),
                },
                actions=rng.normal(size=(t, 8)).astype(np.float32),
                name=f"ep{i}",
                extras={"cam_matrix": rng.normal(size=(t, 4, 4))},
                attrs={"language": f"task {i}"},
            )
        )
    return out


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ sampler
def test_sampler_padding_and_masks_at_both_ends():
    sampler = SequenceSampler([5, 3], n_obs_steps=2, horizon=4)
    assert len(sampler) == 8
    w = sampler.windows(np.arange(8))
    # sample 0: episode 0, current step 0 -> obs steps -1, 0 ; actions -1 .. 2
    assert w.obs_index[0].tolist() == [0, 0] and w.obs_is_pad[0].tolist() == [True, False]
    assert w.action_index[0].tolist() == [0, 0, 1, 2]
    assert w.action_is_pad[0].tolist() == [True, False, False, False]
    # sample 4: episode 0, current step 4 (last) -> actions 3 .. 6, padded with step 4
    assert w.action_index[4].tolist() == [3, 4, 4, 4]
    assert w.action_is_pad[4].tolist() == [False, False, True, True]
    assert not w.obs_is_pad[4].any()
    # sample 5: first step of episode 1 (offset 5); never reads episode 0's frames
    assert w.obs_index[5].tolist() == [5, 5] and w.action_index[5].tolist() == [5, 5, 6, 7]
    assert w.action_is_pad[5].tolist() == [True, False, False, False]
    assert w.action_index[7].tolist() == [6, 7, 7, 7]
    assert w.action_is_pad[7].tolist() == [False, False, True, True]
    assert (w.action_index[5:] >= 5).all() and (w.action_index[:5] < 5).all()
    with pytest.raises(IndexError):
        sampler.windows([8])


def test_sampler_subset_and_split():
    sampler = SequenceSampler([5, 3, 4], 1, 2, episodes=[2])
    assert len(sampler) == 4 and sampler.windows([0]).obs_index.tolist() == [[8]]
    train, val = split_episodes(10, 0.2, seed=1)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_episodes(10, 0.2, seed=1) == (train, val)
    assert split_episodes(3, 0.01, 0)[1] != []  # asked for validation: at least one episode
    assert split_episodes(1, 0.5, 0) == ([0], [])


# ------------------------------------------------------------------ normaliser
def test_normalisation_stats_on_a_known_array():
    data = np.array([[0.0, 10.0, 5.0], [2.0, 10.0, 5.0], [4.0, 10.0, 5.0]])
    stats = compute_stats({"x": data})["x"]
    np.testing.assert_allclose(stats.min, [0, 10, 5])
    np.testing.assert_allclose(stats.max, [4, 10, 5])
    np.testing.assert_allclose(stats.mean, [2, 10, 5])
    np.testing.assert_allclose(stats.std, [np.sqrt(8 / 3), 0, 0])
    norm = Normalizer({"x": stats}, {"x": "min_max"})
    np.testing.assert_allclose(norm.normalize("x", data)[:, 0], [-1, 0, 1])
    np.testing.assert_allclose(norm.normalize("x", data)[:, 1:], 0)  # constant dims map to 0
    np.testing.assert_allclose(norm.unnormalize("x", norm.normalize("x", data)), data)
    std = Normalizer({"x": stats}, {"x": "mean_std"})
    out = std.normalize("x", torch.tensor(data, dtype=torch.float32))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out[:, 0].numpy(), (data[:, 0] - 2) / np.sqrt(8 / 3), rtol=1e-6)
    again = Normalizer.from_dict(json.loads(json.dumps(std.to_dict())))
    np.testing.assert_allclose(again.normalize("x", data), std.normalize("x", data))
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[..., 1] = 255
    image_stats = compute_stats({"img": images})["img"]
    np.testing.assert_allclose(image_stats.mean, [0, 255, 0])
    np.testing.assert_allclose(image_stats.std, [0, 0, 0])


# ------------------------------------------------------------------ episodes
@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.obs.update(front_rgb=np.zeros((3, 4, 4, 3), np.uint8)), "ragged"),
        (lambda e: e.actions.__setitem__((2, 1), np.nan), "NaN or inf in actions"),
        (lambda e: e.actions.__setitem__((0, 0), np.inf), "NaN or inf in actions"),
        (
            lambda e: e.obs.update(front_rgb=e.obs["front_rgb"].astype(np.float32)),
            "images must be uint8",
        ),
        (lambda e: e.obs.update(front_rgb=e.obs["front_rgb"][..., :2]), "images must be uint8"),
    ],
)
def test_episode_validation_names_file_episode_and_key(mutate, message):
    episode = make_episodes(1)[0]
    episode.source = "/data/x.hdf5"
    mutate(episode)
    with pytest.raises(StemobError, match=message) as info:
        episode.validate()
    text = str(info.value)
    assert "/data/x.hdf5" in text and "ep0" in text
    assert "'front_rgb'" in text or "'actions'" in text


# ------------------------------------------------------------------ robomimic
def test_robomimic_round_trip(tmp_path):
    episodes = make_episodes()
    env_args = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20}}
    path = write_robomimic(
        tmp_path / "out.hdf5",
        episodes,
        env_args=env_args,
        masks={"train": ["demo_0", "demo_1"], "valid": ["demo_2"]},
    )
    assert not list(tmp_path.glob(".*tmp"))
    reader = RobomimicReader(path)
    assert reader.names == ["demo_0", "demo_1", "demo_2"] and reader.env_args == env_args
    assert reader.lengths() == [12, 7, 9]
    assert reader.masks() == {"train": ["demo_0", "demo_1"], "valid": ["demo_2"]}
    for original, back in zip(episodes, reader, strict=True):
        assert sorted(back.obs) == sorted(original.obs)
        for key in original.obs:
            np.testing.assert_array_equal(back.obs[key], original.obs[key])
            assert back.obs[key].dtype == original.obs[key].dtype
        np.testing.assert_array_equal(back.actions, original.actions)
        np.testing.assert_array_equal(back.extras["cam_matrix"], original.extras["cam_matrix"])
        assert back.attrs["language"] == original.attrs["language"]
        assert back.dones[-1] == 1 and back.dones[:-1].sum() == 0
    with h5py.File(path) as h5:
        assert h5["data"].attrs["total"] == 28
        assert h5["data/demo_1"].attrs["num_samples"] == 7
        np.testing.assert_array_equal(
            h5["data/demo_1/next_obs/front_rgb"][:-1], episodes[1].obs["front_rgb"][1:]
        )
    info = reader.info()
    assert info["format"] == "robomimic" and info["episodes"] == 3 and info["frames"] == 28
    assert info["keys"]["obs/front_rgb"] == {"shape": [16, 16, 3], "dtype": "uint8"}


def test_robomimic_bad_input(tmp_path):
    bad = tmp_path / "truncated.hdf5"
    path = write_robomimic(tmp_path / "ok.hdf5", make_episodes(1))
    bad.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StemobError, match="truncated.hdf5"):
        RobomimicReader(bad)
    with h5py.File(path, "a") as h5:
        del h5["data/demo_0/obs/wrist_rgb"]
        h5["data/demo_0/obs/wrist_rgb"] = np.zeros((5, 8, 8, 3), np.uint8)
    with pytest.raises(StemobError, match=r"ok.hdf5.*demo_0.*wrist_rgb.*ragged"):
        RobomimicReader(path).read(0)
    with pytest.raises(StemobError, match=r"demo_0.*obs/missing_key' is missing"):
        RobomimicReader(path, obs_keys=["missing_key"]).read(0)


def test_robomimic_sequence_dataset_reads_our_file(tmp_path):
    pytest.importorskip("termcolor")
    dataset_module = pytest.importorskip("robomimic.utils.dataset")
    obs_utils = pytest.importorskip("robomimic.utils.obs_utils")
    path = write_robomimic(tmp_path / "ours.hdf5", make_episodes())
    obs_utils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": ["joint_positions"], "rgb": ["front_rgb"]}}
    )
    ds = dataset_module.SequenceDataset(
        hdf5_path=str(path),
        obs_keys=("joint_positions", "front_rgb"),
        dataset_keys=("actions", "rewards", "dones"),
        frame_stack=2,
        seq_length=4,
        hdf5_cache_mode="low_dim",
    )
    assert len(ds) == 28
    item = ds[13]  # second demo, step 1
    ours = DemoDataset(DatasetConfig(path=str(path), n_obs_steps=2, horizon=5, val_ratio=0.0))
    mine = ours[13]
    np.testing.assert_allclose(
        item["obs"]["joint_positions"][:2], mine["obs"]["joint_positions"].numpy()
    )
    # robomimic pads actions with the frame stack too: both windows start at the first obs step
    np.testing.assert_allclose(item["actions"], mine["action"].numpy())
    assert item["obs"]["front_rgb"].shape[-3:] == (16, 16, 3)


# ------------------------------------------------------------------ DemoDataset
def test_dataset_batch_contract_key_map_and_split(tmp_path):
    episodes = make_episodes(count=5)
    path = write_robomimic(tmp_path / "d.hdf5", episodes)
    config = DatasetConfig(
        path=path,
        key_map={"front_rgb": "front_image"},
        n_obs_steps=2,
        horizon=6,
        val_ratio=0.4,
        seed=3,
    )
    for in_memory in (True, False):
        config.in_memory = in_memory
        ds = DemoDataset(config)
        val = ds.validation()
        assert set(ds.train_episodes).isdisjoint(ds.val_episodes) and len(ds.val_episodes) == 2
        assert len(ds) + len(val) == sum(len(e) for e in episodes)
        assert sorted(ds.obs_keys) == ["front_image", "joint_positions", "wrist_rgb"]
        batch = ds.get_batch(np.arange(len(ds)))
        b = len(ds)
        assert batch["obs"]["front_image"].shape == (b, 2, 3, 16, 16)
        assert batch["obs"]["front_image"].dtype == torch.uint8
        assert batch["obs"]["wrist_rgb"].shape == (b, 2, 3, 16, 20)
        assert batch["obs"]["joint_positions"].shape == (b, 2, 7)
        assert batch["obs"]["joint_positions"].dtype == torch.float32
        assert batch["action"].shape == (b, 6, 8) and batch["action_is_pad"].shape == (b, 6)
        # the first training sample: first step of the first training episode
        first = episodes[ds.train_episodes[0]]
        np.testing.assert_array_equal(
            batch["obs"]["front_image"][0, 1].numpy(), first.obs["front_rgb"][0].transpose(2, 0, 1)
        )
        np.testing.assert_array_equal(batch["action"][0, 1:].numpy(), first.actions[:5])
        assert batch["action_is_pad"][0].tolist() == [True] + [False] * 5
        # statistics come from the training episodes only
        train_actions = np.concatenate([episodes[i].actions for i in ds.train_episodes])
        np.testing.assert_allclose(ds.stats["action"].max, train_actions.max(0), rtol=1e-6)
        assert ds.stats["front_image"].mean.shape == (3,)
        batches = list(ds.loader(4, num_workers=0, seed=0))
        assert len(batches) == len(ds) // 4 and batches[0]["action"].shape == (4, 6, 8)
        default = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
        assert default["obs"]["front_image"].shape == (3, 2, 3, 16, 16)
    with pytest.raises(StemobError, match="obs_keys|missing"):
        DemoDataset(DatasetConfig(path=path, obs_keys=["nope"]))


def test_dataset_config_validation():
    with pytest.raises(StemobError, match="horizon"):
        DatasetConfig(path="x", horizon=0)
    with pytest.raises(StemobError, match="val_ratio"):
        DatasetConfig(path="x", val_ratio=1.0)
    with pytest.raises(StemobError, match="stemob_source"):
        DatasetConfig(path="x", stemob_source="disk")
    with pytest.raises(StemobError, match="reader"):
        DatasetConfig(path="x", reader="zarr")
    cfg = DatasetConfig(path="x", stemob={"inversion_steps": 5})
    assert cfg.stemob == InversionSettings(inversion_steps=5)


def write_fake_cache(source, settings, recorded=None):
    """A cache file as stemob-invert-dataset writes it, with images 255 - source."""
    layout = read_layout(source)
    target = cache_path(source, settings)
    with h5py.File(source) as src, h5py.File(target, "w") as out:
        out.attrs["stemob_format_version"] = FORMAT_VERSION
        out.attrs["settings"] = json.dumps((recorded or settings).to_dict(), sort_keys=True)
        out.attrs["source_fingerprint"] = layout.fingerprint()
        out.attrs["model_fingerprint"] = "fake"
        out.attrs["keys"] = json.dumps(list(layout.keys))
        out.attrs["has_latents"] = False
        for demo in layout.demos:
            for key in layout.keys:
                out[f"data/{demo}/obs/{key}"] = 255 - src[f"data/{demo}/obs/{key}"][()]
    return target


def test_stemob_cache_swap_and_refusal(tmp_path):
    episodes = make_episodes(count=2)
    path = write_robomimic(tmp_path / "d.hdf5", episodes, next_obs=False)
    before = sha(path)
    settings = InversionSettings(inversion_steps=10, seed=0)
    write_fake_cache(path, settings)
    for in_memory in (True, False):
        ds = DemoDataset(
            DatasetConfig(
                path=path, stemob=settings, in_memory=in_memory, key_map={"front_rgb": "front"}
            )
        )
        batch = ds.get_batch([1])
        expected = 255 - episodes[0].obs["front_rgb"][0:2].transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(batch["obs"]["front"][0].numpy(), expected)
        np.testing.assert_array_equal(
            batch["obs"]["joint_positions"][0].numpy(), episodes[0].obs["joint_positions"][0:2]
        )
    assert sha(path) == before
    with pytest.raises(StemobError, match="no Stem-OB cache"):
        DemoDataset(DatasetConfig(path=path, stemob=InversionSettings(inversion_steps=3)))
    other = InversionSettings(inversion_steps=4, seed=0)
    write_fake_cache(path, other, recorded=InversionSettings(inversion_steps=5, seed=0))
    with pytest.raises(CacheMismatchError, match="inversion_steps"):
        DemoDataset(DatasetConfig(path=path, stemob=other))


def test_stemob_online_inverts_with_fresh_noise(tmp_path, tiny_uncond_model):
    path = write_robomimic(tmp_path / "d.hdf5", make_episodes(count=1, lengths=(4,)))
    settings = InversionSettings(pretrained=str(tiny_uncond_model), inversion_steps=20, seed=0)
    ds = DemoDataset(
        DatasetConfig(
            path=path,
            stemob=settings,
            stemob_source="online",
            stemob_keys=["front_rgb"],
            n_obs_steps=1,
            horizon=2,
        )
    )
    raw = DemoDataset(DatasetConfig(path=path, n_obs_steps=1, horizon=2))
    a, b = ds.get_batch([0, 1]), ds.get_batch([0, 1])
    assert a["obs"]["front_rgb"].shape == raw.get_batch([0, 1])["obs"]["front_rgb"].shape
    assert not torch.equal(a["obs"]["front_rgb"], raw.get_batch([0, 1])["obs"]["front_rgb"])
    assert not torch.equal(a["obs"]["front_rgb"], b["obs"]["front_rgb"])  # fresh noise
    assert torch.equal(a["obs"]["wrist_rgb"], raw.get_batch([0, 1])["obs"]["wrist_rgb"])


def test_a_folder_without_its_cache_names_the_command(tmp_path):
    """Any format has a Stem-OB cache now; a missing one is named with the command that builds
    it, and lazy image loading still needs HDF5."""
    from stemob.data.folder import write_folder

    root = write_folder(tmp_path / "f", make_episodes(count=1))
    with pytest.raises(StemobError, match="no Stem-OB cache.*stemob-invert-dataset --dataset"):
        DemoDataset(DatasetConfig(path=root, stemob=InversionSettings()))
    with pytest.raises(StemobError, match="in_memory=False needs a robomimic HDF5"):
        DemoDataset(DatasetConfig(path=root, in_memory=False))
