"""Speed of building GENIMA datasets: frames per second of target drawing (2 cameras, 96 px,
procedural backgrounds) and of the whole build with its HDF5 writes.

    MUJOCO_GL=egl python benchmarks/bench_genima.py [--demos 20] [--repeats 3]

Uses ``data/lift_cube_joint/demos_200.hdf5`` (recorded with 20 demos at 96 px if missing). One
process; medians over the repeats.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default=str(ROOT / "data/lift_cube_joint/demos_200.hdf5"))
    args = parser.parse_args()
    from stemob.data.detect import open_reader
    from stemob.genima.dataset import GenimaDatasetConfig, _Textures, build_dataset, build_episode

    source = Path(args.dataset)
    if not source.is_file():
        from envs.record import record

        record("lift_cube", args.demos, source, action_mode="joint_position", progress=False)
    reader = open_reader(source)
    episodes = [reader.read(i) for i in range(min(args.demos, len(reader)))]
    frames = sum(len(e) for e in episodes)
    config = GenimaDatasetConfig()
    drawing, whole = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i, episode in enumerate(episodes):
            build_episode(episode, config, _Textures(None), i, "bench")
        drawing.append(frames / (time.perf_counter() - start))
    with tempfile.TemporaryDirectory() as tmp:  # the whole build: reading, drawing, writing
        subset = Path(tmp) / "subset.hdf5"
        from stemob.data.robomimic import write_robomimic

        write_robomimic(subset, episodes, env_args=reader.env_args, next_obs=False)
        for r in range(args.repeats):
            start = time.perf_counter()
            build_dataset(subset, config, Path(tmp) / f"g{r}.hdf5", progress=False)
            whole.append(frames / (time.perf_counter() - start))
    print(f"{frames} frames ({len(episodes)} demos, 2 cameras at 96 px), {platform.machine()}, "
          f"{os.cpu_count()} cores, {date.today()}")  # fmt: skip
    print(f"drawing targets + backgrounds: {statistics.median(drawing):.0f} frames/s (median)")
    print(f"whole build with HDF5 writes: {statistics.median(whole):.0f} frames/s (median)")


if __name__ == "__main__":
    main()
