"""The Stem-OB dataset cache: layout, reuse, refusal of other settings, resume after a kill, sharding."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from stemob.errors import CacheMismatchError, StemobError
from stemob.inversion import InversionSettings, build_cache, cache_path, find_cache
from stemob.inversion import dataset_cache as dc
from stemob.inversion.inverter import Inverter
from tests.conftest import write_robomimic_hdf5


def settings(model, **kwargs) -> InversionSettings:
    return InversionSettings(pretrained=str(model), seed=0, **kwargs)


def read_all(path):
    with h5py.File(path, "r") as h5:
        return {
            f"{d}/{k}": h5["data"][d]["obs"][k][:] for d in h5["data"] for k in h5["data"][d]["obs"]
        }


def assert_same_cache(a, b, levels=1):
    left, right = read_all(a), read_all(b)
    assert left.keys() == right.keys()
    for key in left:
        assert np.abs(left[key].astype(int) - right[key].astype(int)).max() <= levels, key


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_record_and_source_untouched(robomimic_file, tiny_uncond_model):
    before = sha(robomimic_file)
    s = settings(tiny_uncond_model)
    path = build_cache(robomimic_file, s, store_latents=True, device="cpu")
    assert path == cache_path(robomimic_file, s) and path.parent == robomimic_file.parent
    assert sha(robomimic_file) == before
    with h5py.File(path) as h5, h5py.File(robomimic_file) as src:
        assert sorted(h5["data"]) == ["demo_0", "demo_1", "demo_2"]
        obs = h5["data/demo_1/obs"]
        assert sorted(obs) == ["agentview_image", "robot0_eye_in_hand_image"]  # images only
        assert obs["agentview_image"].shape == src["data/demo_1/obs/agentview_image"].shape
        assert obs["agentview_image"].dtype == np.uint8
        assert h5["data/demo_1/latents/agentview_image"].shape == (40, 4, 8, 8)
        assert h5["data/demo_1"].attrs["num_samples"] == 40
        assert not np.array_equal(
            obs["agentview_image"][:], src["data/demo_1/obs/agentview_image"][:]
        )
    record = dc.read_cache_record(path)
    assert record["settings"] == s.to_dict() and record["format_version"] == dc.FORMAT_VERSION
    assert not (path.parent / (path.name + ".parts")).exists()


def test_reuse_and_coexisting_settings(robomimic_file, tiny_uncond_model, monkeypatch):
    first = build_cache(robomimic_file, settings(tiny_uncond_model), device="cpu")
    other = build_cache(
        robomimic_file, settings(tiny_uncond_model, inversion_steps=5), device="cpu"
    )
    assert first != other and first.is_file() and other.is_file()
    mtime = first.stat().st_mtime_ns
    monkeypatch.setattr(
        dc, "_invert_units", lambda *a, **k: pytest.fail("a finished cache was rebuilt")
    )
    assert build_cache(robomimic_file, settings(tiny_uncond_model), device="cpu") == first
    assert first.stat().st_mtime_ns == mtime
    assert find_cache(robomimic_file, settings(tiny_uncond_model)) == first


def test_other_settings_are_never_reused(robomimic_file, tiny_uncond_model):
    s = settings(tiny_uncond_model)
    path = build_cache(robomimic_file, s, device="cpu")
    with h5py.File(path, "r+") as h5:  # a cache whose record says another k, under this name
        h5.attrs["settings"] = (
            '{"mode": "ddpm", "pretrained": "x", "num_steps": 50, "inversion_steps": 3, '
            '"resolution": null, "seed": 0}'
        )
    with pytest.raises(CacheMismatchError, match="inversion_steps: requested 15, cached 3"):
        build_cache(robomimic_file, s, device="cpu")
    with pytest.raises(CacheMismatchError):
        find_cache(robomimic_file, s)
    with pytest.raises(StemobError, match="no Stem-OB cache"):
        find_cache(robomimic_file, settings(tiny_uncond_model, inversion_steps=7))


def test_changed_source_is_refused(tmp_path, tiny_uncond_model):
    source = write_robomimic_hdf5(tmp_path / "d.hdf5", frames=20)
    build_cache(source, settings(tiny_uncond_model), device="cpu")
    write_robomimic_hdf5(source, frames=21)
    with pytest.raises(CacheMismatchError, match="different version of its dataset"):
        build_cache(source, settings(tiny_uncond_model), device="cpu")


def test_interrupted_build_resumes_without_loss_or_duplication(
    tmp_path, tiny_uncond_model, monkeypatch
):
    reference = write_robomimic_hdf5(tmp_path / "ref" / "d.hdf5")
    expected = build_cache(reference, settings(tiny_uncond_model), device="cpu", batch_size=16)
    source = tmp_path / "run" / "d.hdf5"
    source.parent.mkdir()
    shutil.copy(reference, source)
    calls = {"n": 0}

    original = Inverter.invert

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Inverter, "invert", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_cache(source, settings(tiny_uncond_model), device="cpu", batch_size=16)
    target = cache_path(source, settings(tiny_uncond_model))
    parts = target.with_name(target.name + ".parts")
    done = sorted(p.name for p in parts.glob("*.h5"))
    assert not target.exists() and 0 < len(done) < 6
    resumed_calls = []
    monkeypatch.setattr(
        Inverter, "invert", lambda self, *a, **k: resumed_calls.append(1) or original(self, *a, **k)
    )
    result = build_cache(source, settings(tiny_uncond_model), device="cpu", batch_size=16)
    assert len(resumed_calls) == (6 - len(done)) * 3  # only the unfinished units (40 frames / 16)
    assert_same_cache(result, expected, levels=0)


def test_killed_process_resumes(tmp_path, tiny_uncond_model):
    source = write_robomimic_hdf5(tmp_path / "d.hdf5", demos=6, frames=128, size=32)
    command = [
        sys.executable,
        "-m",
        "stemob.data.invert_cli",
        "--dataset",
        str(source),
        "--pretrained",
        str(tiny_uncond_model),
        "--batch_size",
        "32",
        "--device",
        "cpu",
    ]
    target = cache_path(source, settings(tiny_uncond_model))
    parts = target.with_name(target.name + ".parts")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.h5"))) < 2 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not target.exists(), "the run finished before it could be killed"
    subprocess.run(command, check=True, capture_output=True)
    reference = write_robomimic_hdf5(tmp_path / "ref" / "d.hdf5", demos=6, frames=128, size=32)
    expected = build_cache(reference, settings(tiny_uncond_model), device="cpu", batch_size=32)
    assert_same_cache(target, expected, levels=1)


def test_two_process_sharded_run_matches_single_process(tmp_path, tiny_uncond_model):
    single = build_cache(
        write_robomimic_hdf5(tmp_path / "a" / "d.hdf5"),
        settings(tiny_uncond_model),
        device="cpu",
        batch_size=8,
    )
    source = write_robomimic_hdf5(tmp_path / "b" / "d.hdf5")
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    subprocess.run(
        [
            accelerate,
            "launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "stemob.data.invert_cli",
            "--dataset",
            str(source),
            "--pretrained",
            str(tiny_uncond_model),
            "--batch_size",
            "16",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert_same_cache(cache_path(source, settings(tiny_uncond_model)), single, levels=1)


def test_read_only_folder_needs_cache_dir(robomimic_file, tiny_uncond_model, tmp_path, monkeypatch):
    monkeypatch.setattr(dc, "_writable_dir", lambda folder: False)
    with pytest.raises(StemobError, match="pass --cache_dir"):
        build_cache(robomimic_file, settings(tiny_uncond_model), device="cpu")
    path = build_cache(
        robomimic_file, settings(tiny_uncond_model), cache_dir=tmp_path / "cache", device="cpu"
    )
    assert path.parent == tmp_path / "cache"


def test_bad_datasets_are_named(tmp_path, robomimic_file, tiny_uncond_model):
    s = settings(tiny_uncond_model)
    with pytest.raises(StemobError, match="does not exist"):
        build_cache(tmp_path / "none.hdf5", s)
    (tmp_path / "corrupt.hdf5").write_bytes(b"garbage")
    with pytest.raises(StemobError, match="cannot open HDF5 file"):
        build_cache(tmp_path / "corrupt.hdf5", s)
    with pytest.raises(StemobError, match="obs/wrist_image is missing"):
        build_cache(robomimic_file, s, keys=["wrist_image"])
    with pytest.raises(StemobError, match="expected uint8"):
        build_cache(robomimic_file, s, keys=["robot0_eef_pos"])
    with h5py.File(tmp_path / "nodata.hdf5", "w") as h5:
        h5.create_group("other")
    with pytest.raises(StemobError, match="no 'data' group"):
        build_cache(tmp_path / "nodata.hdf5", s)


def test_noise_draws_are_separate_caches_and_samples_of_one_longer_dataset(
    robomimic_file, tiny_uncond_model
):
    """dataset.stemob_draws: draw m is the cache of seed + m; sample i is window i % n under draw
    i // n; validation uses draw 0; low-dim data and actions are the same under every draw."""
    from stemob.data.dataset import DatasetConfig, DemoDataset

    base = settings(tiny_uncond_model, inversion_steps=20)
    assert base.draw(0) == base and base.draw(2).seed == 2
    paths = [build_cache(robomimic_file, base.draw(m), progress=False) for m in range(3)]
    assert len(set(paths)) == 3
    config = DatasetConfig(
        path=str(robomimic_file), stemob=base, stemob_draws=3, horizon=4, val_ratio=0.34
    )
    drawn, single = (
        DemoDataset(config),
        DemoDataset(DatasetConfig(**{**vars(config), "stemob_draws": 1})),
    )
    n = len(single)
    assert len(drawn) == 3 * n and len(drawn.validation()) == len(single.validation())
    key = "agentview_image"
    caches = [read_all(p) for p in paths]
    windows = single.sampler.windows([5])
    episode, step = int(windows.episode[0]), int(windows.obs_step[0, -1])
    name = single.episode_names[episode]
    for m in range(3):
        batch = drawn.get_batch([m * n + 5])
        image = batch["obs"][key][0, -1].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(image, caches[m][f"{name}/{key}"][step])
        assert torch_equal(batch["action"], single.get_batch([5])["action"])
    assert not np.array_equal(caches[0][f"{name}/{key}"], caches[1][f"{name}/{key}"])
    with pytest.raises(IndexError):
        drawn.get_batch([3 * n])
    with pytest.raises(StemobError, match="seeded"):
        DatasetConfig(path="x", stemob=InversionSettings(seed=None), stemob_draws=2)
    with pytest.raises(StemobError, match="stemob_draws must be a positive integer"):
        DatasetConfig(path="x", stemob=base, stemob_draws=0)
    missing = DatasetConfig(**{**vars(config), "stemob_draws": 4})
    with pytest.raises(StemobError, match="noise draw 3 of stemob_draws=4 .*no Stem-OB cache"):
        DemoDataset(missing)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
