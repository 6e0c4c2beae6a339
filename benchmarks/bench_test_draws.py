"""Cost of Stem-OB's test-time ensemble: one ``PolicyRunner.act`` with ``test_draws`` = 1, 2, 4
(each frame inverted M times with the embedded prior, the policy run on the M windows in one
batch, actions averaged), side by side in one process.

    MUJOCO_GL=egl python benchmarks/bench_test_draws.py [--policy diffusion|act] [--repeats 15]
        [--threads 1] [--out benchmarks/results/test_draws.json]

The policy is the CPU config (``diffusion_small`` / ``act_small`` shapes: two 96 px cameras and
the end-effector state, untrained weights; cost does not depend on them), Stem-OB ddpm k = 15 of
N = 50. Each call sees two new frames (a fresh step), so both cameras are inverted M times per
call. Medians over the repeats after two warm-up calls; the draws alternate per repeat.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from results_io import publish  # benchmarks/results_io.py (run as a script)

from policies import make_policy
from policies.testing import batch_stats, synthetic_batch
from stemob.deploy import PolicyRunner
from stemob.inversion.settings import InversionSettings

SHAPES = {"front_image": [3, 96, 96], "wrist_image": [3, 96, 96], "eef_pos": [3]}
DRAWS = (1, 2, 4)


def build(policy: str) -> object:
    if policy == "act":
        from policies.act.config import small_config
    else:
        from policies.diffusion.config import small_config
    config = small_config(SHAPES, 7)
    batch = synthetic_batch(SHAPES, 7, 4, config.n_obs_steps, config.horizon)
    return make_policy(policy, config, stats=batch_stats(batch), stemob=InversionSettings())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=("diffusion", "act"), default="diffusion")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = build(args.policy)
    runners = {m: PolicyRunner(policy, test_draws=m) for m in DRAWS}
    rng = np.random.default_rng(0)
    times: dict[int, list[float]] = {m: [] for m in DRAWS}
    for repeat in range(args.repeats + 2):
        for m, runner in runners.items():
            runner.reset(episode=repeat)
            images = {
                k: rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
                for k in SHAPES
                if k.endswith("image")
            }
            runner.act(images, {"eef_pos": np.zeros(3, np.float32)})
            if repeat >= 2:
                times[m].append(runner.latency["last_total_ms"])
    medians = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "policy": args.policy,
        "ms_per_act": medians,
        "ratio_to_one_draw": {m: medians[m] / medians[1] for m in DRAWS},
        "repeats": args.repeats,
    }
    publish(result, args.threads, args.out)


if __name__ == "__main__":
    main()
