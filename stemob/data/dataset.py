"""``DemoDataset``: demonstrations as training samples in the batch contract of the policies.

A batch is ``{'obs': {key: (B, n_obs_steps, ...)}, 'action': (B, horizon, A),
'action_is_pad': (B, horizon)}``; images are uint8 ``(B, n_obs_steps, 3, H, W)`` (the policy
normalises them with the stats stored in its checkpoint), low-dim keys and actions float32.
With ``stemob_latents`` the inverted keys are float32 Stem-OB latent maps ``(B, n_obs_steps, C, h,
w)`` read from the cache instead of decoded frames.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemob.data.detect import FORMATS, open_reader
from stemob.data.episodes import Episode, is_image, rename_keys
from stemob.data.normalizer import KeyStats, Normalizer, channel_stats, image_stats, key_stats
from stemob.data.sampler import SequenceSampler, split_episodes
from stemob.errors import StemobError
from stemob.inversion.settings import InversionSettings

STEMOB_SOURCES = ("cache", "online")
_NUMBER = re.compile(r"(\d+)$")


@dataclass
class DatasetConfig:
    """Where the demonstrations are and how samples are cut from them.

    Attributes:
        path: a robomimic ``.hdf5`` file, an RLBench root, a LeRobot dataset or an episode folder.
        reader: ``auto`` (detect) or one of ``robomimic``, ``rlbench``, ``lerobot``, ``folder``.
        reader_kwargs: extra options of the reader (e.g. ``{'cameras': ['front']}`` for RLBench).
        key_map: renames source keys to the policy's keys (``{'front_rgb': 'front_image'}``).
        obs_keys: observation keys (after renaming) the policy gets; ``None``: all of them.
        n_obs_steps: observation frames per sample.
        horizon: actions per sample; the window starts at the first observation step.
        val_ratio: share of episodes held out for validation (split by episode, seeded).
        seed: seed of the split.
        stemob: Stem-OB inversion settings (or their dict); ``None`` trains on the raw images.
        stemob_source: ``cache`` (swap images for the verified cache of ``stemob-invert-dataset``)
            or ``online`` (invert every sample with fresh noise; slow, for noise-resampling studies).
        stemob_keys: image keys (after renaming) to invert; ``None``: every image key.
        stemob_latents: give the policy the inverted latents of the ``stemob_keys`` (float
            ``(C, h, w)`` maps from a cache built with latents) instead of the decoded frames.
        stemob_draws: M noise draws per training frame: M caches (draw m's noise seeded by
            ``stemob.seed + m``, :meth:`InversionSettings.draw`) held in memory, and the dataset is
            M times longer: sample ``i`` is window ``i % n`` seen through draw ``i // n``, so one
            pass over the data shows every frame under every draw. The validation split and the
            image statistics use draw 0.
        cache_dir: where the Stem-OB cache lives if not beside the dataset.
        in_memory: load every episode into memory once (fast); ``False`` reads images from the
            HDF5 file per batch (robomimic files only; handles reopen in each worker).
        image_stats: also compute per-channel image statistics.
        inversion_device: device of the online inverter.
    """

    path: str
    reader: str = "auto"
    reader_kwargs: dict[str, Any] = field(default_factory=dict)
    key_map: dict[str, str] = field(default_factory=dict)
    obs_keys: list[str] | None = None
    n_obs_steps: int = 2
    horizon: int = 16
    val_ratio: float = 0.0
    seed: int = 0
    stemob: InversionSettings | None = None
    stemob_source: str = "cache"
    stemob_keys: list[str] | None = None
    stemob_latents: bool = False
    stemob_draws: int = 1
    cache_dir: str | None = None
    in_memory: bool = True
    image_stats: bool = True
    inversion_device: str = "cpu"

    def __post_init__(self) -> None:
        self.path = str(self.path)
        if self.reader != "auto" and self.reader not in FORMATS:
            raise StemobError(
                f"unknown reader {self.reader!r}: expected 'auto' or one of {', '.join(FORMATS)}"
            )
        for name in ("n_obs_steps", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise StemobError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.val_ratio) < 1.0:
            raise StemobError(f"val_ratio must be in [0, 1), got {self.val_ratio!r}")
        if isinstance(self.stemob, dict):
            self.stemob = InversionSettings.from_dict(self.stemob)
        if self.stemob is not None and not isinstance(self.stemob, InversionSettings):
            raise StemobError(
                f"stemob must be InversionSettings, a dict or None, got {self.stemob!r}"
            )
        if self.stemob_source not in STEMOB_SOURCES:
            raise StemobError(
                f"stemob_source must be one of {STEMOB_SOURCES}, got {self.stemob_source!r}"
            )
        if self.stemob_latents and (self.stemob is None or self.stemob_source != "cache"):
            raise StemobError(
                "stemob_latents needs Stem-OB settings and stemob_source='cache' (the latents are "
                "read from the cache)"
            )
        draws = self.stemob_draws
        if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
            raise StemobError(f"stemob_draws must be a positive integer, got {draws!r}")
        if draws > 1:
            if self.stemob is None or self.stemob_source != "cache" or self.stemob_latents:
                raise StemobError(
                    "stemob_draws > 1 needs Stem-OB settings, stemob_source='cache' and decoded "
                    "frames (stemob_latents=false)"
                )
            if self.stemob.seed is None:
                raise StemobError("stemob_draws > 1 needs a seeded inversion (stemob.seed)")
            if not self.stemob.noisy:
                raise StemobError(
                    f"stemob_draws > 1: {self.stemob.mode} inversion with k = "
                    f"{self.stemob.inversion_steps} draws no noise (every draw is the same frame)"
                )
            if not self.in_memory:
                raise StemobError(
                    "stemob_draws > 1 needs in_memory=True (the draws are held in memory)"
                )
        self.key_map = dict(self.key_map or {})
        if len(set(self.key_map.values())) != len(self.key_map):
            raise StemobError(f"key_map {self.key_map} maps two keys to the same name")
        if self.obs_keys is not None:
            self.obs_keys = list(self.obs_keys)


class _LazyFile:
    """An HDF5 handle opened on first use in each process (safe across DataLoader forks)."""

    def __init__(self, path: Path) -> None:
        self.path, self._h5, self._pid = path, None, -1

    def get(self) -> Any:
        if self._h5 is None or self._pid != os.getpid():
            from stemob.data.robomimic import open_hdf5

            self._h5, self._pid = open_hdf5(self.path), os.getpid()
        return self._h5

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_h5": None, "_pid": -1}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


class DemoDataset(torch.utils.data.Dataset):
    """Training samples from any supported demonstration format (see :class:`DatasetConfig`).

    ``dataset[i]`` is one sample; ``dataset[[i, j, ...]]`` (or ``get_batch``) a whole batch built
    with one vectorised gather, which is what :meth:`loader` uses. ``stats`` / ``normalizer`` hold
    the statistics of the training episodes; ``validation()`` shares the loaded arrays.
    """

    def __init__(self, config: DatasetConfig, split: str = "train") -> None:
        if split not in ("train", "val", "all"):
            raise StemobError(f"split must be 'train', 'val' or 'all', got {split!r}")
        self.config = config
        self.reader = open_reader(config.path, config.reader, **config.reader_kwargs)
        self.episode_names: list[str] = self.reader.names
        if not self.episode_names:
            raise StemobError(f"{config.path} holds no episodes")
        self.lengths = np.asarray(self.reader.lengths(), dtype=np.int64)
        self.train_episodes, self.val_episodes = split_episodes(
            len(self.lengths), config.val_ratio, config.seed
        )
        self.env_args = getattr(self.reader, "env_args", None)
        self.fps = getattr(self.reader, "fps", None)
        self._inverter: Any = None
        self._inverter_pid = -1
        self._load()
        self.split = split
        chosen = {
            "train": self.train_episodes,
            "val": self.val_episodes,
            "all": list(range(len(self.lengths))),
        }[split]
        self.sampler = SequenceSampler(self.lengths, config.n_obs_steps, config.horizon, chosen)
        self.draws = config.stemob_draws if split != "val" else 1
        self.stats = self._compute_stats(self.train_episodes or list(range(len(self.lengths))))
        self.normalizer = Normalizer(self.stats)

    # ------------------------------------------------------------------ loading
    def _episode_number(self, index: int) -> int:
        match = _NUMBER.search(self.episode_names[index])
        return int(match.group(1)) if match else index

    def _select(self, episode: Episode) -> Episode:
        rename_keys(episode, {k: v for k, v in self.config.key_map.items() if k in episode.obs})
        keys = self.config.obs_keys if self.config.obs_keys is not None else sorted(episode.obs)
        missing = [k for k in keys if k not in episode.obs]
        if missing:
            raise StemobError(
                f"{episode.where(missing[0])}: observation key is missing "
                f"(the episode has {sorted(episode.obs)} after key_map)"
            )
        episode.obs = {k: episode.obs[k] for k in keys}
        if not episode.obs:
            raise StemobError(f"{episode.source}: episode {episode.name!r} has no observation keys")
        return episode

    def _load(self) -> None:
        cfg = self.config
        inverse = {dst: src for src, dst in cfg.key_map.items()}
        is_h5 = self.reader.format == "robomimic"
        if is_h5 and cfg.obs_keys is not None:
            self.reader.obs_keys = [inverse.get(k, k) for k in cfg.obs_keys]
        first = self._select(self.reader.read(0))
        self.obs_keys = list(first.obs)
        self.image_keys = [k for k in self.obs_keys if is_image(first.obs[k])]
        self.lowdim_keys = [k for k in self.obs_keys if k not in self.image_keys]
        self.source_keys = {k: inverse.get(k, k) for k in self.obs_keys}
        self.stemob_keys: list[str] = []
        self.latent_keys: list[str] = []
        if cfg.stemob is not None:
            self.stemob_keys = (
                list(cfg.stemob_keys) if cfg.stemob_keys is not None else list(self.image_keys)
            )
            bad = [k for k in self.stemob_keys if k not in self.image_keys]
            if bad:
                raise StemobError(f"stemob_keys {bad} are not image keys (have {self.image_keys})")
        use_cache = cfg.stemob is not None and cfg.stemob_source == "cache"
        if not cfg.in_memory and not is_h5:
            raise StemobError(
                f"in_memory=False needs a robomimic HDF5 dataset, but {cfg.path} is "
                f"{self.reader.format}: convert it first (`stemob-data convert {cfg.path} "
                "demos.hdf5`)"
            )
        self.cache_path: Path | None = None
        self._image_files: dict[str, _LazyFile] = {}
        # the groups of the episodes in the image files: the HDF5's own, demo_<i> in the cache of
        # any other format (stemob.data.frames)
        self._file_names = list(self.episode_names)
        if is_h5:
            source = _LazyFile(Path(cfg.path))
            self._image_files = {k: source for k in self.image_keys}
        if use_cache:
            from stemob.inversion.dataset_cache import find_cache, read_cache_record

            frames = None
            if not is_h5:
                from stemob.data.frames import frame_source

                frames = frame_source(cfg.path, self.reader.format, **cfg.reader_kwargs)
                self._file_names = [f"demo_{i}" for i in range(len(self.episode_names))]
            self.cache_path = find_cache(
                cfg.path, cfg.stemob, cfg.cache_dir, latents=cfg.stemob_latents, frames=frames
            )
            cached = read_cache_record(self.cache_path)["keys"]
            for key in self.stemob_keys:
                if self.source_keys[key] not in cached:
                    raise StemobError(
                        f"{self.cache_path}: key {self.source_keys[key]!r} was not inverted "
                        f"(the cache holds {cached}); rebuild it with --keys"
                    )
                self._image_files[key] = _LazyFile(self.cache_path)
            if cfg.stemob_latents:
                self.latent_keys = list(self.stemob_keys)
                self.image_keys = [k for k in self.image_keys if k not in self.latent_keys]
        if is_h5:
            # images come from the files below; the reader loads low-dim keys and actions only
            self.reader.obs_keys = [self.source_keys[k] for k in self.lowdim_keys]
        total = int(self.lengths.sum())
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.arrays: dict[str, np.ndarray] = {}
        self.action = np.empty((total, first.actions.shape[1]), np.float32)
        for key in self.lowdim_keys:
            self.arrays[key] = np.empty((total, *first.obs[key].shape[1:]), np.float32)
        for key in self.latent_keys:  # small: always in memory, as float16 like the cache
            self.arrays[key] = np.empty(
                (total, *self._latent_dataset(0, key).shape[1:]), np.float16
            )
        self.image_shapes = {k: first.obs[k].shape[1:] for k in self.image_keys}
        if cfg.in_memory:
            for key in self.image_keys:
                h, w, c = self.image_shapes[key]
                rows = total * (cfg.stemob_draws if key in self.stemob_keys else 1)
                self.arrays[key] = np.empty((rows, c, h, w), np.uint8)
        sources: dict[str, int] = {}
        for index in range(len(self.lengths)):
            episode = first if index == 0 and not is_h5 else self._select_lowdim(index)
            self._fill(index, episode)
            if "action_source" in episode.attrs:
                source = str(episode.attrs["action_source"])
                sources[source] = sources.get(source, 0) + 1
        del first
        self._load_draws()
        self.action_sources = sources
        """``{where the actions came from: episodes}`` for readers that say (RLBench)."""
        for source, count in sources.items():
            print(f"{cfg.path}: actions of {count} episode(s): {source}")

    def _load_draws(self) -> None:
        """Noise draws 1..M-1 of the Stem-OB keys (draw 0 is loaded like any cache), each from its
        own verified cache, into rows ``m * total + flat index`` of the keys' arrays."""
        cfg = self.config
        if cfg.stemob_draws == 1:
            return
        from stemob.inversion.dataset_cache import find_cache, read_cache_record

        frames = None
        if self.reader.format != "robomimic":
            from stemob.data.frames import frame_source

            frames = frame_source(cfg.path, self.reader.format, **cfg.reader_kwargs)
        total = int(self.lengths.sum())
        self.draw_cache_paths = [self.cache_path]
        for draw in range(1, cfg.stemob_draws):
            try:
                path = find_cache(cfg.path, cfg.stemob.draw(draw), cfg.cache_dir, frames=frames)
            except StemobError as error:
                raise StemobError(
                    f"noise draw {draw} of stemob_draws={cfg.stemob_draws} (stemob.seed "
                    f"{cfg.stemob.draw(draw).seed}): {error}"
                ) from error
            self.draw_cache_paths.append(path)
            cached = read_cache_record(path)["keys"]
            missing = [k for k in self.stemob_keys if self.source_keys[k] not in cached]
            if missing:
                raise StemobError(f"{path}: key(s) {missing} were not inverted (the cache holds "
                                  f"{cached}); rebuild it with --keys")  # fmt: skip
            lazy = _LazyFile(path)
            for key in self.stemob_keys:
                for index in range(len(self.lengths)):
                    start = draw * total + int(self.offsets[index])
                    dataset = self._image_dataset(index, key, lazy)
                    images = self._read(dataset, index, key, lazy.path)
                    self.arrays[key][start : start + len(images)] = images.transpose(0, 3, 1, 2)
            lazy.close()

    def _select_lowdim(self, index: int) -> Episode:
        episode = self.reader.read(index)
        if self.reader.format == "robomimic":  # images are read from the file by _fill
            rename_keys(episode, {k: v for k, v in self.config.key_map.items() if k in episode.obs})
            return episode
        return self._select(episode)

    def _fill(self, index: int, episode: Episode) -> None:
        start, length = int(self.offsets[index]), int(self.lengths[index])
        rows = slice(start, start + length)
        if len(episode) != length:
            raise StemobError(
                f"{episode.where('actions')}: {len(episode)} steps, expected {length}"
            )
        if episode.actions.shape[1:] != self.action.shape[1:]:
            raise StemobError(
                f"{episode.where('actions')}: shape {episode.actions.shape[1:]} differs from the "
                f"first episode's {self.action.shape[1:]}"
            )
        self.action[rows] = episode.actions
        for key in self.lowdim_keys:
            value = episode.obs[key]
            if value.shape[1:] != self.arrays[key].shape[1:]:
                raise StemobError(
                    f"{episode.where(key)}: shape {value.shape[1:]} differs from the first "
                    f"episode's {self.arrays[key].shape[1:]}"
                )
            self.arrays[key][rows] = value
        for key in self.image_keys:
            if self.config.in_memory:
                value = self._episode_images(index, key, episode)
                self.arrays[key][rows] = value.transpose(0, 3, 1, 2)
            elif key in self._image_files:
                self._image_dataset(index, key)  # validate now, read later
        for key in self.latent_keys:
            self.arrays[key][rows] = self._read(self._latent_dataset(index, key), index, key)

    def _image_dataset(self, index: int, key: str, lazy: _LazyFile | None = None) -> Any:
        lazy = lazy or self._image_files[key]
        name, src = self._file_names[index], self.source_keys[key]
        h5 = lazy.get()
        try:
            dataset = h5["data"][name]["obs"][src]
        except KeyError as error:
            raise StemobError(f"{lazy.path}: episode {name!r}, key {src!r} is missing") from error
        expected = (int(self.lengths[index]), *self.image_shapes[key])
        if dataset.dtype != np.uint8 or tuple(dataset.shape) != expected:
            raise StemobError(
                f"{lazy.path}: episode {name!r}, key {src!r}: images are {dataset.dtype} "
                f"{dataset.shape}, expected uint8 {expected}"
            )
        return dataset

    def _latent_dataset(self, index: int, key: str) -> Any:
        name, src = self._file_names[index], self.source_keys[key]
        path = self._image_files[key].path
        try:
            dataset = self._image_files[key].get()["data"][name]["latents"][src]
        except KeyError as error:
            raise StemobError(
                f"{path}: episode {name!r}, latents of {src!r} are missing"
            ) from error
        length = int(self.lengths[index])
        known = self.arrays[key].shape[1:] if key in self.arrays else None  # episode 0's (C, h, w)
        if (
            dataset.ndim != 4
            or dataset.shape[0] != length
            or known not in (None, dataset.shape[1:])
        ):
            raise StemobError(
                f"{path}: episode {name!r}, latents of {src!r} have shape {dataset.shape}, "
                f"expected ({length}, {', '.join(map(str, known)) if known else 'C, h, w'})"
            )
        return dataset

    def _read(self, dataset: Any, index: int, key: str, path: Path | None = None) -> np.ndarray:
        """All of an HDF5 dataset of episode ``index`` (in ``path``, default the key's file), with
        a clear error when it is corrupt."""
        try:
            return dataset[()]
        except (OSError, ValueError) as error:
            raise StemobError(
                f"{path or self._image_files[key].path}: episode {self.episode_names[index]!r}, key "
                f"{self.source_keys[key]!r} cannot be read (corrupt?): {error}"
            ) from error

    def _episode_images(self, index: int, key: str, episode: Episode) -> np.ndarray:
        if key in self._image_files:
            return self._read(self._image_dataset(index, key), index, key)
        value = episode.obs[key]
        expected = (len(episode), *self.image_shapes[key])
        if value.shape != expected:
            raise StemobError(
                f"{episode.where(key)}: images are {value.shape}, expected {expected} "
                "(every episode needs the same image size)"
            )
        return value

    # ------------------------------------------------------------------ statistics
    def _compute_stats(self, episodes: Sequence[int]) -> dict[str, KeyStats]:
        rows = np.concatenate(
            [np.arange(self.offsets[e], self.offsets[e] + self.lengths[e]) for e in episodes]
        )
        stats = {"action": key_stats(self.action[rows])}
        for key in self.lowdim_keys:
            stats[key] = key_stats(self.arrays[key][rows])
        for key in self.latent_keys:
            stats[key] = channel_stats(self.arrays[key][rows])
        if self.config.image_stats:
            for key in self.image_keys:
                if self.config.in_memory:
                    sample = rows
                else:  # lazy: an evenly spaced subsample of frames
                    sample = rows[np.linspace(0, len(rows) - 1, min(len(rows), 512)).astype(int)]
                if self.config.in_memory and len(sample) == len(self.arrays[key]):
                    images = self.arrays[key]  # every frame: no copy
                else:
                    images = self._gather_images(key, sample[:, None])[:, 0]
                stats[key] = image_stats(images, channel_axis=1)
        return stats

    # ------------------------------------------------------------------ sampling
    def __len__(self) -> int:
        return len(self.sampler) * self.draws

    def validation(self) -> DemoDataset:
        """The validation split, sharing this dataset's arrays and statistics."""
        other = copy.copy(self)
        other.split, other.draws = "val", 1
        other.sampler = SequenceSampler(
            self.lengths, self.config.n_obs_steps, self.config.horizon, self.val_episodes
        )
        return other

    def _gather_images(self, key: str, index: np.ndarray) -> np.ndarray:
        """uint8 ``(*index.shape, 3, H, W)`` frames at flat indices ``index`` (B, T)."""
        if self.config.in_memory:
            return self.arrays[key][index]
        h, w, c = self.image_shapes[key]
        out = np.empty((*index.shape, c, h, w), np.uint8)
        episode = np.searchsorted(self.offsets, index[:, 0], side="right") - 1
        for b in range(index.shape[0]):
            e = int(episode[b])
            local = index[b] - self.offsets[e]
            lo, hi = int(local.min()), int(local.max()) + 1
            frames = self._image_dataset(e, key)[lo:hi]
            out[b] = frames[local - lo].transpose(0, 3, 1, 2)
        return out

    def _invert_online(self, key: str, images: np.ndarray, windows: Any) -> np.ndarray:
        if self._inverter is None or self._inverter_pid != os.getpid():
            import dataclasses

            from stemob.inversion.inverter import Inverter

            settings = dataclasses.replace(self.config.stemob, seed=None)  # fresh noise per draw
            self._inverter = Inverter(settings, device=self.config.inversion_device)
            self._inverter_pid = os.getpid()
        b, t, c, h, w = images.shape
        camera = self.source_keys[key]
        ids = [
            (self._episode_number(int(e)), int(step), camera)
            for e, steps in zip(windows.episode, windows.obs_step, strict=True)
            for step in steps
        ]
        flat = np.ascontiguousarray(images.reshape(b * t, c, h, w).transpose(0, 2, 3, 1))
        with torch.no_grad():
            inverted = self._inverter.invert(flat, ids)
        return np.ascontiguousarray(np.asarray(inverted).transpose(0, 3, 1, 2)).reshape(
            images.shape
        )

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """A collated batch of samples ``indices`` (one vectorised gather per key)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        windows = self.sampler.windows(indices % len(self.sampler))
        draw_rows = (indices // len(self.sampler))[:, None] * int(self.lengths.sum())
        obs: dict[str, torch.Tensor] = {}
        online = self.config.stemob is not None and self.config.stemob_source == "online"
        for key in self.obs_keys:
            if key in self.image_keys:
                drawn = self.draws > 1 and key in self.stemob_keys
                rows = windows.obs_index + draw_rows if drawn else windows.obs_index
                images = self._gather_images(key, rows)
                if online and key in self.stemob_keys:
                    images = self._invert_online(key, images, windows)
                obs[key] = torch.from_numpy(images)
            elif key in self.latent_keys:
                obs[key] = torch.from_numpy(self.arrays[key][windows.obs_index]).float()
            else:
                obs[key] = torch.from_numpy(self.arrays[key][windows.obs_index])
        return {
            "obs": obs,
            "action": torch.from_numpy(self.action[windows.action_index]),
            "action_is_pad": torch.from_numpy(windows.action_is_pad),
        }

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        if isinstance(index, (int, np.integer)):
            batch = self.get_batch([int(index)])
            return {
                "obs": {k: v[0] for k, v in batch["obs"].items()},
                "action": batch["action"][0],
                "action_is_pad": batch["action_is_pad"][0],
            }
        return self.get_batch(index)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch for torch's default DataLoader path (samples are views of one batch)."""
        batch = self.get_batch(indices)
        return [
            {
                "obs": {k: v[i] for k, v in batch["obs"].items()},
                "action": batch["action"][i],
                "action_is_pad": batch["action_is_pad"][i],
            }
            for i in range(len(indices))
        ]

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        num_workers: int = 0,
        drop_last: bool = True,
        seed: int | None = None,
        **kwargs: Any,
    ) -> torch.utils.data.DataLoader:
        """A DataLoader that fetches whole batches (no per-sample collation)."""
        from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        base = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        return torch.utils.data.DataLoader(
            self,
            sampler=BatchSampler(base, batch_size, drop_last),
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            **kwargs,
        )

    @property
    def shape_meta(self) -> dict[str, Any]:
        """Keys, shapes and types the policy is built from."""
        obs = {}
        for key in self.obs_keys:
            if key in self.image_keys:
                h, w, c = self.image_shapes[key]
                obs[key] = {"shape": [c, h, w], "type": "rgb"}
            elif key in self.latent_keys:
                obs[key] = {"shape": list(self.arrays[key].shape[1:]), "type": "latent"}
            else:
                obs[key] = {"shape": list(self.arrays[key].shape[1:]), "type": "low_dim"}
        return {"obs": obs, "action": {"shape": list(self.action.shape[1:])}}
