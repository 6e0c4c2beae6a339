"""robomimic HDF5 datasets, read and written with h5py (robomimic itself is never imported).

Layout (robomimic's docs/datasets/overview.md)::

    data                    attrs: total (int), env_args (JSON {env_name, type, env_kwargs})
    data/demo_N             attrs: num_samples, model_file (optional)
        actions (T, A)  rewards (T,)  dones (T,)  states (T, S) (optional)
        obs/<key> (T, ...)  next_obs/<key> (T, ...)    images uint8 (T, H, W, 3)
    mask/<filter>           demo names (bytes), e.g. train / valid

stemob adds ``data/demo_N/extras/<key>`` (per-step arrays that are not observations) and the
``stemob_attrs`` attribute (JSON metadata); robomimic ignores both.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.episodes import Episode, ReaderBase
from stemob.errors import StemobError

_NUMBER = re.compile(r"(\d+)$")


def demo_sort_key(name: str) -> tuple[int, str]:
    """Order ``demo_2`` before ``demo_10``."""
    match = _NUMBER.search(name)
    return (int(match.group(1)) if match else -1, name)


def json_default(value: Any) -> Any:
    """JSON encoding of numpy scalars and arrays (for metadata)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def open_hdf5(path: Path):
    """Open an HDF5 file read-only, with a clear error for missing, truncated or foreign files."""
    import h5py

    if not path.is_file():
        raise StemobError(f"dataset {path} does not exist")
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise StemobError(
            f"cannot open {path} as HDF5 (truncated or not HDF5?): {error}"
        ) from error


class RobomimicReader(ReaderBase):
    """Episodes of a robomimic HDF5 file.

    Args:
        path: the ``.hdf5`` file.
        obs_keys: observation keys to load (default: all under ``obs/``).
        action_key: the dataset holding actions (``actions``).
    """

    format = "robomimic"

    def __init__(
        self, path: str | Path, obs_keys: Sequence[str] | None = None, action_key: str = "actions"
    ) -> None:
        self.path = Path(path)
        self.obs_keys = list(obs_keys) if obs_keys is not None else None
        self.action_key = action_key
        self._h5: Any = None
        self._pid = -1
        h5 = self.h5
        if "data" not in h5:
            raise StemobError(f"{self.path} has no 'data' group: not a robomimic HDF5 file")
        self._names = sorted(h5["data"].keys(), key=demo_sort_key)
        env_args = h5["data"].attrs.get("env_args")
        try:
            self.env_args = json.loads(env_args) if env_args is not None else None
        except (TypeError, json.JSONDecodeError) as error:
            raise StemobError(f"{self.path}: data attrs env_args is not JSON: {error}") from error

    @property
    def h5(self) -> Any:
        """The file handle of this process (reopened after a fork, e.g. in DataLoader workers)."""
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_hdf5(self.path)
            self._pid = os.getpid()
        return self._h5

    def close(self) -> None:
        """Close this process's handle."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5"] = None
        return state

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def group(self, index: int) -> Any:
        """The ``data/<demo>`` group of episode ``index``."""
        return self.h5["data"][self._names[index]]

    def lengths(self) -> list[int]:
        out = []
        for i, name in enumerate(self._names):
            group = self.group(i)
            if self.action_key not in group:
                raise StemobError(
                    f"{self.path}: episode {name!r}, key {self.action_key!r} is missing"
                )
            out.append(int(group[self.action_key].shape[0]))
        return out

    def masks(self) -> dict[str, list[str]]:
        """The filter keys under ``mask/`` (e.g. train / valid) and the demos they list."""
        if "mask" not in self.h5:
            return {}
        return {
            k: [n.decode() if isinstance(n, bytes) else str(n) for n in v[:]]
            for k, v in self.h5["mask"].items()
        }

    def _read(self, name: str, group: Any, key: str) -> np.ndarray:
        if key not in group:
            raise StemobError(f"{self.path}: episode {name!r}, key {key!r} is missing")
        try:
            return group[key][()]
        except (OSError, ValueError, KeyError) as error:
            raise StemobError(
                f"{self.path}: episode {name!r}, key {key!r} cannot be read (corrupt?): {error}"
            ) from error

    def obs_key_list(self, index: int = 0) -> list[str]:
        """Observation keys present (or requested) in episode ``index``."""
        group = self.group(index)
        if self.obs_keys is not None:
            return list(self.obs_keys)
        return sorted(group["obs"].keys()) if "obs" in group else []

    def read(self, index: int) -> Episode:
        name = self._names[index]
        group = self.group(index)
        if "obs" not in group:
            raise StemobError(f"{self.path}: episode {name!r}, key 'obs' is missing")
        obs = {k: self._read(name, group, f"obs/{k}") for k in self.obs_key_list(index)}
        optional = {
            k: self._read(name, group, k) if k in group else None
            for k in ("rewards", "dones", "states")
        }
        extras = {}
        if "extras" in group:
            extras = {k: self._read(name, group, f"extras/{k}") for k in group["extras"]}
        attrs = stemob_attrs(group)
        if "model_file" in group.attrs:
            attrs["model_file"] = str(group.attrs["model_file"])
        episode = Episode(
            obs=obs,
            actions=self._read(name, group, self.action_key),
            name=name,
            source=str(self.path),
            extras=extras,
            attrs=attrs,
            **optional,
        )
        return episode.validate()


def write_robomimic(
    path: str | Path,
    episodes: Iterable[Episode],
    *,
    env_args: dict[str, Any] | None = None,
    next_obs: bool = True,
    masks: dict[str, Sequence[str]] | None = None,
    compression: str | None = None,
    total: int | None = None,
    progress: bool = False,
) -> Path:
    """Write episodes as a robomimic HDF5 file (temp file, then rename).

    Episodes are named ``demo_0, demo_1, ...`` (their source name is kept in ``stemob_attrs``).
    ``next_obs`` (the observations shifted by one step, the last repeated) is written by default
    because robomimic's ``SequenceDataset`` loads it unless told otherwise. ``masks`` maps a filter
    key to demo names (``{'train': [...], 'valid': [...]}``).
    """
    import h5py
    from tqdm import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # concurrent writers do not collide
    env_args = env_args or {"env_name": "", "type": 0, "env_kwargs": {}}
    count = frames = 0
    try:
        with h5py.File(tmp, "w") as h5:
            data = h5.create_group("data")
            bar = tqdm(
                episodes,
                total=total,
                desc=f"writing {path.name}",
                unit="episode",
                disable=not progress,
            )
            for index, episode in enumerate(bar):
                episode.validate()
                write_demo_group(data.create_group(f"demo_{index}"), episode, next_obs, compression)
                count, frames = index + 1, frames + len(episode)
            data.attrs["total"] = frames
            data.attrs["env_args"] = json.dumps(env_args)
            for key, names in (masks or {}).items():
                h5.create_dataset(f"mask/{key}", data=np.array([n.encode() for n in names]))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if count == 0:
        path.unlink()
        raise StemobError(f"no episodes to write to {path}")
    return path


def stemob_attrs(group: Any) -> dict[str, Any]:
    """The JSON metadata stemob keeps on a ``data/demo_i`` group (``{}`` when it has none)."""
    return json.loads(group.attrs.get("stemob_attrs", "{}"))


def write_demo_group(
    group: Any, episode: Episode, next_obs: bool = True, compression: str | None = None
) -> None:
    """Write one episode into an open ``data/demo_N`` group (robomimic layout)."""
    length = len(episode)
    group.attrs["num_samples"] = length
    if "model_file" in episode.attrs:
        group.attrs["model_file"] = str(episode.attrs["model_file"])
    group.attrs["stemob_attrs"] = json.dumps(
        {**episode.attrs, "episode_name": episode.name}, default=json_default
    )
    options = {"compression": compression} if compression else {}

    def put(name: str, value: np.ndarray) -> None:
        group.create_dataset(name, data=value, **(options if value.ndim >= 3 else {}))

    put("actions", episode.actions)
    rewards = episode.rewards if episode.rewards is not None else np.zeros(length, np.float64)
    dones = episode.dones
    if dones is None:
        dones = np.zeros(length, np.int64)
        dones[-1] = 1
    put("rewards", rewards)
    put("dones", dones)
    if episode.states is not None:
        put("states", episode.states)
    for key, value in episode.obs.items():
        put(f"obs/{key}", value)
        if next_obs:
            put(f"next_obs/{key}", np.concatenate([value[1:], value[-1:]]))
    for key, value in episode.extras.items():
        put(f"extras/{key}", np.asarray(value))
