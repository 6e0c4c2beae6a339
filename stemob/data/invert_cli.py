"""``stemob-invert-dataset``: build the Stem-OB cache of a dataset in any format stemob reads.

    stemob-invert-dataset --dataset demos.hdf5 --inversion_steps 15
    stemob-invert-dataset --dataset data/my_lerobot_dataset        # LeRobot v2.1 / v3.0
    stemob-invert-dataset --dataset data/rlbench/open_drawer/variation0/episodes --reader rlbench
    stemob-invert-dataset --dataset /readonly/demos.hdf5 --cache_dir ~/stemob-cache --store_latents
    accelerate launch --cpu --num_processes 2 -m stemob.data.invert_cli --dataset demos.hdf5

The cache (``<name>.stemob-<digest>.hdf5``, beside the dataset) holds the inverted frames of every
image key; ``train.py dataset.path=<the dataset> stemob=ddpm`` uses it. The source is only read.

A killed run resumes where it stopped when started again with the same settings; a finished cache
is reused, and a cache made with other settings is never reused (each settings has its own file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stemob.errors import StemobError, run_cli
from stemob.inversion.cli import add_inversion_arguments, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stemob-invert-dataset",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="robomimic HDF5 file, LeRobot dataset, RLBench episodes or episode folders",
    )
    parser.add_argument(
        "--reader", default="auto", help="robomimic | lerobot | rlbench | folder | auto (detect)"
    )
    parser.add_argument(
        "--cache_dir",
        default=None,
        help="write the cache here instead of beside the dataset (e.g. when that folder is read-only)",
    )
    parser.add_argument(
        "--keys",
        nargs="+",
        default=None,
        help="image keys to invert, as the reader names them (default: every image key)",
    )
    parser.add_argument(
        "--store_latents", action="store_true", help="also store the inverted latents (fp16)"
    )
    parser.add_argument(
        "--export",
        default=None,
        metavar="OUT",
        help="also write a complete inverted copy in the source's format (stemob/data/export.py)",
    )
    parser.add_argument(
        "--crf", type=int, default=0, help="H.264 quality of exported LeRobot videos (default 0)"
    )
    parser.add_argument(
        "--pix_fmt", default="yuv444p", help="pixel format of exported videos (default yuv444p)"
    )
    add_inversion_arguments(parser)
    parser.set_defaults(device="auto")
    return parser


def main_build(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise StemobError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.export and Path(args.export).exists():  # before any work
        raise StemobError(f"--export {args.export} already exists: choose another path")
    from stemob.data.frames import frame_source
    from stemob.inversion.dataset_cache import build_cache

    path = build_cache(
        args.dataset,
        settings_from_args(args),
        cache_dir=args.cache_dir,
        keys=args.keys,
        store_latents=args.store_latents,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        frames=frame_source(args.dataset, args.reader),
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"Stem-OB cache: {path}")
        if args.export:
            from stemob.data.export import export_inverted

            out = export_inverted(args.dataset, path, args.export, reader=args.reader,
                                  crf=args.crf, pix_fmt=args.pix_fmt)  # fmt: skip
            print(f"inverted copy: {out}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stemob-invert-dataset``."""
    return run_cli(main_build, argv, "stemob-invert-dataset")


if __name__ == "__main__":
    sys.exit(main())
