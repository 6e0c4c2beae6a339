"""Training step time on CPU, split into data, forward + backward and optimiser (+ EMA).

Runs the real trainer (stemob.training) for ``--steps`` steps of the README's main-command config
(small Diffusion Policy on the Stem-OB cache of the lift_cube demonstrations, recorded and inverted
first if missing) and reads the per-step timings it logs. Medians over the log windows after the
first (warm-up) one.

    python benchmarks/bench_train.py                       # 300 steps, torch's default threads
    python benchmarks/bench_train.py --steps 200 --threads 1 stemob=none
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from results_io import publish  # benchmarks/results_io.py (run as a script)

os.environ.setdefault("MUJOCO_GL", "egl")

REPO = Path(__file__).resolve().parents[1]
KEYS = ("time/data_ms", "time/forward_backward_ms", "time/optimizer_ms", "train/samples_per_s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/train.json"))
    parser.add_argument("overrides", nargs="*", help="hydra overrides of configs/train.yaml")
    args = parser.parse_args(argv)
    if args.steps < 50:  # the medians skip the first 25-step log record (warm-up)
        parser.error(f"--steps must be >= 50 (two 25-step log records), got {args.steps}")

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from stemob.training.loggers import read_log
    from stemob.training.run import train

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"training.steps={args.steps}",
            f"training.threads={args.threads}",
            "training.log_every=25",
            "training.val_every=0",
            "training.checkpoint_every=0",
            "logger=none",
            "evaluation.enabled=false",
            f"run_dir={tmp}/run",
            *args.overrides,
        ]
        with initialize_config_dir(str(REPO / "configs"), version_base="1.3"):
            cfg = OmegaConf.to_container(compose("train", overrides=overrides), resolve=True)
        start = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - start
        records = [r for r in read_log(f"{tmp}/run") if "time/data_ms" in r][1:]
    result = {
        "cpus": os.cpu_count(),
        "steps": args.steps,
        "batch_size": cfg["training"]["batch_size"],
        "overrides": args.overrides,
        "wall_s_including_setup": round(wall, 1),
        **{k: round(statistics.median(r[k] for r in records), 2) for k in KEYS},
    }
    return publish(result, args.threads, args.out)


if __name__ == "__main__":
    main()
