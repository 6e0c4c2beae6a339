"""The Stem-OB dataset cache: every image key of a dataset, inverted once.

The frames come from a :class:`FrameSource`: :class:`HDF5Frames` reads robomimic-layout HDF5
itself; ``stemob.data.frames.ReaderFrames`` serves every other format stemob reads (LeRobot,
RLBench episode folders, real-robot folders) through its reader, with ``demo_<i>`` names.

The cache lives beside the dataset (or in ``cache_dir``) as ``<stem>.stemob-<settings digest>.hdf5``,
so caches for several settings coexist (a sweep over k). It keeps the source's layout,
``data/<demo>/obs/<key>`` with uint8 (T, H, W, 3) images (optionally ``data/<demo>/latents/<key>``),
and records in its root attrs the format version, the settings, the model's fingerprint and the
source's fingerprint. A cache whose record differs from a request is never reused silently.

Building is resumable and shardable: the frames are cut into fixed units (``demo, key, frame range``);
each finished unit is written to its own file in ``<cache>.parts/`` (temp file, then rename), so a
killed run loses at most the units in flight and a resumed run skips finished ones. Under
``accelerate launch`` every process inverts its share of the units; the main process then merges
the parts into the cache file (temp file, then rename) and removes the parts. Each frame's noise is
seeded by (seed, episode, step, camera), so the noise does not depend on batching or sharding
(the convolution arithmetic may differ by one uint8 level with the batch size on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stemob.errors import CacheMismatchError, StemobError
from stemob.inversion.settings import InversionSettings

FORMAT_VERSION = 1
UNIT_FRAMES = 128
_DEMO_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Unit:
    """A slice of frames of one demo and image key: the grain of resuming and sharding."""

    demo: str
    episode: int
    key: str
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.demo}__{self.key}__{self.start:07d}"


@dataclass(frozen=True)
class SourceLayout:
    """What a cache depends on in its source: demos (in order), image keys and their shapes."""

    demos: tuple[str, ...]
    keys: tuple[str, ...]
    shapes: dict[tuple[str, str], tuple[int, ...]]
    num_samples: dict[str, int]

    def fingerprint(self) -> str:
        items = [
            [demo, key, list(self.shapes[demo, key])] for demo in self.demos for key in self.keys
        ]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]

    def units(self, unit_frames: int) -> list[Unit]:
        out = []
        for index, demo in enumerate(self.demos):
            match = _DEMO_NUMBER.search(demo)
            episode = int(match.group(1)) if match else index
            for key in self.keys:
                length = self.shapes[demo, key][0]
                out += [
                    Unit(demo, episode, key, s, min(s + unit_frames, length))
                    for s in range(0, length, unit_frames)
                ]
        return out


def _open_h5(path: Path, mode: str = "r"):
    import h5py

    try:
        return h5py.File(path, mode)
    except (OSError, ValueError) as error:
        raise StemobError(f"cannot open HDF5 file {path}: {error}") from error


def _is_image(dataset: Any) -> bool:
    return dataset.ndim == 4 and dataset.shape[-1] == 3 and dataset.dtype == np.uint8


class FrameSource(Protocol):
    """Where a cache's frames come from: a layout, and frames by (demo, key, range)."""

    path: Path

    def layout(self, keys: list[str] | None = None) -> SourceLayout:
        """The demos (in order), image keys (default: every uint8 (T, H, W, 3) key) and shapes."""
        ...

    def frames(self, demo: str, key: str, start: int, stop: int) -> np.ndarray:
        """uint8 ``(stop - start, H, W, 3)`` frames of one demo and key."""
        ...

    def close(self) -> None:
        """Release open files."""
        ...


class HDF5Frames:
    """The frames of a robomimic-layout HDF5 file (``data/<demo>/obs/<key>``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._h5: Any = None

    def layout(self, keys: list[str] | None = None) -> SourceLayout:
        return read_layout(self.path, keys)

    def frames(self, demo: str, key: str, start: int, stop: int) -> np.ndarray:
        if self._h5 is None:
            self._h5 = _open_h5(self.path)
        return self._h5["data"][demo]["obs"][key][start:stop]

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None


def read_layout(source: Path, keys: list[str] | None = None) -> SourceLayout:
    """Read and validate the demos and image keys of a robomimic-layout HDF5 file."""
    if not source.is_file():
        raise StemobError(f"dataset {source} does not exist")
    with _open_h5(source) as h5:
        if "data" not in h5:
            raise StemobError(f"{source} has no 'data' group: not a robomimic-layout HDF5 file")
        demos = sorted(h5["data"].keys(), key=lambda n: (len(n), n))
        if not demos:
            raise StemobError(f"{source} holds no demos under data/")
        first = h5["data"][demos[0]]
        if "obs" not in first:
            raise StemobError(f"{source}: data/{demos[0]} has no 'obs' group")
        if keys is None:
            keys = sorted(k for k in first["obs"] if _is_image(first["obs"][k]))
            if not keys:
                raise StemobError(
                    f"{source}: data/{demos[0]}/obs has no uint8 (T, H, W, 3) image keys"
                )
        shapes, num_samples = {}, {}
        for demo in demos:
            group = h5["data"][demo]
            for key in keys:
                if "obs" not in group or key not in group["obs"]:
                    raise StemobError(f"{source}: data/{demo}/obs/{key} is missing")
                dataset = group["obs"][key]
                if not _is_image(dataset):
                    raise StemobError(
                        f"{source}: data/{demo}/obs/{key} is {dataset.dtype} {dataset.shape}; "
                        "expected uint8 (T, H, W, 3) images"
                    )
                shapes[demo, key] = tuple(dataset.shape)
            num_samples[demo] = int(group.attrs.get("num_samples", shapes[demo, keys[0]][0]))
    return SourceLayout(tuple(demos), tuple(keys), shapes, num_samples)


def _frames_of(source: Path, frames: FrameSource | None) -> FrameSource:
    return frames if frames is not None else HDF5Frames(source)


def cache_path(
    source: str | Path, settings: InversionSettings, cache_dir: str | Path | None = None
) -> Path:
    """Where the cache of ``source`` for ``settings`` lives (beside it, or in ``cache_dir``)."""
    source = Path(source)
    folder = Path(cache_dir) if cache_dir is not None else source.parent
    return folder / f"{source.stem}.stemob-{settings.digest()}.hdf5"


def read_cache_record(path: Path) -> dict[str, Any]:
    """The settings and fingerprints recorded in a cache file's attrs."""
    with _open_h5(path) as h5:
        attrs = dict(h5.attrs)
    if "stemob_format_version" not in attrs:
        raise StemobError(
            f"{path} is not a stemob inversion cache (no stemob_format_version attribute)"
        )
    return {
        "format_version": int(attrs["stemob_format_version"]),
        "settings": json.loads(attrs["settings"]),
        "source_fingerprint": str(attrs["source_fingerprint"]),
        "model_fingerprint": str(attrs["model_fingerprint"]),
        "keys": json.loads(attrs["keys"]),
        "has_latents": bool(attrs["has_latents"]),
    }


def verify_cache(
    path: Path,
    settings: InversionSettings,
    source_fingerprint: str | None = None,
    latents: bool = False,
) -> dict[str, Any]:
    """Check that the cache at ``path`` was made with ``settings`` (and from the same source, and
    with latents when ``latents``)."""
    record = read_cache_record(path)
    if record["format_version"] != FORMAT_VERSION:
        raise CacheMismatchError(
            f"{path} has cache format {record['format_version']}, this stemob writes {FORMAT_VERSION}; rebuild it"
        )
    if record["settings"] != settings.to_dict():
        differing = {
            k: (v, record["settings"].get(k))
            for k, v in settings.to_dict().items()
            if record["settings"].get(k) != v
        }
        detail = ", ".join(f"{k}: requested {a!r}, cached {b!r}" for k, (a, b) in differing.items())
        raise CacheMismatchError(f"{path} was made with other Stem-OB settings ({detail})")
    if source_fingerprint is not None and record["source_fingerprint"] != source_fingerprint:
        raise CacheMismatchError(
            f"{path} was made from a different version of its dataset (demos, keys or lengths changed); "
            "delete it to rebuild"
        )
    if latents and not record["has_latents"]:
        raise CacheMismatchError(
            f"{path} was built without latents, which are asked for: delete it to rebuild it with "
            "latents (--store_latents), or build the new cache in another cache_dir"
        )
    return record


def find_cache(
    source: str | Path,
    settings: InversionSettings,
    cache_dir: str | Path | None = None,
    latents: bool = False,
    frames: FrameSource | None = None,
) -> Path:
    """Path of the verified cache of ``source`` for ``settings`` (with latents when ``latents``);
    a clear error when there is none. ``frames``: the source's frames (default: HDF5)."""
    path = cache_path(source, settings, cache_dir)
    if not path.is_file():
        raise StemobError(
            f"no Stem-OB cache for {source} with these settings (expected {path}); build it with "
            f"`stemob-invert-dataset --dataset {source} ...`"
        )
    keys = read_cache_record(path)["keys"]  # the keys it was built for (--keys)
    layout = _frames_of(Path(source), frames).layout(list(keys))
    verify_cache(path, settings, layout.fingerprint(), latents)
    return path


def _writable_dir(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


def build_cache(
    source: str | Path,
    settings: InversionSettings,
    *,
    cache_dir: str | Path | None = None,
    keys: list[str] | None = None,
    store_latents: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str | None = None,
    progress: bool = True,
    frames: FrameSource | None = None,
) -> Path:
    """Build (or resume, or reuse) the Stem-OB cache of a dataset (``frames``: its frames; by
    default ``source`` is a robomimic-layout HDF5 file). The source is only read.

    Works in one process or under ``accelerate launch`` (each process inverts its share of the units;
    the main process merges). Returns the cache path.
    """
    from accelerate import PartialState

    source = Path(source)
    frames = _frames_of(source, frames)
    layout = frames.layout(keys)
    if cache_dir is None and not _writable_dir(source.parent):
        raise StemobError(f"cannot write beside {source} (folder is read-only): pass --cache_dir")
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    target = cache_path(source, settings, cache_dir)
    state = PartialState(cpu=device == "cpu")
    if target.exists():
        verify_cache(target, settings, layout.fingerprint(), store_latents)
        return target
    torch_device = state.device if device == "auto" else device
    if str(torch_device) == "cpu" and state.num_processes > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // state.num_processes))
    from stemob.inversion.inverter import Inverter

    inverter = Inverter(settings, device=torch_device, dtype=dtype)
    manifest = {
        "format_version": FORMAT_VERSION,
        "settings": settings.to_dict(),
        "source_fingerprint": layout.fingerprint(),
        "model_fingerprint": inverter.model.fingerprint,
        "keys": list(layout.keys),
        "store_latents": store_latents,
        "unit_frames": UNIT_FRAMES,
    }
    parts = target.with_name(target.name + ".parts")
    if state.is_main_process:
        _prepare_parts(parts, manifest)
    state.wait_for_everyone()
    units = layout.units(UNIT_FRAMES)
    mine = [u for i, u in enumerate(units) if i % state.num_processes == state.process_index]
    _invert_units(
        frames,
        mine,
        parts,
        inverter,
        store_latents,
        batch_size,
        progress and state.is_local_main_process,
    )
    state.wait_for_everyone()
    if state.is_main_process:
        _merge(source, layout, units, parts, target, manifest)
        shutil.rmtree(parts)
    state.wait_for_everyone()
    return target


def _prepare_parts(parts: Path, manifest: dict[str, Any]) -> None:
    """Create the parts folder, or keep it for resuming when it was made for the same job."""
    record = parts / "manifest.json"
    if record.is_file():
        try:
            previous = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == manifest:
            return
        shutil.rmtree(parts)  # our own temp data from another job: never reused
    parts.mkdir(parents=True, exist_ok=True)
    tmp = record.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, record)


def _invert_units(
    source: FrameSource,
    units: list[Unit],
    parts: Path,
    inverter: Any,
    store_latents: bool,
    batch_size: int,
    progress: bool,
) -> None:
    import h5py
    from tqdm import tqdm

    todo = [u for u in units if not (parts / f"{u.name}.h5").is_file()]
    total = sum(u.stop - u.start for u in units)
    done = total - sum(u.stop - u.start for u in todo)
    try:
        with tqdm(
            total=total, initial=done, desc=f"inverting {source.path.name}", unit="frame",
            disable=not progress,
        ) as bar:  # fmt: skip
            for unit in todo:
                frames = source.frames(unit.demo, unit.key, unit.start, unit.stop)
                images, latents = [], []
                for start in range(0, len(frames), batch_size):
                    batch = frames[start : start + batch_size]
                    ids = [
                        (unit.episode, unit.start + start + i, unit.key) for i in range(len(batch))
                    ]
                    if store_latents:
                        rgb, z = inverter.invert(batch, ids, output="both")
                        latents.append(z.half().numpy())
                    else:
                        rgb = inverter.invert(batch, ids)
                    images.append(rgb)
                    bar.update(len(batch))
                tmp = parts / f".{unit.name}.h5.tmp"
                with h5py.File(tmp, "w") as out:
                    out.create_dataset("images", data=np.concatenate(images))
                    if store_latents:
                        out.create_dataset("latents", data=np.concatenate(latents))
                os.replace(tmp, parts / f"{unit.name}.h5")
    finally:
        source.close()


def _merge(
    source: Path,
    layout: SourceLayout,
    units: list[Unit],
    parts: Path,
    target: Path,
    manifest: dict[str, Any],
) -> None:
    import h5py

    missing = [u.name for u in units if not (parts / f"{u.name}.h5").is_file()]
    if missing:
        raise StemobError(
            f"cache parts missing after inversion ({len(missing)}, e.g. {missing[0]}); rerun to resume"
        )
    tmp = target.with_name(f".{target.name}.tmp")
    with h5py.File(tmp, "w") as out:
        out.attrs["stemob_format_version"] = FORMAT_VERSION
        out.attrs["settings"] = json.dumps(manifest["settings"], sort_keys=True)
        out.attrs["source_fingerprint"] = manifest["source_fingerprint"]
        out.attrs["model_fingerprint"] = manifest["model_fingerprint"]
        out.attrs["keys"] = json.dumps(manifest["keys"])
        out.attrs["has_latents"] = manifest["store_latents"]
        out.attrs["source"] = str(source.resolve())
        data = out.create_group("data")
        for demo in layout.demos:
            group = data.create_group(demo)
            group.attrs["num_samples"] = layout.num_samples[demo]
            for key in layout.keys:
                shape = layout.shapes[demo, key]
                images = group.create_dataset(
                    f"obs/{key}", shape=shape, dtype=np.uint8, chunks=(1, *shape[1:])
                )
                latents = None
                for unit in (u for u in units if u.demo == demo and u.key == key):
                    with h5py.File(parts / f"{unit.name}.h5", "r") as part:
                        images[unit.start : unit.stop] = part["images"][:]
                        if manifest["store_latents"]:
                            if latents is None:
                                latents = group.create_dataset(
                                    f"latents/{key}",
                                    shape=(shape[0], *part["latents"].shape[1:]),
                                    dtype=np.float16,
                                )
                            latents[unit.start : unit.stop] = part["latents"][:]
    os.replace(tmp, target)
