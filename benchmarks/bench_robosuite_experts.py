"""Success of the robosuite scripted experts (envs/robosuite/experts.py) on seeds 0..N-1.

    MUJOCO_GL=egl python benchmarks/bench_robosuite_experts.py --seeds 100 \
        [--action-noise 0.2] [--out benchmarks/results/robosuite_experts.json]

Each episode is ``envs.record.run_episode`` (reset(seed), the expert through ``env.step``) in
the env of ``default_env_args(task)`` without cameras, with ``--action-noise`` the DART-style
noise ``envs.record`` records with (``task.demos.action_noise``); prints per task the success rate, the
failed seeds, the median episode length and the wall time per episode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from envs.record import make_env_from_args, run_episode
from envs.robosuite.experts import EXPERTS, default_env_args


def measure(task: str, seeds: int, action_noise: float = 0.0) -> dict:
    env = make_env_from_args(default_env_args(task), cameras=[])
    lengths, failed, started = [], [], time.perf_counter()
    try:
        for seed in range(seeds):
            episode, success = run_episode(env, seed, action_noise=action_noise)
            lengths.append(len(episode))
            if not success:
                failed.append(seed)
    finally:
        env.close()
    return {
        "task": task, "seeds": seeds, "action_noise": action_noise, "success_rate": 1 - len(failed) / seeds,
        "failed_seeds": failed, "median_steps": statistics.median(lengths),
        "s_per_episode": (time.perf_counter() - started) / seeds,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--tasks", nargs="+", default=sorted(EXPERTS))
    parser.add_argument("--action-noise", type=float, default=0.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = [measure(task, args.seeds, args.action_noise) for task in args.tasks]
    for r in results:
        print(f"{r['task']} (noise {r['action_noise']}): {100 * r['success_rate']:.0f} % of {r['seeds']} seeds "
              f"(failed {r['failed_seeds']}), median {r['median_steps']} steps, "
              f"{r['s_per_episode']:.2f} s/episode")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
