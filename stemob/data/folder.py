"""The plain real-robot folder format (documented in stemob/data/README.md).

::

    root/
      meta.json                 optional: {"fps": 10, "cameras": ["front", "wrist"], "env_args": {...}}
      episode_000/              one folder per episode (any name; natural order)
        data.npz | data.csv     per-step arrays; ``action`` is required, the others are observations
        meta.json               optional, overrides the root's (fps, cameras, language, ...)
        front/000000.png ...    frames of camera ``front`` (PNG or JPEG, numbered)
        wrist.mp4               or one mp4 per camera

Any number of ``*.npz`` / ``*.csv`` files may hold the arrays (their keys are merged). CSV files
have a header row; a column ``key`` is a scalar and columns ``key.0, key.1, ...`` a vector.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.episodes import Episode, ReaderBase
from stemob.errors import StemobError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TABLE_SUFFIXES = (".npz", ".csv")
ACTION_KEYS = ("action", "actions")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[Any]:
    """Sort ``frame2`` before ``frame10``."""
    return [int(p) if p.isdigit() else p for p in _DIGITS.split(name)]


def _is_episode(folder: Path) -> bool:
    return any(f.suffix.lower() in TABLE_SUFFIXES for f in folder.iterdir() if f.is_file())


def looks_like_folder_dataset(path: Path) -> bool:
    """A folder of episode folders, or a single episode folder."""
    if not path.is_dir():
        return False
    return _is_episode(path) or any(_is_episode(d) for d in path.iterdir() if d.is_dir())


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StemobError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise StemobError(f"{path}: expected a JSON object")
    return data


def read_csv_table(path: Path) -> dict[str, np.ndarray]:
    """Columns ``key`` (scalar) and ``key.i`` (vector component i) to ``{key: (T, ...)}``."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise StemobError(f"cannot read {path}: {error}") from error
    if not rows:
        raise StemobError(f"{path} is empty (expected a header row)")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
    if any(len(r) != len(header) for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != len(header))
        raise StemobError(
            f"{path}: row {bad + 2} has {len(body[bad])} fields, header has {len(header)}"
        )
    try:
        values = np.array(body, dtype=np.float64).reshape(len(body), len(header))
    except ValueError as error:
        raise StemobError(f"{path}: non-numeric value ({error})") from error
    columns: dict[str, list[tuple[int, int]]] = {}
    for col, name in enumerate(header):
        key, _, index = name.rpartition(".")
        if key and index.isdigit():
            columns.setdefault(key, []).append((int(index), col))
        else:
            columns.setdefault(name, []).append((-1, col))
    out = {}
    for key, parts in columns.items():
        if len(parts) == 1 and parts[0][0] == -1:
            out[key] = values[:, parts[0][1]]
            continue
        order = sorted(parts)
        if [i for i, _ in order] != list(range(len(order))):
            raise StemobError(
                f"{path}: columns of {key!r} must be {key}.0 .. {key}.{len(order) - 1}"
            )
        out[key] = values[:, [c for _, c in order]]
    return out


def write_csv_table(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The inverse of :func:`read_csv_table` (vectors flattened per step)."""
    header, columns = [], []
    for key, value in arrays.items():
        flat = np.asarray(value).reshape(len(value), -1)
        if np.asarray(value).ndim == 1:
            header.append(key)
        else:
            header += [f"{key}.{i}" for i in range(flat.shape[1])]
        columns.append(flat)
    table = np.concatenate(columns, axis=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([repr(float(v)) for v in row] for row in table)


def _read_table(path: Path) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".csv":
        return read_csv_table(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as error:
        raise StemobError(f"cannot read {path} (truncated or not npz?): {error}") from error


def _read_frames(folder: Path, episode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda f: natural_key(f.name),
    )
    frames = []
    for file in files:
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as error:
            raise StemobError(
                f"{file}: episode {episode!r}, key {folder.name!r}: cannot decode image: {error}"
            ) from error
    if not frames:
        raise StemobError(f"{folder}: episode {episode!r}, key {folder.name!r} has no frames")
    if len({f.shape for f in frames}) > 1:
        raise StemobError(f"{folder}: episode {episode!r}, key {folder.name!r}: frame sizes differ")
    return np.stack(frames)


class FolderReader(ReaderBase):
    """Episodes of the plain folder format (see the module docstring)."""

    format = "folder"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise StemobError(f"{self.path} is not a folder")
        self.meta = _read_json(self.path / "meta.json")
        if _is_episode(self.path):
            self._folders = [self.path]
        else:
            self._folders = sorted(
                (d for d in self.path.iterdir() if d.is_dir() and _is_episode(d)),
                key=lambda d: natural_key(d.name),
            )
        if not self._folders:
            raise StemobError(f"{self.path} holds no episode folders with .npz or .csv files")
        self.fps = self.meta.get("fps")
        self.env_args = self.meta.get("env_args")

    @property
    def names(self) -> list[str]:
        return [d.name for d in self._folders]

    def _tables(self, folder: Path) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for file in sorted(folder.iterdir()):
            if file.is_file() and file.suffix.lower() in TABLE_SUFFIXES:
                for key, value in _read_table(file).items():
                    if key in arrays:
                        raise StemobError(
                            f"{file}: episode {folder.name!r}, key {key!r} is defined twice"
                        )
                    arrays[key] = value
        return arrays

    def lengths(self) -> list[int]:
        out = []
        for folder in self._folders:
            arrays = self._tables(folder)
            key = next((k for k in ACTION_KEYS if k in arrays), None)
            out.append(len(arrays[key]) if key else 0)
        return out

    def read(self, index: int) -> Episode:
        folder = self._folders[index]
        meta = {**self.meta, **_read_json(folder / "meta.json")}
        arrays = self._tables(folder)
        action_key = next((k for k in ACTION_KEYS if k in arrays), None)
        if action_key is None:
            raise StemobError(
                f"{folder}: episode {folder.name!r}, key 'action' is missing "
                f"(found {sorted(arrays)} in its .npz/.csv files)"
            )
        actions = arrays.pop(action_key)
        obs = dict(arrays)
        cameras = meta.get("cameras")
        found = {}
        for entry in folder.iterdir():
            if entry.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in entry.iterdir()):
                found[entry.name] = entry
            elif entry.suffix.lower() == ".mp4":
                found[entry.stem] = entry
        for camera in cameras if cameras is not None else sorted(found):
            if camera not in found:
                raise StemobError(
                    f"{folder}: episode {folder.name!r}, key {camera!r}: no frames folder or mp4"
                )
            if camera in obs:
                raise StemobError(
                    f"{folder}: episode {folder.name!r}, key {camera!r} is defined twice"
                )
            entry = found[camera]
            if entry.is_dir():
                obs[camera] = _read_frames(entry, folder.name)
            else:
                from stemob.data.video import read_video

                obs[camera] = read_video(entry)[0]
        attrs = {k: v for k, v in meta.items() if k not in ("cameras", "env_args")}
        episode = Episode(
            obs=obs, actions=actions, name=folder.name, source=str(folder), attrs=attrs
        )
        return episode.validate()


def write_folder(
    root: str | Path,
    episodes: Iterable[Episode],
    *,
    fps: float | None = None,
    image_format: str = "png",
    table: str = "npz",
    env_args: dict[str, Any] | None = None,
) -> Path:
    """Write episodes in the folder format (``image_format``: png, jpg or mp4; ``table``: npz or csv).

    The folder is written beside ``root`` and renamed into place when complete.
    """
    from PIL import Image

    if image_format not in ("png", "jpg", "mp4") or table not in ("npz", "csv"):
        raise StemobError(f"unsupported image_format {image_format!r} or table {table!r}")
    root = Path(root)
    if root.exists():
        raise StemobError(f"{root} already exists")
    tmp = root.with_name(f".{root.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    cameras: list[str] | None = None
    for index, episode in enumerate(episodes):
        episode.validate()
        folder = tmp / f"episode_{index:06d}"
        folder.mkdir()
        lowdim = {"action": episode.actions} | {k: episode.obs[k] for k in episode.lowdim_keys}
        if table == "npz":
            np.savez(folder / "data.npz", **lowdim)
        else:
            write_csv_table(folder / "data.csv", lowdim)
        cameras = episode.image_keys
        for camera in cameras:
            frames = episode.obs[camera]
            if image_format == "mp4":
                from stemob.data.video import write_video

                write_video(folder / f"{camera}.mp4", frames, fps or 10.0)
                continue
            (folder / camera).mkdir()
            for step, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / camera / f"{step:06d}.{image_format}")
        if episode.attrs:
            (folder / "meta.json").write_text(json.dumps(episode.attrs, default=_plain))
    meta = {"fps": fps, "cameras": cameras or []}
    if env_args is not None:
        meta["env_args"] = env_args
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root)
    return root


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)
