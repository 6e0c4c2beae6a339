"""How close ACT's paper-config inference runs to this CPU's matrix-multiply peak.

One action chunk (B=1, latent z = 0) of ``policies.act.paper_config`` (ResNet-18, hidden 512,
feed-forward 3200, 4 encoder / 7 decoder layers, chunk 100) for two 84 px cameras, state 9, action
7 (the shapes of ``bench_policy_reference.py``): its floating-point operations counted by
``torch.utils.flop_counter`` (per top-level module: backbone, encoder, decoder), its median time,
and the median time of a float32 matrix multiply of the decoder's feed-forward shape (100 x 512 x
3200), whose rate is taken as the peak. ``floor_ms`` = FLOPs / peak: no implementation that does
the same arithmetic in float32 runs faster, so a target below it needs fewer operations (or
another precision), not a better kernel.

    OMP_NUM_THREADS=1 python benchmarks/bench_act_roofline.py [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from results_io import publish  # benchmarks/results_io.py (run as a script)
from torch.utils.flop_counter import FlopCounterMode

from policies import make_policy
from policies.act import paper_config
from policies.testing import batch_stats, synthetic_batch

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--image", type=int, default=84)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    shapes = {"camera0_image": [3, args.image, args.image], "camera1_image": [3, args.image, args.image],
              "robot_state": [9]}  # fmt: skip
    cfg = paper_config(shapes, 7)
    batch = synthetic_batch(shapes, 7, 8, cfg.n_obs_steps, cfg.horizon)
    policy = make_policy("act", cfg, stats=batch_stats(batch)).eval()
    obs = {k: v[:1] for k, v in batch["obs"].items()}

    for p in policy.parameters():
        p.requires_grad_(False)  # the counter's module tracker hooks tensors that need grad
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            policy.forward_model(obs)
        per_module = counter.get_flop_counts()
        total = counter.get_total_flops()
        parts = {
            name: sum(per_module.get(f"ACTPolicy.{name}", {}).values())
            for name in ("backbones", "encoder", "decoder", "action_head")
        }
    with torch.inference_mode():
        chunk_ms = median_ms(lambda: policy.forward_model(obs), args.repeats)
        a, b = torch.randn(100, 512), torch.randn(512, 3200)
        gemm_ms = median_ms(lambda: a @ b, args.repeats * 20)
    peak = 2 * 100 * 512 * 3200 / (gemm_ms / 1000)
    result = {
        "gflops_per_chunk": total / 1e9,
        "gflops_by_part": {k: v / 1e9 for k, v in parts.items()},
        "chunk_ms": chunk_ms,
        "achieved_gflops_per_s": total / (chunk_ms / 1000) / 1e9,
        "gemm_peak_gflops_per_s": peak / 1e9,
        "floor_ms": total / peak * 1000,
    }
    publish(result, torch.get_num_threads(), str(RESULTS / "act_roofline.json"))


if __name__ == "__main__":
    main()
