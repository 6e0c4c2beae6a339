"""Look at a GENIMA dataset: a figure of a few frames and a video of one episode.

Each row (or video frame) is ``observation | target | controller input``: the tiled cameras, the
same with the spheres drawn (the diffusion agent's target), and the controller's views (spheres on
random backgrounds). ``stemob-genima-dataset --dataset D --figure F.png --video V.mp4``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemob.errors import StemobError

GAP = 4
"""White pixels between the panels."""


def _cameras(obs: Any) -> list[str]:
    return sorted(k for k in obs if k.endswith("_target") and k != "tiled_target")


def _row(obs: Any, t: int, cameras: Sequence[str]) -> np.ndarray:
    """``observation | target | controller input`` of frame ``t`` (one image)."""
    panels = [obs["tiled_rgb"][t], obs["tiled_target"][t]]
    panels.append(np.concatenate([obs[c][t] for c in cameras], axis=1))
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, GAP, 3), 255, np.uint8)
    out = []
    for panel in panels:
        pad = np.full((height - panel.shape[0], panel.shape[1], 3), 255, np.uint8)
        out += [np.concatenate([panel, pad], 0), gap]
    return np.concatenate(out[:-1], axis=1)


def _open_demo(path: str | Path, demo: int) -> tuple[Any, Any]:
    import h5py

    h5 = h5py.File(path, "r")
    name = f"data/demo_{demo}"
    if name not in h5 or "tiled_target" not in h5[name].get("obs", {}):
        h5.close()
        raise StemobError(f"{path}: no GENIMA demo {name!r} (build it with stemob-genima-dataset)")
    return h5, h5[name]["obs"]


def write_figure(
    path: str | Path, out: str | Path, demo: int = 0, frames: int = 4, scale: int = 2
) -> Path:
    """A PNG of ``frames`` evenly spaced frames of ``demo`` (rows), each panel upscaled."""
    from PIL import Image

    h5, obs = _open_demo(path, demo)
    with h5:
        cameras = _cameras(obs)
        length = len(obs["tiled_rgb"])
        times = np.linspace(0, length - 1, min(frames, length)).round().astype(int)
        rows = [_row(obs, int(t), cameras) for t in times]
    gap = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    image = np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)
    image = image.repeat(scale, 0).repeat(scale, 1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out)
    return out


def write_video(path: str | Path, out: str | Path, demo: int = 0, fps: float = 10.0) -> Path:
    """An mp4 of every frame of ``demo`` (the figure's row layout, upscaled 2x)."""
    from stemob.data.video import write_video as encode

    h5, obs = _open_demo(path, demo)
    with h5:
        cameras = _cameras(obs)
        frames = np.stack([_row(obs, t, cameras) for t in range(len(obs["tiled_rgb"]))])
    frames = frames.repeat(2, 1).repeat(2, 2)
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # even sides
    return encode(out, frames, fps, crf=18)
