"""``stemob-invert``: Stem-OB inversion of an image, a folder of images or a video.

Compatible with the reference ``invert.py`` (``--model`` names the mode; ``--mode`` is its alias)::

    stemob-invert --img_path frame.png --output_path inverted.png --model ddpm --inversion_steps 15
    stemob-invert --img_path frames/ --output_path inverted/ --pretrained /models/sd-2-1
    stemob-invert --img_path episode.mp4 --output_path episode_inverted.mp4
    stemob-invert --report --img_path my_robot_frames/     # how well the prior reconstructs them
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from stemob.errors import StemobError, run_cli
from stemob.inversion import media
from stemob.inversion.settings import (
    EMBEDDED,
    INTERPOLATIONS,
    MODES,
    ROUNDINGS,
    InversionSettings,
)


def add_inversion_arguments(parser: argparse.ArgumentParser) -> None:
    """The Stem-OB settings and runtime options shared by the inversion commands."""
    group = parser.add_argument_group("Stem-OB settings")
    group.add_argument(
        "--model",
        "--mode",
        dest="mode",
        default="ddpm",
        choices=MODES,
        help="inversion mode (the reference CLI calls it --model); default ddpm",
    )
    group.add_argument(
        "--pretrained",
        default=EMBEDDED,
        help="diffusers model folder, hub id in the local cache, or 'embedded' (default)",
    )
    group.add_argument("--num_steps", type=int, default=50, help="N, schedule length (default 50)")
    group.add_argument(
        "--inversion_steps", type=int, default=15, help="k of N steps to invert (default 15)"
    )
    group.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="resize frames to this square size for the model (default: keep frame size)",
    )
    group.add_argument(
        "--short_side", type=int, default=None,
        help="resize the shorter side to this, keeping the aspect ratio (exclusive with --resolution)",
    )  # fmt: skip
    group.add_argument(
        "--interpolation", default=None, choices=INTERPOLATIONS,
        help="resizing to the model's size and back (default bilinear, antialiased)",
    )  # fmt: skip
    group.add_argument(
        "--rounding", default=None, choices=ROUNDINGS,
        help="decoded pixels to uint8 (default round)",
    )  # fmt: skip
    group.add_argument(
        "--preset", default=None, choices=sorted(PRESETS),
        help="paper: the reference code's exact behaviour (768 px, nearest both ways, truncation; "
        "needs --pretrained <SD 2.1 folder>); explicit options win",
    )  # fmt: skip
    group.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    group.add_argument(
        "--unseeded", action="store_true", help="fresh noise on every run (ignores --seed)"
    )
    run = parser.add_argument_group("runtime")
    run.add_argument(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)"
    )
    run.add_argument("--dtype", default="fp32", help="fp32 (default), fp16 or bf16")
    run.add_argument(
        "--batch_size",
        type=int,
        default=8,
        help="frames per model call (default 8; raise it on a GPU)",
    )


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"resolution": 768, "interpolation": "nearest", "rounding": "truncate"},
}
"""Named settings: ``paper`` is hukz18/Stem-Ob-Code's ddpm path (frames resized to SD 2.1's native
768 px with Pillow's NEAREST both ways, decoded pixels truncated to uint8); configs/stemob/paper.yaml."""


def settings_from_args(args: argparse.Namespace) -> InversionSettings:
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})

    def pick(name: str, default: object) -> object:
        value = getattr(args, name, None)
        return value if value is not None else preset.get(name, default)

    return InversionSettings(
        mode=args.mode,
        pretrained=args.pretrained,
        num_steps=args.num_steps,
        inversion_steps=args.inversion_steps,
        resolution=args.resolution if args.short_side else pick("resolution", None),  # type: ignore[arg-type]
        seed=None if args.unseeded else args.seed,
        interpolation=pick("interpolation", "bilinear"),  # type: ignore[arg-type]
        short_side=args.short_side,
        rounding=pick("rounding", "round"),  # type: ignore[arg-type]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemob-invert",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--img_path", required=True, help="an image, a folder of images, or a video"
    )
    parser.add_argument(
        "--output_path", help="output image / folder / video (required unless --report)"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="print the prior's reconstruction PSNR on the input (VAE round trip) instead",
    )
    add_inversion_arguments(parser)
    return parser


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _invert_stream(
    inverter, frames: Iterable[np.ndarray], batch_size: int, total: int | None, desc: str
) -> Iterator[np.ndarray]:
    """Invert frames batch by batch (frames of a batch must share a size), with a progress bar."""
    from tqdm import tqdm

    index = 0
    with tqdm(
        total=total, desc=desc, unit="frame", disable=total is not None and total <= 1
    ) as bar:
        for batch in _batches(frames, batch_size):
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, frame in enumerate(batch):
                by_shape.setdefault(frame.shape, []).append(i)
            out: list[np.ndarray | None] = [None] * len(batch)
            for positions in by_shape.values():
                stack = np.stack([batch[i] for i in positions])
                ids = [(0, index + i, "") for i in positions]
                for i, result in zip(positions, inverter.invert(stack, ids), strict=True):
                    out[i] = result
            index += len(batch)
            bar.update(len(batch))
            yield from out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def main_invert(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise StemobError(f"--batch_size must be >= 1, got {args.batch_size}")
    if not args.report and not args.output_path:
        raise StemobError("--output_path is required (or pass --report)")
    settings = settings_from_args(args)
    source = Path(args.img_path)
    if not source.exists():
        raise StemobError(f"--img_path {source} does not exist")
    if args.report:
        settings = InversionSettings(**{**settings.to_dict(), "inversion_steps": 0})
    from stemob.inversion.inverter import Inverter

    inverter = Inverter(settings, device=args.device, dtype=args.dtype)
    if source.is_dir():
        files = media.list_images(source)
        frames = (media.read_image(f) for f in files)
        results = _invert_stream(inverter, frames, args.batch_size, len(files), "inverting")
        if args.report:
            _print_report(source, (media.read_image(f) for f in files), results, settings)
            return
        out_dir = Path(args.output_path)
        for file, result in zip(files, results, strict=True):
            media.write_image(out_dir / file.name, result)
        print(f"wrote {len(files)} inverted images to {out_dir}")
    elif media.is_video(source):
        frames, fps, count = media.read_video(source)
        if args.report:
            original, _, _ = media.read_video(source)
            results = _invert_stream(inverter, frames, args.batch_size, count, "inverting")
            _print_report(source, original, results, settings)
            return
        writer = media.VideoWriter(args.output_path, fps)
        written = 0
        for result in _invert_stream(inverter, frames, args.batch_size, count, "inverting"):
            writer.write(result)
            written += 1
        writer.close()
        print(f"wrote {written} inverted frames to {args.output_path}")
    else:
        image = media.read_image(source)
        result = inverter.invert(image[None], [(0, 0, "")])[0]
        if args.report:
            _print_report(source, [image], [result], settings)
            return
        out = Path(args.output_path)
        if out.is_dir():
            out = out / source.name
        media.write_image(out, result)
        print(f"wrote {out}")


def _print_report(
    source: Path,
    originals: Iterable[np.ndarray],
    reconstructions: Iterable[np.ndarray],
    settings: InversionSettings,
) -> None:
    values = [psnr(a, b) for a, b in zip(originals, reconstructions, strict=True)]
    finite = [v for v in values if np.isfinite(v)] or [float("inf")]
    print(f"prior {settings.pretrained!r}: VAE round trip of {len(values)} frame(s) from {source}")
    print(
        f"  reconstruction PSNR: mean {np.mean(finite):.2f} dB, min {np.min(finite):.2f} dB, "
        f"max {np.max(finite):.2f} dB"
    )
    print(
        "  (>= 26 dB: the prior keeps the scene's structure; lower: consider fine-tuning it on your frames)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stemob-invert``."""
    return run_cli(main_invert, argv, "stemob-invert")


if __name__ == "__main__":
    sys.exit(main())
