"""The plain real-robot folder format, the converter to robomimic HDF5 and the stemob-data CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stemob.data.cli import main
from stemob.data.convert import convert_to_robomimic
from stemob.data.detect import detect_format
from stemob.data.folder import FolderReader, read_csv_table, write_folder
from stemob.data.robomimic import RobomimicReader
from stemob.errors import StemobError
from tests.test_data_core import make_episodes


def tree_digest(root):
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("image_format, table", [("png", "npz"), ("png", "csv"), ("mp4", "npz")])
def test_folder_round_trip(tmp_path, image_format, table):
    episodes = make_episodes()
    root = write_folder(tmp_path / "runs", episodes, fps=15, image_format=image_format, table=table)
    assert detect_format(root) == "folder"
    reader = FolderReader(root)
    assert reader.fps == 15 and len(reader) == 3 and reader.lengths() == [12, 7, 9]
    for original, back in zip(episodes, reader, strict=True):
        assert sorted(back.obs) == sorted(original.obs)
        np.testing.assert_allclose(back.actions, original.actions, rtol=1e-6)
        np.testing.assert_allclose(
            back.obs["joint_positions"], original.obs["joint_positions"], rtol=1e-6
        )
        for key in ("front_rgb", "wrist_rgb"):
            assert (
                back.obs[key].dtype == np.uint8 and back.obs[key].shape == original.obs[key].shape
            )
            if image_format == "png":
                np.testing.assert_array_equal(back.obs[key], original.obs[key])
        assert back.attrs["language"] == original.attrs["language"]


def test_folder_mp4_frames_are_close(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8), 8, 1), 8, 2)
    episode = make_episodes(1, lengths=(6,))[0]
    episode.obs = {"cam": smooth, "joint_positions": episode.obs["joint_positions"]}
    root = write_folder(tmp_path / "v", [episode], fps=10, image_format="mp4")
    back = FolderReader(root).read(0).obs["cam"]
    assert np.abs(back.astype(int) - smooth).mean() < 8


def test_hand_made_folder_with_jpeg_and_csv(tmp_path):
    episode = tmp_path / "robot" / "run7"
    (episode / "front").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(episode / "front" / f"frame{i}.jpg")
    (episode / "data.csv").write_text("action.0,action.1,gripper\n0,1,0.5\n1,2,0.5\n2,3,1\n")
    (tmp_path / "robot" / "meta.json").write_text(json.dumps({"fps": 30, "cameras": ["front"]}))
    reader = FolderReader(tmp_path / "robot")
    ep = reader.read(0)
    assert ep.name == "run7" and ep.obs["front"].shape == (3, 6, 8, 3)
    np.testing.assert_array_equal(ep.actions, [[0, 1], [1, 2], [2, 3]])
    assert ep.obs["gripper"].shape == (3, 1)
    assert reader.fps == 30


def test_folder_bad_input(tmp_path):
    root = write_folder(tmp_path / "r", make_episodes(1), table="csv")
    csv = root / "episode_000000" / "data.csv"
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("action.3")
    row = lines[2].split(",")
    row[col] = "nan"
    lines[2] = ",".join(row)
    csv.write_text("\n".join(lines) + "\n")
    before = tree_digest(root)
    with pytest.raises(StemobError, match=r"episode_000000.*'actions'.*NaN"):
        FolderReader(root).read(0)
    assert tree_digest(root) == before  # inputs are never modified
    (root / "episode_000000" / "front_rgb" / "000003.png").write_bytes(b"not a png")
    csv.write_text("\n".join([lines[0], *lines[1:2]]) + "\n")
    with pytest.raises(StemobError, match=r"000003.png.*episode_000000.*front_rgb"):
        FolderReader(root).read(0)
    with pytest.raises(StemobError, match="row 3"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n3\n")
        read_csv_table(bad)
    empty = tmp_path / "empty"
    (empty / "ep").mkdir(parents=True)
    np.savez(empty / "ep" / "data.npz", state=np.zeros((3, 2)))
    with pytest.raises(StemobError, match=r"'ep', key 'action' is missing"):
        FolderReader(empty).read(0)


def test_convert_and_cli(tmp_path, capsys):
    episodes = make_episodes()
    root = write_folder(tmp_path / "runs", episodes, fps=20)
    out = tmp_path / "out.hdf5"
    assert (
        main(["convert", str(root), str(out), "--key_map", "front_rgb=front_image", "--quiet"]) == 0
    )
    reader = RobomimicReader(out)
    assert reader.names == ["demo_0", "demo_1", "demo_2"]
    back = reader.read(1)
    np.testing.assert_array_equal(back.obs["front_image"], episodes[1].obs["front_rgb"])
    np.testing.assert_allclose(back.actions, episodes[1].actions)
    capsys.readouterr()
    assert main(["info", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "folder" and info["episodes"] == 3 and info["frames"] == 28
    assert info["fps"] == 20
    assert info["keys"]["obs/wrist_rgb"] == {"shape": [16, 20, 3], "dtype": "uint8"}
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "robomimic"
    assert main(["convert", str(root), str(out), "--quiet"]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "nothing")]) == 2
    convert_to_robomimic(root, out, overwrite=True, progress=False, next_obs=False)
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_module_runs():
    result = subprocess.run(
        [sys.executable, "-m", "stemob.data.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "convert" in result.stdout
