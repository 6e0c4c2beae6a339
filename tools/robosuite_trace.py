"""Trace a trained policy's robosuite episodes next to its demos: where it stops, and how that
compares with where every demo closes the gripper.

    MUJOCO_GL=egl python tools/robosuite_trace.py --run outputs/study/robosuite_lift/ro/seed0 \
        --seeds 100000 100001 --out results/study/robosuite_lift/ro/trace_seed0.json

The demos are the run's own training set (``dataset.path`` of its ``config.yaml``) unless
``--dataset`` names another file.

Per episode: success, length, the gripper command and the end-effector height every step, the
lowest height reached and the share of steps with an open-gripper command; per demo file: the
end-effector height at each demo's first closing command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np


def demo_grasp_heights(dataset: str | Path) -> list[float]:
    """End-effector height (m) at each demo's first closing gripper command (action > 0)."""
    with h5py.File(dataset, "r") as f:
        heights = []
        for name in sorted(f["data"], key=lambda n: int(n.split("_")[1])):
            demo = f["data"][name]
            closing = np.flatnonzero(demo["actions"][:, -1] > 0)
            if len(closing):
                heights.append(float(demo["obs/robot0_eef_pos"][int(closing[0]), 2]))
    return heights


def training_dataset(run: str | Path) -> Path:
    """The ``dataset.path`` a training run was trained on (``config.yaml`` in the run or above a
    checkpoint inside it; relative paths from the repo root)."""
    import yaml

    run = Path(run).resolve()
    config = next((d / "config.yaml" for d in (run, *run.parents) if (d / "config.yaml").is_file()),
                  None)  # fmt: skip
    if config is None:
        raise SystemExit(
            f"{run}: no config.yaml in it or above it (not a training run); pass --dataset"
        )
    path = Path(yaml.safe_load(config.read_text())["dataset"]["path"])
    return path if path.is_absolute() else Path(__file__).resolve().parents[1] / path


def trace(run: str | Path, dataset: str | Path, seeds: list[int]) -> list[dict[str, Any]]:
    """Run the policy of ``run`` closed loop in the dataset's env from ``reset(seed)``."""
    from envs.record import make_env_from_args
    from stemob.deploy import PolicyRunner

    with h5py.File(dataset, "r") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
    env = make_env_from_args(env_args)
    runner = PolicyRunner.from_checkpoint(run)
    keys = runner.image_keys
    episodes = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            runner.reset(seed)
            grip, height, success, done = [], [], False, False
            while not done:
                chunk = runner.act(
                    {k: obs[k] for k in keys}, {k: obs[k] for k in runner.state_keys}
                )
                for i, action in enumerate(chunk):
                    if i:
                        runner.observe({k: obs[k] for k in keys},
                                       {k: obs[k] for k in runner.state_keys})  # fmt: skip
                    obs, _, terminated, truncated, info = env.step(action)
                    grip.append(float(action[-1]))
                    height.append(float(obs["robot0_eef_pos"][2]))
                    success = success or bool(info.get("is_success", False))
                    done = terminated or truncated
                    if done:
                        break
            episodes.append({
                "seed": seed, "success": success, "length": len(grip),
                "lowest_eef_z": min(height), "open_command_share": float(np.mean(np.array(grip) < 0)),
                "gripper_command": [round(g, 3) for g in grip],
                "eef_z": [round(z, 4) for z in height],
            })  # fmt: skip
            print(f"seed {seed}: success {success}, {len(grip)} steps, lowest eef z "
                  f"{min(height):.3f} m, open command {100 * episodes[-1]['open_command_share']:.0f} %")  # fmt: skip
    finally:
        env.close()
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a training run or policy checkpoint")
    parser.add_argument("--dataset", default=None, help="default: the run's training set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[100000])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.dataset = args.dataset or training_dataset(args.run)
    heights = demo_grasp_heights(args.dataset)
    print(f"demos close the gripper at eef z {min(heights):.4f}-{max(heights):.4f} m "
          f"(median {np.median(heights):.4f}, {len(heights)} demos)")  # fmt: skip
    result = {"run": str(args.run), "dataset": str(args.dataset),
              "demo_grasp_eef_z": {"min": min(heights), "median": float(np.median(heights)),
                                   "max": max(heights), "demos": len(heights)},
              "episodes": trace(args.run, args.dataset, args.seeds)}  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
