"""A complete inverted copy of a dataset, in the source's own format (``stemob-invert-dataset
--export OUT``), so that the format's own tools train on Stem-OB frames.

- robomimic HDF5: a copy of the file with every inverted ``obs/<key>`` (and ``next_obs/<key>``)
  replaced; actions, states, masks, env_args and every other key stay as they were (robomimic and
  diffusion_policy read it like the source).
- RLBench episode folders: a copy of the tree with the inverted cameras' PNGs replaced
  (``low_dim_obs.pkl``, depth, descriptions untouched).
- LeRobot (v2.1 or v3.0 source): a LeRobot v3.0 dataset written from what stemob's reader reads
  (``action``, the state features, the cameras, the task), cameras re-encoded as H.264 in
  yuv444p at ``crf`` 0 by default (4:2:0 chroma loses 45 uint8 levels on average on noisy
  inverted frames, 4:4:4 at crf 0 under 0.5 with at most 2: the RGB <-> YUV rounding; measured
  in BENCHMARKS.md) and ``meta/stats.json`` recomputed; features the reader does not expose
  are not carried.
- episode folders: rewritten with :func:`stemob.data.folder.write_folder` (PNG frames).

The Stem-OB settings, the model and source fingerprints and the source path go into the output's
metadata (robomimic: the root attribute ``stemob``; LeRobot: ``meta/stemob.json``; folders:
``stemob.json``). The output is written beside its final name and renamed when complete; an
existing output is refused and the source is only read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from stemob.data.detect import detect_format, open_reader
from stemob.errors import StemobError
from stemob.inversion.dataset_cache import read_cache_record

STEMOB_META = "stemob.json"


def _tmp_of(out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.export-tmp")
    if tmp.is_dir():  # a killed export: our own scratch, never the user's data
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    return tmp


def export_inverted(
    source: str | Path,
    cache: str | Path,
    out: str | Path,
    *,
    reader: str = "auto",
    crf: int = 0,
    pix_fmt: str = "yuv444p",
    progress: bool = True,
) -> Path:
    """Write ``out``: ``source`` with the frames of its Stem-OB ``cache`` (see the module doc)."""
    source, cache, out = Path(source), Path(cache), Path(out)
    if out.exists():
        raise StemobError(f"{out} already exists: choose another --export path or remove it")
    if out.resolve() == source.resolve():
        raise StemobError(f"--export {out} is the source itself")
    record = read_cache_record(cache)
    meta = {**record, "source": str(source.resolve()), "cache": str(cache.resolve())}
    fmt = detect_format(source) if reader == "auto" else reader
    if fmt not in ("robomimic", "rlbench", "lerobot", "folder"):
        raise StemobError(f"--export: unknown format {fmt!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_of(out)  # each writer fills it; renamed only when complete
    if fmt == "robomimic":
        _export_hdf5(source, cache, tmp, record, meta)
    elif fmt == "rlbench":
        _export_rlbench(source, cache, tmp, record, meta, progress)
    elif fmt == "lerobot":
        _export_lerobot(source, cache, tmp, record, meta, crf, pix_fmt)
    else:
        _export_folder(source, cache, tmp, record, meta)
    os.replace(tmp, out)
    return out


def _cached(cache: Any, demo: str, key: str) -> np.ndarray:
    try:
        return cache["data"][demo]["obs"][key][()]
    except KeyError as error:
        raise StemobError(f"the cache lacks data/{demo}/obs/{key}; rebuild it") from error


def _export_hdf5(
    source: Path, cache: Path, tmp: Path, record: dict[str, Any], meta: dict[str, Any]
) -> None:
    import h5py

    from stemob.inversion.inverter import Inverter
    from stemob.inversion.settings import InversionSettings

    shutil.copyfile(source, tmp)
    inverter: Inverter | None = None
    with (
        h5py.File(tmp, "r+") as h5,
        h5py.File(cache, "r") as inv,
        h5py.File(source, "r") as src,
    ):
        for demo in inv["data"]:
            group = h5["data"][demo]
            episode = int(demo.rsplit("_", 1)[-1]) if demo.rsplit("_", 1)[-1].isdigit() else 0
            for key in record["keys"]:
                frames = _cached(inv, demo, key)
                group["obs"][key][...] = frames
                if "next_obs" not in group or key not in group["next_obs"]:
                    continue
                nxt = group["next_obs"][key]
                raw_next, raw_obs = nxt[()], src["data"][demo]["obs"][key][()]
                if len(raw_obs) > 1 and not np.array_equal(raw_next[:-1], raw_obs[1:]):
                    raise StemobError(
                        f"{source}: data/{demo}/next_obs/{key} is not obs shifted by one step; "
                        "cannot export its inverted copy"
                    )
                if inverter is None:
                    inverter = Inverter(InversionSettings.from_dict(record["settings"]))
                    if inverter.model.fingerprint != record["model_fingerprint"]:
                        raise StemobError(
                            f"{cache} was made with another model than "
                            f"{record['settings']['pretrained']} now holds; rebuild the cache"
                        )
                last = inverter.invert(raw_next[-1:], [(episode, len(raw_next), key)])
                nxt[...] = np.concatenate([frames[1:], last])
        h5.attrs["stemob"] = json.dumps(meta, sort_keys=True)


def _export_rlbench(
    source: Path,
    cache: Path,
    tmp: Path,
    record: dict[str, Any],
    meta: dict[str, Any],
    progress: bool,
) -> None:
    import h5py
    from PIL import Image
    from tqdm import tqdm

    episodes = open_reader(source, "rlbench")
    root = source if source.is_dir() else source.parent
    shutil.copytree(root, tmp)
    with h5py.File(cache, "r") as inv:
        for index in tqdm(
            range(len(episodes)), desc="export", unit="episode", disable=not progress
        ):
            pkl = Path(episodes.read(index).source).resolve()
            folder = pkl.parent.relative_to(root.resolve())
            for key in record["keys"]:
                for step, frame in enumerate(_cached(inv, f"demo_{index}", key)):
                    Image.fromarray(frame).save(tmp / folder / key / f"{step}.png")
    (tmp / STEMOB_META).write_text(json.dumps(meta, indent=2))


def _inverted_episodes(episodes: Any, cache: Path, keys: list[str]) -> list[Any]:
    """Every episode of a reader, its inverted keys replaced by the cache's frames."""
    import h5py

    out = []
    with h5py.File(cache, "r") as inv:
        for index in range(len(episodes)):
            episode = episodes.read(index)
            for key in keys:
                episode.obs[key] = _cached(inv, f"demo_{index}", key)
            out.append(episode)
    return out


def _export_lerobot(
    source: Path,
    cache: Path,
    tmp: Path,
    record: dict[str, Any],
    meta: dict[str, Any],
    crf: int,
    pix_fmt: str,
) -> None:
    from stemob.data.lerobot import write_lerobot

    episodes = _inverted_episodes(open_reader(source, "lerobot"), cache, record["keys"])
    fps = float(episodes[0].attrs.get("fps") or 10.0)
    language = episodes[0].attrs.get("language") or ["task"]
    write_lerobot(tmp, episodes, fps=fps, version="v3.0", task=str(language[0]), crf=crf, pix_fmt=pix_fmt,
                  extra_meta={STEMOB_META: meta})  # fmt: skip


def _export_folder(
    source: Path, cache: Path, tmp: Path, record: dict[str, Any], meta: dict[str, Any]
) -> None:
    from stemob.data.folder import write_folder

    reader = open_reader(source, "folder")
    episodes = _inverted_episodes(reader, cache, record["keys"])
    write_folder(tmp, episodes, fps=getattr(reader, "fps", None),
                 env_args=getattr(reader, "env_args", None))  # fmt: skip
    (tmp / STEMOB_META).write_text(json.dumps(meta, indent=2))
