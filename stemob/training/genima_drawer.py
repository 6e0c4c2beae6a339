"""Train GENIMA's diffusion agent (:mod:`stemob.genima.drawer`) on a GENIMA dataset, resumably,
and score what it draws.

    stemob-genima-drawer train --dataset data/lift_cube_joint/demos_200.genima-<digest>.hdf5 \
        --out outputs/genima/drawer_lift_cube [--steps 4000] [--batch 16] [--pretrained embedded]
        [--recipe auto] [--lr 1e-4] [--held-out 10] [--save-every 500] [--seed 0]
        [--shift 4] [--color-jitter 0.3] [--residual]
    stemob-genima-drawer score --checkpoint outputs/genima/drawer_lift_cube \
        --dataset <genima.hdf5> [--frames 64] [--out scores.json]

Training reads ``tiled_rgb`` (the condition) and ``tiled_target`` (what is drawn) of every demo but
the last ``--held-out`` ones. With the ``concat`` recipe the VAE is frozen, so both are encoded
once (progress bar) and each step trains the UNet on cached latents. ``<out>/latest/`` holds the
drawer (``denoiser/``, ``drawer.json``) and ``train_state.pt`` (optimiser, step, generator), written
to a scratch folder and renamed every ``--save-every`` steps: a killed run resumes there with the
same command (a larger ``--steps`` continues a finished run). GENIMA's augmentation (off by default):
``--shift N`` crops observation and target at the same random offset (pad N, edge replicated, as
``obs_aug=aug``), ``--color-jitter V`` jitters the observation's brightness, contrast and
saturation by up to V (hue V / 6) and leaves the target's spheres alone; either one re-encodes
the augmented frames every step instead of reading cached latents. ``score`` draws targets for held-out frames and reports the spheres' pixel error
(:mod:`stemob.genima.spheres`) and the time per drawing; ``score --benchmark colosseum_no_receiver``
scores it under each of the benchmark's factors instead, on the held-out demos' seeds replayed by
the scripted expert (:mod:`stemob.evaluation.genima_spheres`, the command's entry point; ``--frames`` per factor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemob.errors import StemobError, run_cli


def genima_demos(path: Path) -> list[str]:
    """The demo names of a GENIMA dataset in order, or one clear error for a missing or
    non-GENIMA file."""
    import h5py

    from stemob.data.robomimic import demo_sort_key

    if not path.is_file():
        raise StemobError(f"{path}: no such GENIMA dataset (build it with stemob-genima-dataset)")
    with h5py.File(path, "r") as h5:
        if "data" not in h5 or "genima" not in h5["data"].attrs:
            raise StemobError(f"{path}: not a GENIMA dataset (build it with stemob-genima-dataset)")
        names = sorted(h5["data"].keys(), key=demo_sort_key)
        first = h5["data"][names[0]]["obs"]
        for key in ("tiled_rgb", "tiled_target"):
            if key not in first:
                raise StemobError(f"{path}: demo {names[0]!r} lacks obs/{key}")
    return names


def split(names: list[str], held_out: int) -> tuple[list[str], list[str]]:
    """Training demos and the last ``held_out`` ones."""
    if not 0 <= held_out < len(names):
        raise StemobError(f"--held-out {held_out}: the dataset has {len(names)} demos")
    return names[: len(names) - held_out], names[len(names) - held_out :]


def _read(path: Path, names: list[str], key: str) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as h5:
        return np.concatenate([h5["data"][n]["obs"][key][()] for n in names])


def _encode_all(drawer: Any, images: np.ndarray, batch: int, desc: str) -> torch.Tensor:
    from tqdm import tqdm

    parts = [drawer.encode(images[i : i + batch])
             for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch")]  # fmt: skip
    return torch.cat(parts)


def train(args: argparse.Namespace) -> Path:
    from tqdm import tqdm

    from stemob.genima.agent import dataset_layout
    from stemob.genima.drawer import DrawerConfig, TargetDrawer

    dataset, out = Path(args.dataset), Path(args.out)
    names = genima_demos(dataset)
    train_names, _ = split(names, args.held_out)
    torch.manual_seed(args.seed)
    latest = out / "latest"
    state_path = latest / "train_state.pt"
    settings = {"dataset": str(dataset), "batch": args.batch,
                "held_out": args.held_out, "seed": args.seed}  # fmt: skip
    augment = _augmenters(args)
    if augment:  # older runs have no augmentation and keep their settings
        settings.update(shift=args.shift, color_jitter=args.color_jitter)
    if args.residual:  # likewise
        settings["residual"] = True
    if state_path.is_file():
        drawer = TargetDrawer.load(latest, args.device)
        state = torch.load(state_path, weights_only=True)
        # older runs recorded their steps too; more steps continue a run
        if {k: v for k, v in state["settings"].items() if k != "steps"} != settings:
            raise StemobError(f"{out} was started with other settings {state['settings']}; "
                              "use another --out")  # fmt: skip
    else:
        config = DrawerConfig(pretrained=args.pretrained, recipe=args.recipe, lr=args.lr,
                              residual=args.residual)  # fmt: skip
        drawer, state = TargetDrawer(config, args.device), None
    drawer.denoiser.train()
    optimizer = torch.optim.AdamW(drawer.trainable(), lr=drawer.config.lr, weight_decay=1e-2)
    generator = torch.Generator().manual_seed(args.seed)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        for name, aug in augment.items():
            aug.load_state_dict(state["augment"][name])
        step = int(state["step"])
    if step >= args.steps:
        return latest
    layout = dataset_layout(dataset)
    observations = _read(dataset, train_names, "tiled_rgb")
    targets = _read(dataset, train_names, "tiled_target")
    cached = drawer.recipe == "concat" and not augment  # frozen VAE, latent condition: encode once
    if cached:
        observations = _encode_all(drawer, observations, 64, "encoding observations")
        targets = _encode_all(drawer, targets, 64, "encoding targets")
    bar = tqdm(total=args.steps, initial=step, desc="training the drawer", unit="step")
    started, log = time.perf_counter(), out / "log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    while step < args.steps:
        index = torch.randint(0, len(targets), (args.batch,), generator=generator).numpy()
        if cached:
            loss = drawer.loss_from_latents(targets[index], observations[index], generator)
        else:
            observation, target = _augment(augment, observations[index], targets[index])
            loss = drawer.loss(observation, target, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 50 == 0:
            with log.open("a") as f:
                f.write(json.dumps({"step": step, "loss": loss.item(),
                                    "s_per_step": (time.perf_counter() - started) / 50}) + "\n")  # fmt: skip
            started = time.perf_counter()
        if step % args.save_every == 0 or step == args.steps:
            _save(drawer, optimizer, generator, step, settings, out, augment, layout)
    bar.close()
    return latest


def _augmenters(args: argparse.Namespace) -> dict[str, Any]:
    """GENIMA's augmentation as ``obs_aug=aug`` parts: ``shift`` (observation and target, one
    offset per pair) and ``color`` (the observation only); empty when both are off."""
    from stemob.training.augment import AugmentConfig, BatchAugment

    if args.shift < 0 or args.color_jitter < 0:
        raise StemobError(
            f"--shift and --color-jitter must be >= 0, got {args.shift}, {args.color_jitter}"
        )
    out: dict[str, Any] = {}
    if args.shift:
        out["shift"] = BatchAugment(AugmentConfig("aug", shift=args.shift, brightness=0.0,
                                                  contrast=0.0, saturation=0.0, hue=0.0,
                                                  seed=args.seed))  # fmt: skip
    if args.color_jitter:
        v = args.color_jitter
        out["color"] = BatchAugment(AugmentConfig("aug", shift=0, brightness=v, contrast=v,
                                                  saturation=v, hue=v / 6, seed=args.seed + 1))  # fmt: skip
    return out


def _augment(augment: dict[str, Any], observation: np.ndarray, target: np.ndarray) -> tuple:
    """uint8 ``(B, H, W, 3)`` observation and target after :func:`_augmenters`' parts."""
    if not augment:
        return observation, target
    pair = torch.from_numpy(np.stack([observation, target], 1)).permute(0, 1, 4, 2, 3)
    if "shift" in augment:  # the pair as two frames of one sample: one offset for both
        pair = augment["shift"]({"obs": {"pair": pair}})["obs"]["pair"]
    if "color" in augment:
        seen = augment["color"]({"obs": {"seen": pair[:, :1]}})["obs"]["seen"]
        pair = torch.cat([seen, pair[:, 1:]], 1)
    pair = pair.permute(0, 1, 3, 4, 2).numpy()
    return pair[:, 0], pair[:, 1]


def _save(drawer: Any, optimizer: Any, generator: Any, step: int, settings: dict, out: Path,
          augment: dict[str, Any] | None = None, layout: dict | None = None) -> None:  # fmt: skip
    """``<out>/latest`` replaced atomically (scratch folder, then rename)."""
    scratch, latest, old = out / "latest.tmp", out / "latest", out / "latest.old"
    shutil.rmtree(scratch, ignore_errors=True)
    drawer.save(scratch)
    torch.save({"optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                "step": step, "settings": settings,
                "augment": {k: a.state_dict() for k, a in (augment or {}).items()},
                "layout": layout},
               scratch / "train_state.pt")  # fmt: skip
    shutil.rmtree(old, ignore_errors=True)
    if latest.exists():
        os.replace(latest, old)
    os.replace(scratch, latest)
    shutil.rmtree(old, ignore_errors=True)


def score(args: argparse.Namespace) -> dict[str, Any]:
    if args.benchmark:  # the evaluation layer's job (it replays the expert under each factor)
        raise StemobError(
            "score --benchmark runs through stemob-genima-drawer "
            "(stemob.evaluation.genima_spheres.main), not stemob.training"
        )
    import h5py

    from stemob.genima.agent import drawer_checkpoint
    from stemob.genima.drawer import TargetDrawer
    from stemob.genima.spheres import score_frames

    dataset = Path(args.dataset)
    names = genima_demos(dataset)
    _, held = split(names, args.held_out)
    drawer = TargetDrawer.load(drawer_checkpoint(args.checkpoint))
    drawer.denoiser.eval()
    with h5py.File(dataset, "r") as h5:
        record = json.loads(h5["data"].attrs["genima"])["config"]
        keys = list(h5["data"][held[0]]["obs"])
    views = len([k for k in keys if k.endswith("_target") and k != "tiled_target"])
    grid = tuple(record["grid"]) if record.get("grid") else (1, views)
    observations = _read(dataset, held, "tiled_rgb")
    truth = _read(dataset, held, "tiled_target")
    rng = np.random.default_rng(args.seed)
    pick = np.sort(rng.choice(len(truth), min(args.frames, len(truth)), replace=False))
    drawn, started = [], time.perf_counter()
    for i in range(0, len(pick), 8):
        drawn.append(drawer.draw(observations[pick[i : i + 8]], seed=args.seed + i))
    per_frame_ms = 1000 * (time.perf_counter() - started) / len(pick)
    drawn_all = np.concatenate(drawn)
    result = {
        "checkpoint": str(args.checkpoint),
        "dataset": str(dataset),
        "held_out_demos": held,
        "frames": len(pick),
        "num_inference_steps": drawer.config.num_inference_steps,
        "ms_per_drawing_batched8": per_frame_ms,
        "drawn": score_frames(drawn_all, truth[pick], observations[pick], views, grid).summary(),
        "observation_as_drawing": score_frames(
            observations[pick], truth[pick], observations[pick], views, grid
        ).summary(),  # fmt: skip
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if args.figure:
        from PIL import Image

        rows = [np.concatenate([observations[p], truth[p], d], 1)
                for p, d in zip(pick[:6], drawn_all[:6], strict=False)]  # fmt: skip
        Image.fromarray(np.concatenate(rows, 0)).save(args.figure)
    return result


def drawer_args(
    options: Mapping[str, Any], dataset: str | Path, run_dir: str | Path, seed: int = 0,
    device: str = "cpu",
) -> argparse.Namespace:  # fmt: skip
    """The CLI's ``train`` arguments for ``policy.drawer`` (its long options, e.g. ``steps``,
    ``batch``, ``lr``; the CLI's defaults for the rest), or one clear error naming the option."""
    from stemob.genima.agent import DRAWER_DIR

    args = build_parser().parse_args(
        ["train", "--dataset", str(dataset), "--out", str(Path(run_dir) / DRAWER_DIR)]
    )
    known = sorted(k for k in vars(args) if k not in ("command", "dataset", "out", "device"))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise StemobError(f"policy.drawer: unknown option(s) {unknown} (known: {known})")
    for key, value in {"seed": seed, **options}.items():
        kind = type(getattr(args, key))
        try:
            if (
                value is None
                or isinstance(value, bool) != (kind is bool)
                or (kind is int and value != int(value))
            ):
                raise ValueError
            setattr(args, key, kind(value))
        except (TypeError, ValueError):
            raise StemobError(
                f"policy.drawer.{key} must be a {kind.__name__}, got {value!r}"
            ) from None
    args.device = str(device)
    for key in ("steps", "batch", "save_every"):
        if getattr(args, key) < 1:
            raise StemobError(f"policy.drawer.{key} must be >= 1, got {getattr(args, key)}")
    _augmenters(args)  # checks shift and color_jitter
    return args


def train_in_run(
    options: Mapping[str, Any], dataset: str | Path, run_dir: str | Path, seed: int = 0,
    device: str = "cpu",
) -> Path:  # fmt: skip
    """GENIMA's stage 2 inside a training run (``train.py policy=genima``): the drawer trained on
    ``dataset`` into ``<run_dir>/drawer`` with ``options`` (:func:`drawer_args`), resumable like
    the CLI. Returns the drawer's ``latest/``."""
    return train(drawer_args(options, dataset, run_dir, seed, device))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stemob-genima-drawer", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--dataset", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--steps", type=int, default=4000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--pretrained", default="embedded")
    t.add_argument("--recipe", default="auto")
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--device", default="cpu", help="where the drawer trains (cpu, cuda, ...)")
    t.add_argument(
        "--shift", type=int, default=0, help="GENIMA's random crop: pad and shift by up to N px"
    )
    t.add_argument("--color-jitter", type=float, default=0.0,
                   help="GENIMA's colour jitter of the observation (brightness/contrast/saturation)")  # fmt: skip
    t.add_argument("--residual", action="store_true",
                   help="denoise the target's latent minus the observation's (the spheres alone)")  # fmt: skip
    s = sub.add_parser("score")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--frames", type=int, default=64)
    s.add_argument("--out", default=None)
    s.add_argument("--figure", default=None, help="PNG: observation | ground truth | drawn")
    s.add_argument("--benchmark", default=None,
                   help="score under each factor of this benchmark (a name under configs/benchmark "
                        "or a file): the held-out demos' seeds replayed by the scripted expert")  # fmt: skip
    for p in (t, s):
        p.add_argument("--held-out", type=int, default=10)
        p.add_argument("--seed", type=int, default=0)
    return parser


def run(argv: Sequence[str] | None = None) -> Any:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        path = train(args)
        print(f"drawer: {path}")
        return path
    result = score(args)
    print(json.dumps({k: v for k, v in result.items() if k != "held_out_demos"}, indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``stemob-genima-drawer``: exit status 2 with one line for bad input."""
    raise SystemExit(run_cli(run, argv, "stemob-genima-drawer"))
