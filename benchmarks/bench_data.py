"""Data-loading throughput for a Diffusion Policy batch (B=64, 2 obs steps, horizon 16, two 96x96
cameras) from each reader, single process and with DataLoader workers, next to robomimic's own
``SequenceDataset`` on the same file where robomimic is installed.

    python benchmarks/bench_data.py                       # all formats, 20 episodes x 100 steps
    python benchmarks/bench_data.py --formats robomimic --episodes 50 --workers 2 --out r.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stemob.data.dataset import DatasetConfig, DemoDataset
from stemob.data.episodes import Episode

FORMATS = ("robomimic", "robomimic-lazy", "folder", "rlbench", "lerobot")


def synthetic_episodes(count: int, length: int, size: int, seed: int = 0) -> list[Episode]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        base = rng.integers(0, 256, (length, size // 8, size // 8, 3), dtype=np.uint8)
        frames = np.repeat(np.repeat(base, 8, 1), 8, 2)  # blocky: realistic PNG / mp4 sizes
        out.append(
            Episode(
                obs={
                    "front_rgb": frames,
                    "wrist_rgb": frames[:, ::-1].copy(),
                    "joint_positions": rng.normal(size=(length, 7)).astype(np.float32),
                    "gripper_open": rng.integers(0, 2, (length, 1)).astype(np.float32),
                    "gripper_pose": rng.normal(size=(length, 7)).astype(np.float32),
                },
                actions=rng.normal(size=(length, 8)).astype(np.float32),
                name=f"demo_{i}",
            )
        )
    return out


def write_format(fmt: str, episodes: list[Episode], folder: Path) -> Path:
    if fmt.startswith("robomimic"):
        from stemob.data.robomimic import write_robomimic

        path = folder / "demos.hdf5"
        return path if path.exists() else write_robomimic(path, episodes)
    if fmt == "folder":
        from stemob.data.folder import write_folder

        return write_folder(folder / "runs", episodes, fps=10)
    if fmt == "rlbench":
        from stemob.data.rlbench import write_rlbench

        return write_rlbench(folder / "rlbench", episodes, task="bench")
    from stemob.data.lerobot import write_lerobot

    return write_lerobot(folder / "lerobot", episodes, fps=10, version="v3.0")


def time_batches(next_batch, seconds: float, batch_size: int) -> float:
    next_batch()  # warm-up (worker start, first handles)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next_batch()
        count += 1
    return count * batch_size / (time.perf_counter() - start)


def cycle(loader):
    while True:
        yield from loader


def bench_ours(path: Path, fmt: str, args) -> dict:
    start = time.perf_counter()
    config = DatasetConfig(
        path=str(path),
        n_obs_steps=2,
        horizon=16,
        in_memory=fmt != "robomimic-lazy",
        obs_keys=["front_rgb", "wrist_rgb", "joint_positions", "gripper_open"],
    )
    dataset = DemoDataset(config)
    load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    single = time_batches(
        lambda: dataset.get_batch(rng.integers(0, len(dataset), args.batch)),
        args.seconds,
        args.batch,
    )
    result = {"load_s": round(load_s, 2), "samples_per_s": round(single)}
    if args.workers:
        it = cycle(dataset.loader(args.batch, num_workers=args.workers, seed=0))
        result[f"samples_per_s_{args.workers}_workers"] = round(
            time_batches(lambda it=it: next(it), args.seconds, args.batch)
        )
        del it
    return result


def bench_robomimic(path: Path, args) -> dict | None:
    try:
        import robomimic.utils.dataset as rm_dataset
        import robomimic.utils.obs_utils as obs_utils
    except ImportError as error:
        return {"skipped": f"robomimic not importable: {error}"}
    obs_utils.initialize_obs_utils_with_obs_specs(
        {"obs": {"low_dim": ["joint_positions", "gripper_open"], "rgb": ["front_rgb", "wrist_rgb"]}}
    )
    out = {}
    for mode in ("all", "low_dim"):
        dataset = rm_dataset.SequenceDataset(
            hdf5_path=str(path),
            obs_keys=("front_rgb", "wrist_rgb", "joint_positions", "gripper_open"),
            dataset_keys=("actions",),
            frame_stack=2,
            seq_length=15,  # robomimic returns frame_stack - 1 + seq_length = 16 actions
            pad_frame_stack=True,
            pad_seq_length=True,
            get_pad_mask=True,
            hdf5_cache_mode=mode,
            load_next_obs=False,
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True)
        it = cycle(loader)
        out[f"cache_{mode}_samples_per_s"] = round(
            time_batches(lambda it=it: next(it), args.seconds, args.batch)
        )
        if args.workers:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_size=args.batch,
                shuffle=True,
                num_workers=args.workers,
                persistent_workers=True,
            )
            it = cycle(loader)
            out[f"cache_{mode}_samples_per_s_{args.workers}_workers"] = round(
                time_batches(lambda it=it: next(it), args.seconds, args.batch)
            )
            del it
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--no_robomimic", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    episodes = synthetic_episodes(args.episodes, args.length, args.size)
    results: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d"),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "formats": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for fmt in args.formats:
            start = time.perf_counter()
            path = write_format(fmt, episodes, folder)
            write_s = time.perf_counter() - start
            results["formats"][fmt] = {"write_s": round(write_s, 2), **bench_ours(path, fmt, args)}
            print(fmt, json.dumps(results["formats"][fmt]), flush=True)
        if not args.no_robomimic:
            path = write_format("robomimic", episodes, folder)
            results["robomimic_sequence_dataset"] = bench_robomimic(path, args)
            print("robomimic SequenceDataset", json.dumps(results["robomimic_sequence_dataset"]))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
