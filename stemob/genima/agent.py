"""GENIMA's agent around a trained drawer: find a run's drawer, learn its views, paint targets.

A GENIMA run (``train.py policy=genima``) holds the controller's checkpoints like any run and the
diffusion agent in ``<run>/drawer`` (a ``stemob-genima-drawer`` run: ``latest/`` with the weights
and ``train_state.pt``). :class:`TargetPainter` is the step both the evaluation wrapper
(``stemob.evaluation.genima_drawn``) and the real-robot ``PolicyRunner`` take at every decision:
tile the camera images as the drawer's GENIMA dataset did, draw the target spheres on them, and
hand each view back as ``<cam>_target``; with ``background="texture"`` the spheres it finds in
each drawing (by colour, :func:`stemob.genima.spheres.sphere_mask`) are put on a random texture,
as in the controller's training inputs.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stemob.errors import StemobError
from stemob.genima.targets import tile, untile

DRAWER_DIR = "drawer"
"""Where a GENIMA run keeps its diffusion agent (beside ``checkpoints/``)."""


def drawer_checkpoint(path: str | Path) -> Path:
    """The drawer folder of a ``stemob-genima-drawer`` run (its ``latest/``) or the folder itself."""
    path = Path(path)
    return path / "latest" if (path / "latest").is_dir() else path


def run_drawer(checkpoint: str | Path) -> Path | None:
    """The drawer run of the GENIMA run that ``checkpoint`` belongs to (a run directory, its
    ``checkpoints/best``, a step folder or its ``policy/``), or ``None`` for other runs. Only the
    run's own folder is searched; a drawer whose stage has not finished is used with a warning."""
    path = Path(checkpoint).resolve()
    for folder in [path, *list(path.parents)[:3]]:
        if not (folder / "checkpoints").is_dir():
            continue  # not the run's root yet
        drawer = folder / DRAWER_DIR
        if not (drawer / "latest" / "train_state.pt").is_file():
            return None
        summary = folder / "summary.json"
        if not (summary.is_file() and "drawer" in json.loads(summary.read_text())):
            warnings.warn(
                f"{drawer}: this GENIMA run's drawer stage has not finished (summary.json names "
                "no drawer); its newest saved drawer is used",
                stacklevel=2,
            )
        return drawer
    return None


def dataset_layout(dataset: str | Path) -> dict[str, Any]:
    """``{cameras, grid, horizon}`` of a GENIMA dataset: the views in tile order, the tile grid
    and the targets' horizon (recorded with a drawer at training time)."""
    import h5py

    with h5py.File(dataset, "r") as h5:
        config = json.loads(h5["data"].attrs["genima"])["config"]
        first = next(iter(h5["data"].values()))["obs"]
        cameras = config.get("cameras") or sorted(
            k[: -len("_target")] for k in first if k.endswith("_target") and k != "tiled_target"
        )
    grid = list(config["grid"]) if config.get("grid") else [1, len(cameras)]
    return {"cameras": list(cameras), "grid": grid, "horizon": config.get("horizon")}


def drawer_layout(drawer_dir: str | Path) -> tuple[list[str], tuple[int, int]]:
    """The cameras (tile order) and grid of the GENIMA dataset a drawer was trained on (recorded
    in its ``train_state.pt``; drawers trained before that read them from the dataset)."""
    import torch

    folder = Path(drawer_dir)
    folder = folder.parent if folder.name == "latest" else folder
    state_path = folder / "latest" / "train_state.pt"
    if not state_path.is_file():
        raise StemobError(f"{drawer_dir}: no latest/train_state.pt (a stemob-genima-drawer run)")
    state = torch.load(state_path, weights_only=True)
    layout = state.get("layout")
    if layout is None:
        dataset = Path(state["settings"]["dataset"])
        if not dataset.is_file():
            raise StemobError(
                f"{drawer_dir} was trained on {dataset}, which is gone (its views are read there)"
            )
        layout = dataset_layout(dataset)
    return list(layout["cameras"]), tuple(layout["grid"])


def drawing_seed(episode: int, drawing: int) -> int:
    """The noise seed of an episode's ``drawing``-th drawing (the same per episode seed and
    drawing in evaluation and on a robot)."""
    return 1000 * int(episode) + int(drawing)


class TargetPainter:
    """Draws ``<cam>_target`` from ``<cam>_image`` with a trained drawer; ``drawing_ms`` collects
    the time of each drawing."""

    def __init__(
        self,
        drawer: Any,
        cameras: list[str],
        grid: tuple[int, int],
        seed: int = 0,
        background: str = "scene",
    ) -> None:
        from stemob.genima.dataset import check_background

        self.drawer, self.cameras, self.grid, self.seed = (
            drawer,
            list(cameras),
            tuple(grid),
            int(seed),
        )
        self.background = check_background(background, "genima_agent.background")
        self.drawing_ms: list[float] = []

    @classmethod
    def load(
        cls, drawer_dir: str | Path, seed: int = 0, background: str = "scene"
    ) -> TargetPainter:
        """The painter of a ``stemob-genima-drawer`` run folder (in eval mode)."""
        from stemob.genima.drawer import TargetDrawer

        cameras, grid = drawer_layout(drawer_dir)
        drawer = TargetDrawer.load(drawer_checkpoint(drawer_dir))
        drawer.denoiser.eval()
        return cls(drawer, cameras, grid, seed, background)

    @property
    def image_keys(self) -> list[str]:
        return [f"{c}_image" for c in self.cameras]

    def paint(self, images: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
        """``{<cam>_target: uint8 (H, W, 3)}`` drawn on ``images[<cam>_image]`` (one drawing of
        the tiled views; ``seed`` offsets the drawer's noise)."""
        missing = [k for k in self.image_keys if k not in images]
        if missing:
            raise StemobError(
                f"GENIMA: the drawer was trained on camera(s) {missing}, which the observation "
                f"lacks (it has {sorted(images)})"
            )
        tiled = tile([np.asarray(images[k]) for k in self.image_keys], self.grid)
        started = time.perf_counter()
        drawn = self.drawer.draw(tiled[None], seed=self.seed + int(seed))[0]
        self.drawing_ms.append(1000 * (time.perf_counter() - started))
        views = untile(drawn, len(self.cameras), self.grid)
        if self.background == "texture":
            from stemob.genima.dataset import on_random_texture
            from stemob.genima.spheres import sphere_mask

            views = [
                on_random_texture(v, sphere_mask(v, images[key]), self.seed + seed, view=i)
                for i, (v, key) in enumerate(zip(views, self.image_keys, strict=True))
            ]
        return {f"{c}_target": v for c, v in zip(self.cameras, views, strict=True)}
