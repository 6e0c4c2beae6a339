"""``stemob-data``: inspect and convert demonstration datasets.

    stemob-data info demos.hdf5
    stemob-data info ~/rlbench_data/open_drawer
    stemob-data convert ~/robot_runs demos.hdf5 --key_map front=front_image
    stemob-data convert lerobot_ds/ demos.hdf5 --no_next_obs

Formats are detected: robomimic HDF5, RLBench episode folders, LeRobot v2.1/v3.0 and the plain
real-robot folder format (stemob/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from stemob.data.detect import FORMATS, open_reader
from stemob.errors import StemobError, run_cli

PROG = "stemob-data"


def _key_map(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            raise StemobError(f"--key_map expects SOURCE=TARGET pairs, got {pair!r}")
        out[source] = target
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="print the format, episodes, frames and keys as JSON")
    info.add_argument("path")
    info.add_argument("--reader", default="auto", choices=("auto", *FORMATS))
    convert = commands.add_parser("convert", help="convert a dataset to robomimic HDF5")
    convert.add_argument("source")
    convert.add_argument("target", help="output .hdf5 file")
    convert.add_argument("--reader", default="auto", choices=("auto", *FORMATS))
    convert.add_argument("--key_map", nargs="+", default=[], metavar="SOURCE=TARGET")
    convert.add_argument(
        "--no_next_obs", action="store_true", help="omit next_obs (halves the file size)"
    )
    convert.add_argument("--compression", default=None, choices=("gzip", "lzf"))
    convert.add_argument("--overwrite", action="store_true")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and run the command (errors propagate as StemobError)."""
    args = build_parser().parse_args(argv)
    if args.command == "info":
        print(json.dumps(open_reader(args.path, args.reader).info(), indent=2))
        return
    from stemob.data.convert import convert_to_robomimic

    path = convert_to_robomimic(
        args.source,
        args.target,
        reader=args.reader,
        key_map=_key_map(args.key_map),
        next_obs=not args.no_next_obs,
        compression=args.compression,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stemob-data``; a user error prints one line and exits with status 2."""
    return run_cli(run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())
