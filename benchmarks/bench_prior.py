"""The embedded prior: reconstruction quality, speed, sample grid and the convergence study.

All figures go through stemob's real ``Inverter`` (uint8 frames in, uint8 frames out):

- quality: PSNR / SSIM of the plain VAE round trip (k=0) on held-out tabletop renders from the
  ``eval`` texture pool (all 14 factors, reset seeds never used in training), fp32 and bf16;
- latency: one 96x96 frame, ddpm inversion (encode + noise + decode, k=15 of N=50), the median
  of ``--calls`` calls, repeated ``--repeats`` times (the table shows the median of the medians);
- throughput: ``--batch_frames`` frames inverted in one call, median of ``--repeats`` runs;
- ``--samples PNG``: originals vs ddpm inversions at several k;
- ``--convergence``: Stem-OB's premise on the tabletop suite. For each factor family (colour,
  texture, lighting, camera) and ``--pairs`` pairs: appearance pairs (one simulator state rendered
  under two draws of the family's factors) and state pairs (one appearance, frames of one expert
  demonstration 5-10 steps apart, front camera). Each image of a pair is inverted with its own
  noise; the distance is the mean squared pixel difference of the decoded images (in [0, 1]).
  The noise floor is the distance between two inversions of the same image; the curves are
  ``(d(k) - floor(k)) / d(0)`` (excess over the floor, normalised by k=0), and their ratio
  ``appearance_over_state`` (appearance excess over state excess; Stem-OB needs it to fall with k).
  ``--mode`` and ``--resolution`` pick the recipe (the robustness study's ddim and 48 px rows).

Examples:
    MUJOCO_GL=egl python benchmarks/bench_prior.py --threads 2 --json benchmarks/results/prior.json \
        --samples stemob/priors/embedded/samples.png
    MUJOCO_GL=egl python benchmarks/bench_prior.py --skip_speed --convergence --pairs 50
    MUJOCO_GL=egl python benchmarks/bench_prior.py --skip_speed --dtypes fp32 --convergence \
        --mode ddim --ks 0,15 --pairs 20 --json benchmarks/results/convergence_ddim.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from stemob.inversion import InversionSettings, Inverter
from stemob.priors.images import TABLETOP_TASKS, perturbation_with_pool, render_tabletop
from stemob.priors.metrics import ssim

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {
    "colour": ("object_color", "table_color"),
    "texture": ("object_texture", "table_texture", "background_texture"),
    "lighting": ("light_color",),
    "camera": ("camera_pose",),
}
K_VALUES = (0, 5, 10, 15, 20, 25, 30, 40, 50)


def quality(pretrained: str, frames: np.ndarray, dtype: str) -> dict[str, float]:
    """PSNR (dB) and SSIM of the k=0 round trip through the Inverter (uint8 in and out)."""
    inverter = Inverter(InversionSettings(pretrained=pretrained, inversion_steps=0), dtype=dtype)
    out = np.concatenate(
        [inverter.invert(frames[i : i + 64]) for i in range(0, len(frames), 64)]
    ).astype(np.float64)
    ref = frames.astype(np.float64)
    mse = ((out - ref) / 255.0) ** 2
    psnr = 10 * np.log10(1.0 / np.maximum(mse.reshape(len(frames), -1).mean(1), 1e-10))
    to_t = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2) / 255.0).float()  # noqa: E731
    sim = ssim(to_t(out), to_t(ref))
    return {
        "psnr_db": float(psnr.mean()),
        "psnr_db_min": float(psnr.min()),
        "ssim": float(sim.mean()),
    }


def speed(
    pretrained: str,
    frames: np.ndarray,
    dtype: str,
    repeats: int,
    calls: int,
    batch: int,
    chunks: list[int],
) -> dict:
    """Median single-frame latency (ms) and batched throughput (frames/s) of ddpm inversion, k=15.

    Throughput: ``batch`` frames in one ``invert`` call, processed ``chunk`` frames at a time
    (``batch_size=chunk``), for each chunk; ``frames_per_s`` is the best chunk's median.
    """
    inverter = Inverter(InversionSettings(pretrained=pretrained, inversion_steps=15), dtype=dtype)
    one = frames[:1]
    many = np.concatenate([frames] * (batch // len(frames) + 1))[:batch]
    for _ in range(5):
        inverter.invert(one)
    for chunk in chunks:
        inverter.invert(many[:chunk])
    latencies: list[float] = []
    rates: dict[int, list[float]] = {chunk: [] for chunk in chunks}
    for _ in range(repeats):
        times = []
        for i in range(calls):
            start = time.perf_counter()
            inverter.invert(one, frame_ids=[(0, i, "front")])
            times.append(time.perf_counter() - start)
        latencies.append(statistics.median(times) * 1000)
        for chunk in chunks:
            start = time.perf_counter()
            inverter.invert(many, batch_size=chunk)
            rates[chunk].append(batch / (time.perf_counter() - start))
    per_chunk = {chunk: statistics.median(r) for chunk, r in rates.items()}
    best = max(per_chunk, key=per_chunk.get)
    return {
        "latency_ms": statistics.median(latencies),
        "latency_ms_runs": [round(x, 2) for x in latencies],
        "frames_per_s": per_chunk[best],
        "best_chunk": best,
        "frames_per_s_by_chunk": {str(c): round(v, 1) for c, v in per_chunk.items()},
        "frames_per_s_runs": {str(c): [round(x, 1) for x in r] for c, r in rates.items()},
    }


def sample_grid(pretrained: str, frames: np.ndarray, path: Path, ks=(0, 10, 15, 25, 35)) -> None:
    """Rows: frames; columns: the original, then ddpm inversions at each k (N=50)."""
    from PIL import Image, ImageDraw

    columns = [frames]
    for k in ks:
        inverter = Inverter(InversionSettings(pretrained=pretrained, inversion_steps=k, seed=0))
        columns.append(inverter.invert(frames))
    size = frames.shape[1]
    grid = np.full((12 + len(frames) * size, len(columns) * size, 3), 255, np.uint8)
    for c, images in enumerate(columns):
        for r, image in enumerate(images):
            grid[12 + r * size : 12 + (r + 1) * size, c * size : (c + 1) * size] = image
    picture = Image.fromarray(grid)
    draw = ImageDraw.Draw(picture)
    for c, label in enumerate(["original"] + [f"k={k}" for k in ks]):
        draw.text((c * size + 3, 0), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)  # < 300 KB


# ------------------------------------------------------------------------------ convergence


def _family_config(family: str, reseed: int) -> dict:
    base = perturbation_with_pool(ROOT / "configs/perturbation/all.yaml", "eval")
    factors = []
    for factor in base["env"]["scene"]["factors"]:
        if factor["variation"] in FAMILIES[family]:
            factor = copy.deepcopy(factor)
            factor["seed"] = int(factor["seed"]) + reseed
            factors.append(factor)
    base["env"]["scene"]["factors"] = factors
    return base


def collect_pairs(family: str, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(appearance pairs, state pairs): uint8 (pairs, 2, S, S, 3) each, front camera, 96 px."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    import envs

    rng = np.random.default_rng([seed, len(family)])
    appearance, state = [], []
    for i in range(pairs):
        task = TABLETOP_TASKS[i % len(TABLETOP_TASKS)]
        env_a, env_b = (
            gym.make(
                envs.GYM_IDS[task],
                perturbation=_family_config(family, reseed),
                image_size=96,
                cameras=("front",),
            )
            for reseed in (0, 7919)
        )
        obs, _ = env_a.reset(seed=seed + i)
        env_b.reset(seed=seed + i)
        expert = env_a.unwrapped.task.make_expert(env_a)
        t, gap = int(rng.integers(5, 40)), int(rng.integers(5, 11))
        frames, other = [], None
        for step in range(t + gap + 1):
            if step in (t, t + gap):
                frames.append(obs["front_image"])
                if step == t:
                    env_b.unwrapped.set_state(env_a.unwrapped.get_state())
                    other = env_b.unwrapped.render_camera("front")
            if step == t + gap:
                break
            obs, *_ = env_a.step(expert.act())
        while len(frames) < 2:  # the episode ended early: use the last frame
            frames.append(obs["front_image"])
        if other is None:
            env_b.unwrapped.set_state(env_a.unwrapped.get_state())
            other = env_b.unwrapped.render_camera("front")
        appearance.append(np.stack([frames[0], other]))
        state.append(np.stack(frames))
        env_a.close()
        env_b.close()
    return np.stack(appearance), np.stack(state)


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2).mean(axis=(1, 2, 3))


def convergence(
    pretrained: str,
    families: list[str],
    pairs: int,
    seed: int,
    mode: str = "ddpm",
    resolution: int | None = None,
    ks: tuple[int, ...] = K_VALUES,
) -> dict:
    """Normalised excess distance along k for appearance and state pairs of each family, for one
    inversion recipe (``mode``, ``resolution``: the study's ``stemob`` / ``stemob_ddim`` /
    ``stemob_res48`` rows), and their ratio (appearance excess over state excess, Stem-OB's
    premise being that it falls with k)."""
    results = {}
    inverters = {
        k: Inverter(
            InversionSettings(
                mode=mode,
                pretrained=pretrained,
                inversion_steps=k,
                seed=seed,
                resolution=resolution,
            )
        )
        for k in ks
    }
    for family in families:
        app, sta = collect_pairs(family, pairs, seed)
        curves: dict[str, list[float]] = {}
        raw: dict[str, list[float]] = {}
        for name, data in (("appearance", app), ("state", sta)):
            n = len(data)
            ids_a = [(i, 0, "a") for i in range(n)]
            ids_b = [(i, 1, "b") for i in range(n)]
            ids_c = [(i, 2, "c") for i in range(n)]
            d, floor = [], []
            for k in ks:
                inv = inverters[k]
                a = inv.invert(data[:, 0], frame_ids=ids_a)
                b = inv.invert(data[:, 1], frame_ids=ids_b)
                a2 = inv.invert(data[:, 0], frame_ids=ids_c)  # same image, other noise
                d.append(float(_distance(a, b).mean()))
                floor.append(float(_distance(a, a2).mean()))
            d0 = max(d[0], 1e-12)
            curves[name] = [round((x - f) / d0, 4) for x, f in zip(d, floor, strict=True)]
            raw[f"{name}_distance"] = [round(x, 6) for x in d]
            raw[f"{name}_floor"] = [round(x, 6) for x in floor]
        excess = {
            name: [
                x - f for x, f in zip(raw[f"{name}_distance"], raw[f"{name}_floor"], strict=True)
            ]
            for name in ("appearance", "state")
        }
        ratio = [
            round(a / max(b, 1e-12), 4)
            for a, b in zip(excess["appearance"], excess["state"], strict=True)
        ]
        faster = all(
            a <= s for a, s in zip(curves["appearance"][1:], curves["state"][1:], strict=True)
        )
        results[family] = {
            **curves,
            **raw,
            "appearance_over_state": ratio,
            "appearance_converges_faster_at_every_k": faster,
        }
    return {
        "k": list(ks),
        "mode": mode,
        "resolution": resolution,
        "pairs": pairs,
        "families": results,
    }


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", default="embedded")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval_episodes", type=int, default=40, help="held-out render episodes")
    parser.add_argument("--eval_seed", type=int, default=900_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30, help="single-frame calls per repeat")
    parser.add_argument("--batch_frames", type=int, default=256)
    parser.add_argument("--chunks", default="8,16,32,64", help="batch_size values for throughput")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--skip_speed", action="store_true")
    parser.add_argument("--samples", default=None, help="write the sample grid PNG here")
    parser.add_argument("--convergence", action="store_true")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--mode", default="ddpm", help="inversion mode of the convergence study")
    parser.add_argument("--resolution", type=int, default=None, help="invert at this size (48)")
    parser.add_argument("--ks", default=",".join(map(str, K_VALUES)), help="k values of the study")
    parser.add_argument("--json", default="benchmarks/results/prior.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    frames = render_tabletop(
        args.eval_seed,
        args.eval_episodes,
        2,
        pool="eval",
        perturbation=ROOT / "configs/perturbation/all.yaml",
        progress=False,
    )
    report: dict = {
        "date": str(date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "pretrained": args.pretrained,
        "eval_frames": len(frames),
        "eval": f"{args.eval_episodes} episodes x 2 steps x (front, wrist, overhead), all 14 factors, texture_pool=eval, reset seeds {args.eval_seed}+",
        "quality": {},
        "speed": {},
    }
    dtypes = [d for d in args.dtypes.split(",") if d]
    for dtype in dtypes:
        report["quality"][dtype] = quality(args.pretrained, frames, dtype)
    if not args.skip_speed:
        for dtype in dtypes:
            report["speed"][dtype] = speed(
                args.pretrained,
                frames,
                dtype,
                args.repeats,
                args.calls,
                args.batch_frames,
                [int(c) for c in args.chunks.split(",") if c],
            )
    print(f"{len(frames)} eval renders, {args.threads} threads, 96x96, ddpm k=15/50")
    print(f"{'dtype':6} {'PSNR dB':>8} {'SSIM':>6} {'latency ms':>11} {'frames/s':>9}  by chunk")
    for dtype in dtypes:
        q, s = report["quality"][dtype], report["speed"].get(dtype, {})
        print(
            f"{dtype:6} {q['psnr_db']:8.2f} {q['ssim']:6.3f} "
            f"{s.get('latency_ms', float('nan')):11.2f} {s.get('frames_per_s', float('nan')):9.1f}"
            f"  {s.get('frames_per_s_by_chunk', '')}"
        )
    if args.samples:
        pick = frames[[0, 1, 2, 9]]
        sample_grid(args.pretrained, pick, Path(args.samples))
        print(f"sample grid: {args.samples} ({Path(args.samples).stat().st_size // 1024} KB)")
    if args.convergence:
        ks = tuple(int(k) for k in args.ks.split(","))
        if ks[0] != 0:
            parser.error(
                f"--ks must start with 0 (the curves are normalised by k=0), got {args.ks}"
            )
        study = convergence(
            args.pretrained, args.families.split(","), args.pairs, 700_000,
            args.mode, args.resolution, ks,
        )  # fmt: skip
        report["convergence"] = study
        recipe = args.mode + (f" at {args.resolution} px" if args.resolution else "")
        print(f"normalised excess distance over the noise floor, {recipe}, k =", study["k"])
        for family, res in study["families"].items():
            for name in ("appearance", "state", "appearance_over_state"):
                values = " ".join(f"{x:6.3f}" for x in res[name])
                print(f"{family:9} {name:21} {values}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
