"""The episode model shared by every reader and writer, and its validation."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stemob.errors import StemobError


def is_image(array: np.ndarray) -> bool:
    """Whether ``array`` is a stack of RGB frames: uint8 ``(T, H, W, 3)``."""
    return array.dtype == np.uint8 and array.ndim == 4 and array.shape[-1] == 3


@dataclass
class Episode:
    """One demonstration, held in memory.

    Attributes:
        obs: observation arrays by key, each ``(T, ...)``: images uint8 ``(T, H, W, 3)``, low-dim
            numeric ``(T, D)`` (or ``(T, ...)``).
        actions: float ``(T, A)``; ``actions[t]`` is taken after observing step ``t``.
        name: the episode's name in its source (``demo_3``, ``episode_000003``, ...).
        source: the file or folder it came from (named in errors).
        rewards: optional float ``(T,)``.
        dones: optional ``(T,)`` (0/1).
        states: optional simulator states ``(T, S)``.
        extras: other per-step arrays that are not policy inputs (camera matrices, joint poses,
            the executed actions of DART-style recordings).
        attrs: JSON-serialisable metadata (language instruction, fps, variation, model_file).
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    name: str = "demo_0"
    source: str = ""
    rewards: np.ndarray | None = None
    dones: np.ndarray | None = None
    states: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def image_keys(self) -> list[str]:
        """Observation keys holding RGB frames."""
        return [k for k, v in self.obs.items() if is_image(v)]

    @property
    def lowdim_keys(self) -> list[str]:
        """Observation keys holding numeric vectors."""
        return [k for k, v in self.obs.items() if not is_image(v)]

    def where(self, key: str) -> str:
        """``file, episode, key`` for error messages."""
        return f"{self.source or '<memory>'}: episode {self.name!r}, key {key!r}"

    def validate(self) -> Episode:
        """Check shapes, dtypes, lengths and finiteness; one clear error naming file, episode, key."""
        actions = np.asarray(self.actions)
        if actions.ndim == 1:
            actions = actions[:, None]
        if actions.ndim != 2 or not np.issubdtype(actions.dtype, np.number):
            raise StemobError(
                f"{self.where('actions')}: expected numeric (T, A) actions, got "
                f"{actions.dtype} {actions.shape}"
            )
        if len(actions) == 0:
            raise StemobError(f"{self.where('actions')}: the episode has no steps")
        if not np.isfinite(actions).all():
            bad = int(np.argwhere(~np.isfinite(actions))[0][0])
            raise StemobError(
                f"{self.where('actions')}: NaN or inf in actions (first at step {bad})"
            )
        self.actions = actions
        length = len(actions)
        for key, value in list(self.obs.items()):
            self.obs[key] = _check_obs(self, key, np.asarray(value), length)
        for label in ("rewards", "dones", "states"):
            value = getattr(self, label)
            if value is not None:
                value = np.asarray(value)
                if value.shape[:1] != (length,):
                    raise StemobError(
                        f"{self.where(label)}: {len(value)} steps but the actions have {length}"
                    )
                setattr(self, label, value)
        for key, value in self.extras.items():
            if np.asarray(value).shape[:1] != (length,):
                raise StemobError(
                    f"{self.where(key)}: {len(value)} steps but the actions have {length}"
                )
        return self


def _check_obs(episode: Episode, key: str, value: np.ndarray, length: int) -> np.ndarray:
    if value.ndim == 0 or len(value) != length:
        got = "a scalar" if value.ndim == 0 else f"{len(value)} steps"
        raise StemobError(
            f"{episode.where(key)}: ragged lengths: {got} but the actions have {length} steps"
        )
    if value.ndim >= 4 or (value.dtype == np.uint8 and value.ndim == 3):
        if not is_image(value):
            raise StemobError(
                f"{episode.where(key)}: images must be uint8 (T, H, W, 3), got "
                f"{value.dtype} {value.shape}"
            )
        return value
    if value.ndim == 1:
        value = value[:, None]
    if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
        raise StemobError(f"{episode.where(key)}: expected a numeric array, got {value.dtype}")
    if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
        bad = int(np.argwhere(~np.isfinite(value))[0][0])
        raise StemobError(f"{episode.where(key)}: NaN or inf in observations (first at step {bad})")
    return value


def rename_keys(episode: Episode, key_map: Mapping[str, str]) -> Episode:
    """Rename observation keys (``{'front_rgb': 'front_image'}``); unknown sources are an error."""
    if not key_map:
        return episode
    missing = [k for k in key_map if k not in episode.obs]
    if missing:
        raise StemobError(
            f"{episode.where(missing[0])}: key_map names a key the episode does not have "
            f"(it has {sorted(episode.obs)})"
        )
    renamed = {key_map.get(k, k): v for k, v in episode.obs.items()}
    if len(renamed) != len(episode.obs):
        raise StemobError(f"{episode.source}: key_map {dict(key_map)} merges two keys into one")
    episode.obs = renamed
    return episode


class EpisodeReader(Protocol):
    """What every reader provides (robomimic HDF5, RLBench, LeRobot, folders)."""

    format: str
    path: Any

    @property
    def names(self) -> list[str]:
        """Episode names, in order."""

    def read(self, index: int) -> Episode:
        """Load and validate episode ``index``."""

    def info(self) -> dict[str, Any]:
        """Format, episodes, frames, keys with shapes and dtypes, fps where known."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Episode]: ...


class ReaderBase:
    """Shared helpers of the readers: iteration and a generic ``info`` built from episode 0."""

    format = "?"
    fps: float | None = None
    env_args: dict[str, Any] | None = None

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, index: int) -> Episode:
        raise NotImplementedError

    def lengths(self) -> list[int]:
        """Steps per episode (readers override this with a cheaper look-up)."""
        return [len(self.read(i)) for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[Episode]:
        for index in range(len(self)):
            yield self.read(index)

    def info(self) -> dict[str, Any]:
        first = self.read(0) if len(self) else None
        keys: dict[str, Any] = {}
        if first is not None:
            for key, value in first.obs.items():
                keys[f"obs/{key}"] = {"shape": list(value.shape[1:]), "dtype": str(value.dtype)}
            keys["actions"] = {
                "shape": list(first.actions.shape[1:]),
                "dtype": str(first.actions.dtype),
            }
        out = {
            "format": self.format,
            "path": str(getattr(self, "path", "")),
            "episodes": len(self),
            "frames": int(sum(self.lengths())),
            "keys": keys,
            "fps": self.fps,
        }
        if first is not None and "action_source" in first.attrs:
            out["action_source (episode 0)"] = first.attrs["action_source"]
        return out
