"""LeRobotDataset v2.1 and v3.0, read with pyarrow and imageio-ffmpeg (lerobot is never imported).

v2.1: ``meta/info.json``, ``meta/episodes.jsonl``, one parquet per episode
(``data/chunk-XXX/episode_NNNNNN.parquet``) and one mp4 per episode and camera.
v3.0: ``meta/info.json``, ``meta/episodes/chunk-XXX/file-YYY.parquet`` (per-episode rows with the
data and video file indices and ``videos/<key>/from_timestamp``), parquet shards holding many
episodes and mp4 files holding many episodes per camera.

Video frames are matched to data rows by timestamp (``from_timestamp + timestamp``), not by
position, so dropped or reordered rows still get their own frames.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.episodes import Episode, ReaderBase
from stemob.data.video import read_video, write_video
from stemob.errors import StemobError

BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def _column(table: Any, key: str, path: Path) -> np.ndarray:
    """A parquet column as ``(N, ...)`` numpy (list columns become vectors)."""
    import pyarrow as pa

    column = table.column(key).combine_chunks()
    rows = len(column)
    while (
        pa.types.is_list(column.type)
        or pa.types.is_fixed_size_list(column.type)
        or (pa.types.is_large_list(column.type))
    ):
        column = column.flatten()
    values = column.to_numpy(zero_copy_only=False)
    if rows and values.size % rows:
        raise StemobError(f"{path}: key {key!r} has ragged rows")
    return values.reshape(rows, -1) if rows else values.reshape(0, 0)


class LeRobotReader(ReaderBase):
    """Episodes of a local LeRobotDataset (v2.0/v2.1 or v3.0).

    Args:
        path: the dataset root (holding ``meta/info.json``).
        tolerance: how far (in frames) a row's timestamp may be from a video frame.
    """

    format = "lerobot"

    def __init__(self, path: str | Path, tolerance: float = 0.25) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        info_path = self.path / "meta" / "info.json"
        if not info_path.is_file():
            raise StemobError(f"{self.path} is not a LeRobot dataset (no meta/info.json)")
        try:
            self.info_json = json.loads(info_path.read_text())
        except json.JSONDecodeError as error:
            raise StemobError(f"{info_path}: not valid JSON: {error}") from error
        self.version = str(self.info_json.get("codebase_version", ""))
        if not self.version.startswith(("v2", "v3")):
            raise StemobError(f"{info_path}: codebase_version {self.version!r} is not v2.x or v3.0")
        self.fps = float(self.info_json["fps"])
        self.tolerance = tolerance
        features = self.info_json.get("features", {})
        self.video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
        self.image_keys = [k for k, f in features.items() if f.get("dtype") == "image"]
        self.lowdim_keys = [
            k
            for k, f in features.items()
            if f.get("dtype") not in ("video", "image", "string")
            and k not in BOOKKEEPING
            and k != "action"
        ]
        if "action" not in features:
            raise StemobError(f"{info_path}: key 'action' is missing from features")
        self._cache: dict[str, Any] = {}
        if self.version.startswith("v2"):
            episodes_path = self.path / "meta" / "episodes.jsonl"
            try:
                lines = episodes_path.read_text().splitlines()
                self._episodes = [json.loads(line) for line in lines if line.strip()]
            except (OSError, json.JSONDecodeError) as error:
                raise StemobError(f"cannot read {episodes_path}: {error}") from error
        else:
            files = sorted((self.path / "meta" / "episodes").rglob("*.parquet"))
            if not files:
                raise StemobError(f"{self.path}: no meta/episodes/*.parquet (v3.0 layout)")
            self._episodes = []
            for file in files:
                try:
                    self._episodes += pq.read_table(file).to_pylist()
                except Exception as error:  # pyarrow raises several types for corrupt files
                    raise StemobError(f"cannot read {file}: {error}") from error
        self._episodes.sort(key=lambda e: int(e["episode_index"]))

    @property
    def names(self) -> list[str]:
        return [f"episode_{int(e['episode_index']):06d}" for e in self._episodes]

    def lengths(self) -> list[int]:
        return [int(e["length"]) for e in self._episodes]

    def _table(self, path: Path) -> Any:
        import pyarrow.parquet as pq

        if self._cache.get("table_path") != path:
            if not path.is_file():
                raise StemobError(f"{path} does not exist")
            try:
                self._cache["table"] = pq.read_table(path)
            except Exception as error:
                raise StemobError(f"cannot read {path} (truncated or corrupt?): {error}") from error
            self._cache["table_path"] = path
        return self._cache["table"]

    def _video(self, path: Path) -> tuple[np.ndarray, float]:
        cached = self._cache.setdefault("videos", {})
        if path not in cached:
            if len(cached) > 8:
                cached.clear()
            frames, fps = read_video(path)
            cached[path] = (frames, fps or self.fps)
        return cached[path]

    def _paths(self, meta: dict[str, Any]) -> tuple[Path, dict[str, tuple[Path, float]]]:
        index = int(meta["episode_index"])
        info = self.info_json
        if self.version.startswith("v2"):
            chunk = index // int(info.get("chunks_size", 1000))
            data = self.path / info.get("data_path", V2_DATA).format(
                episode_chunk=chunk, episode_index=index
            )
            videos = {
                key: (
                    self.path
                    / info.get("video_path", V2_VIDEO).format(
                        episode_chunk=chunk, video_key=key, episode_index=index
                    ),
                    0.0,
                )
                for key in self.video_keys
            }
            return data, videos
        data = self.path / info.get("data_path", V3_DATA).format(
            chunk_index=int(meta["data/chunk_index"]), file_index=int(meta["data/file_index"])
        )
        videos = {}
        for key in self.video_keys:
            path = self.path / info.get("video_path", V3_VIDEO).format(
                video_key=key,
                chunk_index=int(meta[f"videos/{key}/chunk_index"]),
                file_index=int(meta[f"videos/{key}/file_index"]),
            )
            videos[key] = (path, float(meta.get(f"videos/{key}/from_timestamp", 0.0)))
        return data, videos

    def read(self, index: int) -> Episode:
        import pyarrow.compute as pc

        meta, name = self._episodes[index], self.names[index]
        data_path, videos = self._paths(meta)
        table = self._table(data_path)
        if "episode_index" in table.column_names:
            table = table.filter(
                pc.equal(table.column("episode_index"), int(meta["episode_index"]))
            )
        if table.num_rows == 0:
            raise StemobError(f"{data_path}: episode {name!r} has no rows")
        for key in ("action", "timestamp", *self.lowdim_keys):
            if key not in table.column_names:
                raise StemobError(f"{data_path}: episode {name!r}, key {key!r} is missing")
        if "frame_index" in table.column_names:
            order = np.argsort(_column(table, "frame_index", data_path)[:, 0], kind="stable")
            table = table.take(order)
        timestamps = _column(table, "timestamp", data_path)[:, 0].astype(np.float64)
        obs = {k: _column(table, k, data_path).astype(np.float32) for k in self.lowdim_keys}
        for key in self.image_keys:
            obs[key] = self._decode_images(table, key, data_path, name)
        for key, (path, start) in videos.items():
            frames, fps = self._video(path)
            position = (start + timestamps) * fps
            nearest = np.rint(position).astype(np.int64)
            if (
                (np.abs(position - nearest) > self.tolerance).any()
                or nearest.min() < 0
                or (nearest.max() >= len(frames))
            ):
                bad = int(
                    np.argmax(
                        (np.abs(position - nearest) > self.tolerance)
                        | (nearest < 0)
                        | (nearest >= len(frames))
                    )
                )
                raise StemobError(
                    f"{path}: episode {name!r}, key {key!r}: no video frame at timestamp "
                    f"{start + timestamps[bad]:.4f}s ({len(frames)} frames at {fps} fps)"
                )
            obs[key] = frames[nearest]
        tasks = meta.get("tasks")
        attrs = {"fps": self.fps, "language": tasks} if tasks else {"fps": self.fps}
        episode = Episode(
            obs=obs,
            actions=_column(table, "action", data_path).astype(np.float32),
            name=name,
            source=str(data_path),
            attrs=attrs,
        )
        return episode.validate()

    def _decode_images(self, table: Any, key: str, path: Path, name: str) -> np.ndarray:
        import io

        from PIL import Image

        frames = []
        for cell in table.column(key).to_pylist():
            raw = cell.get("bytes") if isinstance(cell, dict) else cell
            if not raw and isinstance(cell, dict) and cell.get("path"):
                raw = (self.path / cell["path"]).read_bytes()
            try:
                with Image.open(io.BytesIO(raw)) as image:
                    frames.append(np.asarray(image.convert("RGB")))
            except Exception as error:
                raise StemobError(
                    f"{path}: episode {name!r}, key {key!r}: bad image: {error}"
                ) from error
        return np.stack(frames)

    def info(self) -> dict[str, Any]:
        out = super().info()
        out["codebase_version"] = self.version
        return out


def episode_stats(episode: Episode) -> dict[str, dict[str, np.ndarray]]:
    """LeRobot's per-episode feature statistics (``min``, ``max``, ``mean``, ``std``, ``count``):
    per dimension for vectors, per channel in [0, 1] with shape (3, 1, 1) for cameras (lerobot
    ``datasets/compute_stats.py``, which samples frames; here every frame counts)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    values = {"action": episode.actions, **episode.obs}
    for key, value in values.items():
        value = np.asarray(value)
        if key in episode.image_keys:
            frames = value.astype(np.float64) / 255.0  # (T, H, W, 3)
            axes: tuple[int, ...] = (0, 1, 2)
            reshape = (3, 1, 1)
        else:
            frames = value.astype(np.float64).reshape(len(value), -1)
            axes, reshape = (0,), (-1,)
        out[key] = {
            "min": frames.min(axes).reshape(reshape),
            "max": frames.max(axes).reshape(reshape),
            "mean": frames.mean(axes).reshape(reshape),
            "std": frames.std(axes).reshape(reshape),
            "count": np.array([len(value)]),
        }
    return out


def aggregate_stats(per_episode: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """The dataset's statistics from its episodes' (count-weighted means, pooled variance)."""
    out: dict[str, Any] = {}
    for key in per_episode[0]:
        items = [s[key] for s in per_episode]
        counts = np.array([float(s["count"][0]) for s in items])
        means = np.stack([s["mean"] for s in items])
        weights = counts.reshape(-1, *[1] * (means.ndim - 1)) / counts.sum()
        mean = (means * weights).sum(0)
        var = ((np.stack([s["std"] for s in items]) ** 2 + (means - mean) ** 2) * weights).sum(0)
        out[key] = {
            "min": np.min([s["min"] for s in items], 0),
            "max": np.max([s["max"] for s in items], 0),
            "mean": mean,
            "std": np.sqrt(var),
            "count": np.array([int(counts.sum())]),
        }
    return out


def _stats_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    return {k: {s: np.asarray(v).tolist() for s, v in d.items()} for k, d in stats.items()}


def write_lerobot(
    root: str | Path,
    episodes: Iterable[Episode],
    *,
    fps: float = 10.0,
    version: str = "v3.0",
    task: str = "task",
    pix_fmt: str = "yuv420p",
    crf: int = 10,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Write episodes as a LeRobotDataset (``v2.1`` or ``v3.0``) with one mp4 stream per camera.

    Observation keys are used as feature names (``observation.state``, ``observation.images.top``).
    ``meta/stats.json`` holds the dataset's statistics and each episode's are stored as LeRobot
    does (v3.0: ``stats/<feature>/<stat>`` columns of ``meta/episodes``; v2.1:
    ``meta/episodes_stats.jsonl``). ``extra_meta`` files are written under ``meta/``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if version not in ("v2.1", "v3.0"):
        raise StemobError(f"version must be 'v2.1' or 'v3.0', got {version!r}")
    root = Path(root)
    if root.exists():
        raise StemobError(f"{root} already exists")
    tmp = root.with_name(f".{root.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    episodes = [e.validate() for e in episodes]
    if not episodes:
        raise StemobError(f"no episodes to write to {root}")
    first = episodes[0]
    features: dict[str, Any] = {}
    for key in first.image_keys:
        h, w, c = first.obs[key].shape[1:]
        features[key] = {
            "dtype": "video",
            "shape": [h, w, c],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": fps, "video.codec": "h264", "video.pix_fmt": pix_fmt},
        }
    for key in ["action", *first.lowdim_keys]:
        value = first.actions if key == "action" else first.obs[key]
        features[key] = {"dtype": "float32", "shape": list(value.shape[1:]), "names": None}
    for key in BOOKKEEPING:
        features[key] = {
            "dtype": "float32" if key == "timestamp" else "int64",
            "shape": [1],
            "names": None,
        }

    def table_of(episode: Episode, index: int, start: int) -> Any:
        length = len(episode)
        columns = {
            key: pa.array(
                list(
                    (episode.actions if key == "action" else episode.obs[key])
                    .astype(np.float32)
                    .reshape(length, -1)
                ),
                type=pa.list_(pa.float32()),
            )
            for key in ["action", *first.lowdim_keys]
        }
        columns["timestamp"] = pa.array(np.arange(length, dtype=np.float32) / np.float32(fps))
        columns["frame_index"] = pa.array(np.arange(length, dtype=np.int64))
        columns["episode_index"] = pa.array(np.full(length, index, np.int64))
        columns["index"] = pa.array(np.arange(start, start + length, dtype=np.int64))
        columns["task_index"] = pa.array(np.zeros(length, np.int64))
        return pa.table(columns)

    total = sum(len(e) for e in episodes)
    info = {
        "codebase_version": version, "robot_type": "unknown", "fps": fps,
        "total_episodes": len(episodes), "total_frames": total, "total_tasks": 1,
        "chunks_size": 1000, "features": features,
        "data_path": V2_DATA if version == "v2.1" else V3_DATA,
        "video_path": V2_VIDEO if version == "v2.1" else V3_VIDEO,
    }  # fmt: skip
    (tmp / "meta").mkdir(parents=True)
    per_episode = [episode_stats(e) for e in episodes]
    start = 0
    if version == "v2.1":
        lines, stats_lines = [], []
        for index, episode in enumerate(episodes):
            data = tmp / V2_DATA.format(episode_chunk=0, episode_index=index)
            data.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table_of(episode, index, start), data)
            for key in first.image_keys:
                path = tmp / V2_VIDEO.format(episode_chunk=0, video_key=key, episode_index=index)
                write_video(path, episode.obs[key], fps, pix_fmt=pix_fmt, crf=crf)
            lines.append(
                json.dumps({"episode_index": index, "tasks": [task], "length": len(episode)})
            )
            stats_lines.append(
                json.dumps({"episode_index": index, "stats": _stats_json(per_episode[index])})
            )
            start += len(episode)
        (tmp / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
        (tmp / "meta" / "episodes_stats.jsonl").write_text("\n".join(stats_lines) + "\n")
        (tmp / "meta" / "tasks.jsonl").write_text(
            json.dumps({"task_index": 0, "task": task}) + "\n"
        )
    else:
        rows = []
        for index, episode in enumerate(episodes):
            row = {
                "episode_index": index,
                "tasks": [task],
                "length": len(episode),
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": start,
                "dataset_to_index": start + len(episode),
            }
            for key in first.image_keys:
                row |= {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / fps,
                    f"videos/{key}/to_timestamp": (start + len(episode)) / fps,
                }
            for key, stats in _stats_json(per_episode[index]).items():
                row |= {f"stats/{key}/{name}": value for name, value in stats.items()}
            rows.append(row)
            start += len(episode)
        data = tmp / V3_DATA.format(chunk_index=0, file_index=0)
        data.parent.mkdir(parents=True)
        offsets = np.cumsum([0] + [len(e) for e in episodes])
        pq.write_table(
            pa.concat_tables([table_of(e, i, int(offsets[i])) for i, e in enumerate(episodes)]),
            data,
        )
        for key in first.image_keys:
            frames = np.concatenate([e.obs[key] for e in episodes])
            path = tmp / V3_VIDEO.format(video_key=key, chunk_index=0, file_index=0)
            write_video(path, frames, fps, pix_fmt=pix_fmt, crf=crf)
        meta = tmp / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        meta.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), meta)
        pq.write_table(
            pa.table({"task_index": [0], "task": [task]}), tmp / "meta" / "tasks.parquet"
        )
    (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    stats = _stats_json(aggregate_stats(per_episode))
    (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    for name, content in (extra_meta or {}).items():
        (tmp / "meta" / name).write_text(json.dumps(content, indent=2))
    os.replace(tmp, root)
    return root
