"""Dataset-inversion speed of stemob's Inverter vs the reference approach, side by side in one run.

Measured on the same model and machine, each figure the median of ``--repeats`` runs:
- reference: the Stem-OB reference's way, one image at a time, resized to the model's native size
  (``vae.config.sample_size``; 768 for SD 2.1), encode, noise, decode, resized back (nearest);
- loop: stemob's Inverter called on one frame at a time at the frame's own resolution;
- batched: stemob's Inverter on batches of frames at frame resolution, for each batch size;
- latency: one 96x96 frame through the test-time path (ddpm), median over many calls.

Examples:
    python benchmarks/bench_inversion.py --model sd21 --frames 32 --reference_frames 2
    python benchmarks/bench_inversion.py --model embedded --frames 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stemob.inversion import InversionSettings, Inverter
from stemob.inversion.model_builder import build_model_folder


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference_invert(
    inverter: Inverter, frames: np.ndarray, generator: torch.Generator
) -> list[np.ndarray]:
    """The reference approach: per image, resize to native size, encode, noise, decode, resize back."""
    from PIL import Image

    model = inverter.model
    native = int(model.vae.config.sample_size)
    out = []
    with torch.inference_mode():
        for frame in frames:
            image = Image.fromarray(frame).resize((native, native), Image.BICUBIC)
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1
            z0 = model.vae.encode(x).latent_dist.mode() * model.scaling_factor
            eps = torch.randn(z0.shape, generator=generator)
            z = inverter.alpha_bar**0.5 * z0 + (1 - inverter.alpha_bar) ** 0.5 * eps
            decoded = model.vae.decode(z / model.scaling_factor).sample.clamp(-1, 1)
            decoded = F.interpolate(decoded, size=frame.shape[:2], mode="nearest")
            out.append(((decoded[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    return out


def resolve_model(name: str, workdir: Path) -> str:
    if name in ("tiny", "tiny-uncond", "sd21"):
        return str(build_model_folder(workdir / name, name, with_unet=False))
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="embedded",
        help="embedded, tiny, sd21 (SD 2.1-shaped, random) or a folder",
    )
    parser.add_argument(
        "--frames", type=int, default=64, help="frames in the dataset-inversion runs"
    )
    parser.add_argument("--frame_size", type=int, default=96)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 8, 16, 32, 64])
    parser.add_argument(
        "--reference_frames", type=int, default=4, help="frames timed for the reference approach"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency_calls", type=int, default=30)
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["fp32", "bf16"],
        help="dtypes of the batched curves (the reference and the loop run in fp32)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    frames = rng.integers(
        0, 256, (args.frames, args.frame_size, args.frame_size, 3), dtype=np.uint8
    )
    ids = [(0, i, "front") for i in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = resolve_model(args.model, Path(tmp))
        settings = InversionSettings(pretrained=pretrained, inversion_steps=15, seed=0)
        inverters = {
            dtype: Inverter(settings, dtype=dtype)
            for dtype in dict.fromkeys(["fp32", *args.dtypes])
        }
    inverter = inverters["fp32"]
    for each in inverters.values():
        each.invert(frames[:2])  # warm-up

    generator = torch.Generator().manual_seed(0)
    ref_frames = frames[: args.reference_frames]
    reference_invert(inverter, ref_frames[:1], generator)  # warm-up at native size
    t_ref = median_time(lambda: reference_invert(inverter, ref_frames, generator), args.repeats)
    reference_fps = len(ref_frames) / t_ref

    t_loop = median_time(
        lambda: [inverter.invert(frames[i : i + 1], ids[i : i + 1]) for i in range(args.frames)],
        args.repeats,
    )
    loop_fps = args.frames / t_loop

    batched = {dtype: {} for dtype in args.dtypes}
    for dtype in args.dtypes:
        for size in args.batch_sizes:
            t = median_time(
                lambda size=size, dtype=dtype: inverters[dtype].invert(
                    frames, ids, batch_size=size
                ),
                args.repeats,
            )
            batched[dtype][size] = args.frames / t
    best_dtype, best_size = max(
        ((d, b) for d in batched for b in batched[d]), key=lambda db: batched[db[0]][db[1]]
    )
    best_fp32 = max(batched["fp32"].values()) if "fp32" in batched else float("nan")

    one = frames[:1]
    latency = {}
    for dtype, each in inverters.items():
        times = []
        for i in range(args.latency_calls):
            start = time.perf_counter()
            each.invert(one, [(0, i, "front")])
            times.append(time.perf_counter() - start)
        latency[dtype] = 1000 * statistics.median(times)

    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "model": args.model,
        "native_size": int(inverter.model.vae.config.sample_size),
        "frame_size": args.frame_size,
        "frames": args.frames,
        "reference_fps": reference_fps,
        "loop_fps": loop_fps,
        "batched_fps": batched,
        "best": {
            "dtype": best_dtype,
            "batch_size": best_size,
            "fps": batched[best_dtype][best_size],
        },
        "best_vs_loop": batched[best_dtype][best_size] / loop_fps,
        "best_fp32_vs_loop": best_fp32 / loop_fps,
        "best_vs_reference": batched[best_dtype][best_size] / reference_fps,
        "latency_ms_median": latency,
    }
    print(
        f"model {args.model} (native {result['native_size']} px), {args.frames} frames of "
        f"{args.frame_size}x{args.frame_size}, {result['machine']}, median of {args.repeats} runs"
    )
    print(f"  reference (fp32, one at a time, resized to native): {reference_fps:8.3f} frames/s")
    print(f"  stemob fp32, one frame at a time:                   {loop_fps:8.3f} frames/s")
    for dtype, curve in batched.items():
        for size, fps in curve.items():
            print(
                f"  stemob {dtype:4s} batch {size:3d}:                         {fps:8.3f} frames/s  "
                f"({fps / loop_fps:5.2f}x loop, {fps / reference_fps:7.1f}x reference)"
            )
    print(
        f"  best: {best_dtype} batch {best_size}: {result['best_vs_loop']:.2f}x the fp32 loop "
        f"(fp32 batching alone: {result['best_fp32_vs_loop']:.2f}x), "
        f"{result['best_vs_reference']:.1f}x the reference approach"
    )
    for dtype, ms in latency.items():
        print(f"  single-frame latency (test-time path, ddpm, {dtype}): median {ms:.1f} ms")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
