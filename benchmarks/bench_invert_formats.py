"""Stem-OB cache building per format, side by side in one run: the same frames as robomimic HDF5,
a LeRobot v3.0 video dataset and an episode folder (PNG), inverted with the embedded prior.

Per format, the median over ``--repeats`` of: building the cache from scratch (read / decode +
invert + write), and the ``--export`` copy in the source's format (for LeRobot: decode + H.264
encode, yuv444p crf 0); the order of the formats rotates between repeats. Ratios are per frame against the HDF5 path; the LeRobot export's round
trip error (uint8 levels, against the cache) is reported too.

    OMP_NUM_THREADS=1 python benchmarks/bench_invert_formats.py [--episodes 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from results_io import publish  # benchmarks/results_io.py (run as a script)

from stemob.data.export import export_inverted
from stemob.data.folder import write_folder
from stemob.data.frames import frame_source
from stemob.data.lerobot import LeRobotReader, write_lerobot
from stemob.data.robomimic import RobomimicReader, write_robomimic
from stemob.inversion.dataset_cache import build_cache
from stemob.inversion.settings import InversionSettings

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="data/lift_cube_joint/demos_200.hdf5",
                        help="recorded demos to take the frames from")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    reader = RobomimicReader(args.source, obs_keys=["front_image", "wrist_image", "eef_pos"])
    episodes = [reader.read(i) for i in range(args.episodes)]
    frames = sum(len(e) for e in episodes) * 2  # two cameras
    settings = InversionSettings()
    root = Path(tempfile.mkdtemp(prefix="bench_formats_"))
    sources = {"robomimic": write_robomimic(root / "demos.hdf5", episodes)}
    renamed = [reader.read(i) for i in range(args.episodes)]
    for e in renamed:
        e.obs = {"observation.images.front": e.obs["front_image"],
                 "observation.images.wrist": e.obs["wrist_image"], "observation.state": e.obs["eef_pos"]}  # fmt: skip
    sources["lerobot"] = write_lerobot(
        root / "lerobot", renamed, fps=20.0, pix_fmt="yuv444p", crf=0
    )
    sources["folder"] = write_folder(
        root / "folder", [reader.read(i) for i in range(args.episodes)]
    )
    out: dict[str, dict[str, float]] = {n: {"cache_s": [], "export_s": []} for n in sources}
    errors: list[float] = []
    for repeat in range(args.repeats):
        names = list(sources)
        for name in names[repeat % 3 :] + names[: repeat % 3]:  # rotate: no format always first
            path = sources[name]
            started = time.perf_counter()
            cache = build_cache(path, settings, cache_dir=root / f"cache_{name}_{repeat}",
                                frames=frame_source(path), progress=False)  # fmt: skip
            out[name]["cache_s"].append(time.perf_counter() - started)
            target = root / f"export_{name}_{repeat}"
            started = time.perf_counter()
            export_inverted(path, cache, target, progress=False)
            out[name]["export_s"].append(time.perf_counter() - started)
            if name == "lerobot" and repeat == 0:
                back = LeRobotReader(target)
                with h5py.File(cache, "r") as h5:
                    for i in range(args.episodes):
                        got = back.read(i).obs["observation.images.front"].astype(int)
                        want = h5["data"][f"demo_{i}"]["obs"]["observation.images.front"][()]
                        errors.append(float(np.abs(got - want).mean()))
    summary: dict[str, object] = {
        "frames": frames,
        "episodes": args.episodes,
    }
    base = statistics.median(out["robomimic"]["cache_s"])
    for name, times in out.items():
        cache_s, export_s = (
            statistics.median(times["cache_s"]),
            statistics.median(times["export_s"]),
        )
        summary[name] = {
            "cache_ms_per_frame": 1000 * cache_s / frames,
            "export_ms_per_frame": 1000 * export_s / frames,
            "cache_ratio_vs_hdf5": cache_s / base,
            "cache_plus_export_ratio_vs_hdf5_cache_plus_export": (cache_s + export_s)
            / (base + statistics.median(out["robomimic"]["export_s"])),
        }
    summary["lerobot_export_mean_abs_error"] = statistics.mean(errors)
    shutil.rmtree(root)
    publish(summary, args.threads, str(RESULTS / "invert_formats.json"))


if __name__ == "__main__":
    main()
