"""LeRobotDataset v2.1 and v3.0: round trips, alignment by timestamp, bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from stemob.data.dataset import DatasetConfig, DemoDataset
from stemob.data.detect import detect_format
from stemob.data.episodes import Episode
from stemob.data.lerobot import LeRobotReader, write_lerobot
from stemob.errors import StemobError


def coloured_episodes(count=2, lengths=(5, 7)):
    """Frames of one flat colour per step (encode well), so each frame is identifiable."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        t = lengths[i % len(lengths)]
        colours = (np.arange(t) * 30 + 20 * i) % 250
        top = np.zeros((t, 16, 24, 3), np.uint8)
        top[..., 0] = colours[:, None, None]
        top[..., 1] = 255 - colours[:, None, None]
        out.append(
            Episode(
                obs={
                    "observation.images.top": top,
                    "observation.images.wrist": top[:, :, ::-1].copy(),
                    "observation.state": rng.normal(size=(t, 6)).astype(np.float32),
                },
                actions=rng.normal(size=(t, 6)).astype(np.float32),
                name=f"e{i}",
            )
        )
    return out


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_lerobot_round_trip(tmp_path, version):
    episodes = coloured_episodes()
    root = write_lerobot(tmp_path / "ds", episodes, fps=15, version=version, task="pick")
    assert detect_format(root) == "lerobot"
    reader = LeRobotReader(root)
    assert reader.version == version and reader.fps == 15 and reader.lengths() == [5, 7]
    for original, back in zip(episodes, reader, strict=True):
        np.testing.assert_array_equal(back.actions, original.actions)
        np.testing.assert_array_equal(
            back.obs["observation.state"], original.obs["observation.state"]
        )
        for key in ("observation.images.top", "observation.images.wrist"):
            diff = np.abs(back.obs[key].astype(int) - original.obs[key].astype(int))
            assert back.obs[key].shape == original.obs[key].shape and diff.mean() < 4, key
        assert back.attrs["language"] == ["pick"]
    info = reader.info()
    assert info["episodes"] == 2 and info["frames"] == 12 and info["fps"] == 15
    ds = DemoDataset(
        DatasetConfig(
            path=root,
            key_map={"observation.images.top": "top"},
            obs_keys=["top", "observation.state"],
            horizon=4,
        )
    )
    assert ds.get_batch([0, 6])["obs"]["top"].shape == (2, 2, 3, 16, 24)


def test_frames_are_aligned_by_timestamp(tmp_path):
    episodes = coloured_episodes(count=1, lengths=(8,))
    root = write_lerobot(tmp_path / "ds", episodes, fps=10, version="v2.1")
    data = root / "data" / "chunk-000" / "episode_000000.parquet"
    table = pq.read_table(data)
    keep = [0, 1, 3, 4, 5, 6, 7]  # a dropped row: frame 2's data is missing
    pq.write_table(table.take(keep), data)
    meta = root / "meta" / "episodes.jsonl"
    meta.write_text(json.dumps({"episode_index": 0, "tasks": ["t"], "length": 7}) + "\n")
    back = LeRobotReader(root).read(0)
    top = episodes[0].obs["observation.images.top"]
    red = back.obs["observation.images.top"][:, 8, 12, 0].astype(int)
    np.testing.assert_allclose(red, top[keep, 8, 12, 0], atol=4)
    # a timestamp past the end of the video is an error naming file, episode and key
    table = pq.read_table(data)
    shifted = table.set_column(
        table.column_names.index("timestamp"),
        "timestamp",
        [np.asarray(table.column("timestamp")) + np.float32(5.0)],
    )
    pq.write_table(shifted, data)
    with pytest.raises(
        StemobError, match=r"episode_000000.mp4.*episode_000000.*observation.images"
    ):
        LeRobotReader(root).read(0)


def test_lerobot_bad_input(tmp_path):
    root = write_lerobot(tmp_path / "ds", coloured_episodes(count=1), version="v3.0")
    data = root / "data" / "chunk-000" / "file-000.parquet"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(StemobError, match="file-000.parquet"):
        LeRobotReader(root).read(0)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["codebase_version"] = "v1.6"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(StemobError, match="v1.6"):
        LeRobotReader(root)
