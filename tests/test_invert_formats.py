"""The Stem-OB cache of every format stemob reads: LeRobot, episode folders and RLBench-style
datasets are inverted through their readers with the HDF5 path's per-frame seeding, and
DemoDataset / train.py train on the inverted frames directly."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from stemob.data.dataset import DatasetConfig, DemoDataset
from stemob.data.episodes import Episode
from stemob.data.folder import write_folder
from stemob.data.frames import ReaderFrames, frame_source
from stemob.data.invert_cli import main as invert_main
from stemob.data.lerobot import write_lerobot
from stemob.data.robomimic import write_robomimic
from stemob.errors import StemobError
from stemob.inversion.dataset_cache import HDF5Frames, build_cache, find_cache
from stemob.inversion.settings import InversionSettings


def episodes(count: int = 2) -> list[Episode]:
    """Smooth random frames (they survive a video codec) and low-dim keys."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        t = 6 + i
        coarse = rng.uniform(0, 255, (t, 4, 4, 3))
        frames = coarse.repeat(8, 1).repeat(8, 2).astype(np.uint8)  # (t, 32, 32, 3)
        out.append(
            Episode(
                obs={"front_image": frames, "state": rng.normal(size=(t, 3)).astype(np.float32)},
                actions=rng.normal(size=(t, 2)).astype(np.float32),
                name=f"demo_{i}",
            )
        )
    return out


@pytest.fixture(scope="module")
def settings(tiny_model) -> InversionSettings:
    return InversionSettings(pretrained=str(tiny_model), inversion_steps=10, seed=3)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("formats")
    hdf5 = write_robomimic(root / "demos.hdf5", episodes())
    folder = write_folder(root / "folder", episodes())
    lerobot_eps = episodes()
    for e in lerobot_eps:
        e.obs = {
            "observation.images.front": e.obs["front_image"],
            "observation.state": e.obs["state"],
        }
    lerobot = write_lerobot(root / "lerobot", lerobot_eps, fps=10.0)
    return {"hdf5": hdf5, "folder": folder, "lerobot": lerobot}


def _cache_frames(path) -> dict:
    with h5py.File(path, "r") as h5:
        return {
            (d, k): h5["data"][d]["obs"][k][:] for d in h5["data"] for k in h5["data"][d]["obs"]
        }


def test_a_folder_dataset_inverts_exactly_like_its_hdf5_copy(datasets, settings, tmp_path):
    from_h5 = build_cache(datasets["hdf5"], settings, cache_dir=tmp_path / "a", progress=False)
    source = frame_source(datasets["folder"])
    assert isinstance(source, ReaderFrames)
    from_folder = build_cache(datasets["folder"], settings, cache_dir=tmp_path / "b",
                              frames=source, progress=False)  # fmt: skip
    assert from_folder.name.startswith("folder.stemob-")  # beside a folder: named after it
    a, b = _cache_frames(from_h5), _cache_frames(from_folder)
    assert a.keys() == b.keys() == {("demo_0", "front_image"), ("demo_1", "front_image")}
    for key in a:  # same frames, same per-frame noise (seed, episode, step, camera)
        np.testing.assert_array_equal(a[key], b[key])
    assert isinstance(frame_source(datasets["hdf5"]), HDF5Frames)


def test_lerobot_video_dataset_inverts_and_trains_on_the_cache(datasets, settings):
    from stemob.inversion.inverter import Inverter

    path = datasets["lerobot"]
    assert invert_main(["--dataset", str(path), "--pretrained", settings.pretrained,
                        "--inversion_steps", "10", "--seed", "3", "--device", "cpu"]) == 0  # fmt: skip
    cache = find_cache(path, settings, frames=frame_source(path))
    source = ReaderFrames(path)
    decoded = source.frames("demo_1", "observation.images.front", 0, 7)
    expected = Inverter(settings).invert(decoded, [(1, t, "observation.images.front")
                                                   for t in range(7)])  # fmt: skip
    cached = _cache_frames(cache)[("demo_1", "observation.images.front")]
    assert np.abs(cached.astype(int) - expected).max() <= 1  # the decoded video, inverted
    data = DemoDataset(
        DatasetConfig(path=str(path), key_map={"observation.images.front": "front_image",
                                               "observation.state": "state"},
                      n_obs_steps=1, horizon=2, stemob=settings)
    )  # fmt: skip
    assert data.cache_path == cache
    offset = int(data.offsets[1])
    np.testing.assert_array_equal(data.arrays["front_image"][offset : offset + 7],
                                  cached.transpose(0, 3, 1, 2))  # fmt: skip


def test_refusals_name_what_is_wrong(datasets, settings, tmp_path):
    no_images = episodes()
    for e in no_images:
        del e.obs["front_image"]
    folder = write_folder(tmp_path / "no_images", no_images)
    with pytest.raises(StemobError, match="no image keys to invert"):
        build_cache(folder, settings, frames=frame_source(folder), progress=False)
    with pytest.raises(StemobError, match=r"image key\(s\) \['side'\] not found"):
        frame_source(datasets["folder"]).layout(["side"])
    (tmp_path / "junk").mkdir()
    with pytest.raises(StemobError, match="cannot tell the format"):
        frame_source(tmp_path / "junk")
    before = {p: p.stat().st_mtime_ns for p in datasets["folder"].rglob("*")}
    other = InversionSettings(pretrained=settings.pretrained, inversion_steps=4, seed=3)
    with pytest.raises(StemobError, match="no Stem-OB cache"):
        DemoDataset(DatasetConfig(path=str(datasets["folder"]), n_obs_steps=1, horizon=2,
                                  stemob=other))  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in datasets["folder"].rglob("*")} == before


@pytest.mark.parametrize("fmt", ["lerobot", "rlbench"])
def test_train_py_on_lerobot_and_rlbench_folders_with_stemob(fmt, datasets, settings, tmp_path,
                                                             one_torch_thread):  # fmt: skip
    """`train.py dataset=<format> dataset.path=<folder> stemob=ddpm` builds the cache and trains."""
    from stemob.training.run import train
    from tests.test_data_rlbench import rlbench_episodes
    from tests.test_training import TINY_POLICY, compose

    if fmt == "lerobot":
        path = datasets["lerobot"]
        extra = ["task=lift_cube"]  # configs/dataset/lerobot.yaml maps front + state
    else:
        from stemob.data.rlbench import write_rlbench

        path = write_rlbench(tmp_path / "rlbench", rlbench_episodes(length=8), task="open_drawer")
        extra = ["task=rlbench_open_drawer", "dataset.obs_keys=[front_rgb,joint_positions]"]
    cfg = compose(
        [
            *TINY_POLICY,
            *extra,
            f"dataset={fmt}",
            f"dataset.path={path}",
            "dataset.val_ratio=0",
            "stemob=ddpm",
            f"stemob.pretrained={settings.pretrained}",
            "stemob.inversion_steps=10",
            "training=smoke",
            "logger=none",
            f"run_dir={tmp_path / 'run'}",
            "evaluation.enabled=false",
        ]
    )
    run = train(cfg)
    assert (run / "checkpoints").is_dir()
    from stemob.inversion.dataset_cache import cache_path

    used = InversionSettings(pretrained=settings.pretrained, inversion_steps=10)  # the config's
    with h5py.File(cache_path(path, used), "r") as h5:  # built beside the folder
        assert len(h5["data"]) == 2


def test_export_hdf5_is_the_source_with_inverted_frames(datasets, settings, tmp_path):
    from stemob.data.export import export_inverted

    cache = build_cache(datasets["hdf5"], settings, cache_dir=tmp_path, progress=False)
    out = export_inverted(datasets["hdf5"], cache, tmp_path / "inverted.hdf5")
    inverted = _cache_frames(cache)
    with h5py.File(out, "r") as h5, h5py.File(datasets["hdf5"], "r") as src:
        assert json.loads(h5.attrs["stemob"])["settings"] == settings.to_dict()
        for demo in src["data"]:
            got, ref = h5["data"][demo], src["data"][demo]
            np.testing.assert_array_equal(got["obs/front_image"][:], inverted[demo, "front_image"])
            np.testing.assert_array_equal(got["next_obs/front_image"][:-1],
                                          inverted[demo, "front_image"][1:])  # fmt: skip
            assert not np.array_equal(
                got["next_obs/front_image"][-1], ref["next_obs/front_image"][-1]
            )
            for key in ("actions", "obs/state", "next_obs/state"):
                np.testing.assert_array_equal(got[key][:], ref[key][:])
        assert dict(h5["data"].attrs) == dict(src["data"].attrs)
    with pytest.raises(StemobError, match="already exists"):
        export_inverted(datasets["hdf5"], cache, out)


def test_export_lerobot_is_a_v3_dataset_with_stats_and_the_cache_frames(datasets, settings,
                                                                        tmp_path):  # fmt: skip
    import pyarrow.parquet as pq

    from stemob.data.export import export_inverted
    from stemob.data.lerobot import LeRobotReader

    path = datasets["lerobot"]
    cache = build_cache(path, settings, cache_dir=tmp_path, frames=frame_source(path),
                        progress=False)  # fmt: skip
    out = export_inverted(path, cache, tmp_path / "inverted_lerobot")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2
    stats = json.loads((out / "meta" / "stats.json").read_text())
    key = "observation.images.front"
    frames = [_cache_frames(cache)[f"demo_{i}", key] for i in range(2)]
    everything = np.concatenate(frames) / 255.0
    np.testing.assert_allclose(np.ravel(stats[key]["mean"]), everything.mean((0, 1, 2)), atol=1e-6)
    assert np.shape(stats[key]["mean"]) == (3, 1, 1) and stats[key]["count"] == [13]
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    assert f"stats/{key}/mean" in episodes.column_names
    assert json.loads((out / "meta" / "stemob.json").read_text())["settings"] == settings.to_dict()
    back = LeRobotReader(out)
    for i in range(2):  # the codec's round trip (H.264 yuv444p crf 0): RGB <-> YUV rounding only
        error = np.abs(back.read(i).obs[key].astype(int) - frames[i])
        assert error.mean() < 1.0 and error.max() <= 3, (error.mean(), error.max())


def test_export_rlbench_replaces_only_the_inverted_pngs(settings, tmp_path):
    from PIL import Image

    from stemob.data.export import export_inverted
    from stemob.data.rlbench import write_rlbench
    from tests.test_data_rlbench import rlbench_episodes

    root = write_rlbench(tmp_path / "rlb", rlbench_episodes(length=5), task="open_drawer")
    source = frame_source(root)
    cache = build_cache(root, settings, cache_dir=tmp_path, frames=source, keys=["front_rgb"],
                        progress=False)  # fmt: skip
    out = export_inverted(root, cache, tmp_path / "rlb_inverted")
    episode = Path("open_drawer/variation0/episodes/episode1")
    front = np.asarray(Image.open(out / episode / "front_rgb" / "3.png"))
    np.testing.assert_array_equal(front, _cache_frames(cache)["demo_1", "front_rgb"][3])
    for name in ("wrist_rgb/3.png", "low_dim_obs.pkl"):
        assert (out / episode / name).read_bytes() == (root / episode / name).read_bytes()
    assert (out / "stemob.json").is_file()
