"""A picture of what the policy sees: original frames above their Stem-OB inversions."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def observation_grid(
    source: str | os.PathLike,
    out: str | os.PathLike,
    keys: list[str],
    cache: str | os.PathLike | None = None,
    frames: int = 4,
) -> Path:
    """Write a PNG: for each camera key, ``frames`` evenly spaced frames of the first demo, with
    the inverted frames of the Stem-OB ``cache`` (if given) in the row below."""
    rows = []
    with h5py.File(source, "r") as f:
        demo = sorted(f["data"].keys(), key=lambda n: int(n.split("_")[-1]))[0]
        length = f["data"][demo]["actions"].shape[0]
        picks = np.linspace(0, length - 1, frames).astype(int)
        for key in keys:
            rows.append(np.concatenate(f["data"][demo]["obs"][key][picks], axis=1))
            if cache is not None:
                with h5py.File(cache, "r") as c:
                    rows.append(np.concatenate(c["data"][demo]["obs"][key][picks], axis=1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
