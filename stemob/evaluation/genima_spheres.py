"""GENIMA's diffusion agent scored under each perturbation factor: the drawer's spheres against the
ground-truth targets of the held-out demos, re-recorded in perturbed envs.

For every factor the drawer's task env (its GENIMA dataset's ``env_args``) is reset with each
held-out demo's seed under the factor's perturbation and the scripted expert records the demo again
(:func:`envs.record.run_episode`); the GENIMA dataset builder then draws that episode's targets
exactly as it drew the dataset's (:func:`stemob.genima.dataset.build_episode`, the dataset's own
config: horizon, style, views, grid). The drawer draws on ``frames`` of those tiled observations
and :func:`stemob.genima.spheres.score_frames` compares its spheres with the ground truth's (pixel
error, misses, false spheres). Under ``none`` the frames are the dataset's held-out frames
themselves (the scripted expert and renderer are deterministic), so the clean row repeats
``stemob-genima-drawer score``; the other rows show what the drawer makes of appearances it never
saw. ``stemob-genima-drawer score --benchmark <name or file>`` runs it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemob.errors import StemobError


@dataclass
class HeldOut:
    """What re-recording a GENIMA dataset's held-out demos needs."""

    seeds: list[int]
    env_args: dict[str, Any]
    config: Any  # stemob.genima.dataset.GenimaDatasetConfig, as the dataset was built
    steps_after_success: int


def held_out_demos(dataset: str | Path, held_out: int) -> HeldOut:
    """The reset seeds of the last ``held_out`` demos of a GENIMA dataset, its ``env_args`` and
    the config it was built with (camera jitter dropped: it moves only the controller's inputs)."""
    import h5py

    from stemob.genima.dataset import GenimaDatasetConfig
    from stemob.genima.targets import TargetStyle
    from stemob.training.genima_drawer import genima_demos, split

    names = genima_demos(Path(dataset))
    if held_out < 1:  # split() allows none held out; nothing to score then
        raise StemobError(f"--held-out {held_out}: the dataset has {len(names)} demos")
    _, held = split(names, held_out)
    with h5py.File(dataset, "r") as h5:
        data = h5["data"]
        if "env_args" not in data.attrs:
            raise StemobError(f"{dataset}: not a GENIMA dataset with env_args")
        records = [json.loads(data[n].attrs.get("stemob_attrs", "{}")) for n in held]
        missing = [n for n, r in zip(held, records, strict=True) if "seed" not in r]
        if missing:
            raise StemobError(f"{dataset}: demo(s) {missing} record no reset seed")
        env_args = json.loads(data.attrs["env_args"])
        values = dict(json.loads(data.attrs["genima"])["config"])
    values.pop("camera_jitter", None)
    values["style"] = TargetStyle(**(values.get("style") or {}))
    values["grid"] = tuple(values["grid"]) if values.get("grid") else None
    return HeldOut([int(r["seed"]) for r in records], env_args, GenimaDatasetConfig(**values),
                   int(records[0].get("steps_after_success", 0)))  # fmt: skip


def record_targets(env: Any, demos: HeldOut, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The tiled observations and ground-truth targets (T, H, W, 3) of the expert's episode from
    ``reset(seed)`` in ``env``, drawn as the dataset builder draws them."""
    from envs.record import run_episode
    from stemob.genima.dataset import build_episode

    episode, _ = run_episode(env, seed, demos.steps_after_success)
    arrays = build_episode(episode, demos.config, None, seed, f"seed {seed}")
    return arrays["tiled_rgb"], arrays["tiled_target"]


def score_factors(
    drawer_dir: str | Path,
    dataset: str | Path,
    factors: Mapping[str, str | Path | Mapping[str, Any] | None],
    held_out: int = 10,
    frames: int = 64,
    seed: int = 0,
    figure: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Per factor: the drawer's sphere scores on ``frames`` frames (the same picks for every
    factor) of the held-out demos re-recorded under it, the mean drawing time (batches of 8), and
    with ``figure`` a PNG with one row per factor (observation | ground truth | drawn)."""
    import time

    from tqdm import tqdm

    from stemob.evaluation.rollout import default_env_factory
    from stemob.genima.agent import drawer_checkpoint, drawer_layout
    from stemob.genima.drawer import TargetDrawer
    from stemob.genima.spheres import score_frames

    demos = held_out_demos(dataset, held_out)
    cameras, grid = drawer_layout(drawer_dir)
    drawer = TargetDrawer.load(drawer_checkpoint(drawer_dir))
    drawer.denoiser.eval()
    out: dict[str, Any] = {"drawer": str(drawer_dir), "dataset": str(dataset), "seeds": demos.seeds,
                           "frames": frames, "factors": {}}  # fmt: skip
    rows, pick = [], None
    bar = tqdm(factors.items(), desc="scoring the drawer", unit="factor", disable=not progress)
    for name, perturbation in bar:
        env = default_env_factory(demos.env_args, perturbation)
        try:
            recorded = [record_targets(env, demos, s) for s in demos.seeds]
        finally:
            env.close()
        observations = np.concatenate([o for o, _ in recorded])
        truth = np.concatenate([t for _, t in recorded])
        if pick is None:  # episode lengths barely move under appearance factors; clip if they do
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(len(truth), min(frames, len(truth)), replace=False))
        chosen = pick[pick < len(truth)]
        started, drawn = time.perf_counter(), []
        for i in range(0, len(chosen), 8):
            drawn.append(drawer.draw(observations[chosen[i : i + 8]], seed=seed + i))
        ms = 1000 * (time.perf_counter() - started) / len(chosen)
        drawn_all = np.concatenate(drawn)
        score = score_frames(drawn_all, truth[chosen], observations[chosen], len(cameras), grid)
        out["factors"][name] = {**score.summary(), "frames": len(chosen),
                                "ms_per_drawing_batched8": ms}  # fmt: skip
        middle = len(chosen) // 2
        rows.append(
            (name, (observations[chosen[middle]], truth[chosen[middle]], drawn_all[middle]))
        )
    if figure:
        save_figure(rows, figure)
    return out


def save_figure(rows: list[tuple[str, tuple]], path: str | Path) -> None:
    """One row per factor: its name over observation | ground truth | drawn."""
    from PIL import Image, ImageDraw

    strips = []
    for name, frames in rows:
        strip = np.concatenate(frames, 1)
        label = Image.new("RGB", (strip.shape[1], 12), (255, 255, 255))
        ImageDraw.Draw(label).text((2, 0), name, fill=(0, 0, 0))
        strips.append(np.concatenate([np.asarray(label), strip], 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(strips, 0)).save(path)


def score_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """``score --benchmark``: the drawer under each of the benchmark's factors, on the held-out
    demos' seeds replayed with the scripted expert (:mod:`stemob.evaluation.genima_spheres`)."""
    from stemob.evaluation.benchmark import load_benchmark
    from stemob.evaluation.suite import REPO_ROOT

    bench, named = (
        Path(args.benchmark),
        REPO_ROOT / "configs" / "benchmark" / f"{args.benchmark}.yaml",
    )
    if not bench.is_file() and named.is_file():
        bench = named
    factors = load_benchmark(bench)
    result = score_factors(
        args.checkpoint,
        args.dataset,
        factors,
        args.held_out,
        args.frames,
        args.seed,
        figure=args.figure,
    )
    result["benchmark"] = str(bench)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def run(argv: Sequence[str] | None = None) -> Any:
    """The drawer CLI with ``score --benchmark`` (scored here, in the evaluation layer); every
    other command is :func:`stemob.training.genima_drawer.run`'s."""
    from stemob.training.genima_drawer import build_parser
    from stemob.training.genima_drawer import run as training_run

    args = build_parser().parse_args(argv)
    if args.command != "score" or not args.benchmark:
        return training_run(argv)
    result = score_benchmark(args)
    print(json.dumps(result, indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``stemob-genima-drawer``: exit status 2 with one line for bad input."""
    from stemob.errors import run_cli

    raise SystemExit(run_cli(run, argv, "stemob-genima-drawer"))
