"""Policy speed on CPU: training samples/s and inference latency per action chunk.

For each policy and config: a training step is ``compute_loss`` + backward + AdamW step (+ the EMA
update for Diffusion Policy, as in its recipe) on a synthetic batch in the batch contract;
inference is ``predict_action`` on one observation window (B=1, observation features computed
once per chunk, inference mode). Figures are medians over ``--repeats`` timed runs after warm-up.

    python benchmarks/bench_policies.py                          # small configs, 1 thread
    python benchmarks/bench_policies.py --configs small paper --out policies.json
    python benchmarks/bench_policies.py --policies diffusion --ddim-steps 10 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import torch

from policies import make_policy
from policies.optim import EMA, make_optimizer
from policies.testing import batch_stats, synthetic_batch


def build(
    name: str, kind: str, shapes: dict[str, list[int]], action_dim: int, denoiser: str
) -> Any:
    overrides: dict[str, Any] = {}
    if name == "diffusion":
        from policies.diffusion import paper_config, small_config

        overrides["denoiser"] = denoiser
        if denoiser == "transformer" and kind == "small":
            overrides |= {"transformer_layers": 4, "transformer_dim": 128}
    else:
        from policies.act import paper_config, small_config
    factory = small_config if kind == "small" else paper_config
    return factory(shapes, action_dim, **overrides)


def timed(fn: Any, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench_one(name: str, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    shapes = {f"camera{i}_image": [3, args.image, args.image] for i in range(args.cameras)}
    if args.state_dim:
        shapes["robot_state"] = [args.state_dim]
    cfg = build(name, kind, shapes, args.action_dim, args.denoiser)
    batch_size = args.batch or (64 if name == "diffusion" else 8)
    batch = synthetic_batch(shapes, args.action_dim, batch_size, cfg.n_obs_steps, cfg.horizon)
    torch.manual_seed(0)
    policy = make_policy(name, cfg, stats=batch_stats(batch))
    params = sum(p.numel() for p in policy.parameters())
    optimizer = make_optimizer(policy)
    ema = (
        EMA(policy, power=cfg.ema_power, max_decay=cfg.ema_max_decay)
        if name == "diffusion"
        else None
    )

    def train_step() -> None:
        loss, _ = policy.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step(policy)

    policy.train()
    train = timed(train_step, args.repeats, args.warmup)
    model = ema.model if ema is not None else policy
    model.eval()
    obs = {k: v[:1] for k, v in batch["obs"].items()}
    kwargs: dict[str, Any] = {}
    if name == "diffusion":
        kwargs = {"scheduler": "ddim", "num_inference_steps": args.ddim_steps}
    if args.compile:
        if name == "diffusion":
            model.denoiser = torch.compile(model.denoiser)
        else:
            model.forward_model = torch.compile(model.forward_model)
    infer = timed(lambda: model.predict_action(obs, **kwargs), args.infer_repeats, args.warmup + 1)
    step_s = statistics.median(train)
    return {
        "policy": name,
        "config": kind,
        "params": params,
        "batch": batch_size,
        "train_step_ms": round(step_s * 1e3, 2),
        "train_samples_per_s": round(batch_size / step_s, 1),
        "infer_ms_per_chunk": round(statistics.median(infer) * 1e3, 2),
        "infer_ms_min": round(min(infer) * 1e3, 2),
        "chunk": cfg.n_action_steps,
        **(
            {"ddim_steps": args.ddim_steps, "denoiser": cfg.denoiser} if name == "diffusion" else {}
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", nargs="+", default=["diffusion", "act"])
    parser.add_argument("--configs", nargs="+", default=["small"], choices=["small", "paper"])
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--image", type=int, default=84, help="square image side")
    parser.add_argument("--state-dim", type=int, default=9)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--batch", type=int, default=0, help="0: 64 for DP, 8 for ACT")
    parser.add_argument("--ddim-steps", type=int, default=10)
    parser.add_argument(
        "--denoiser",
        default="unet",
        choices=["unet", "transformer"],
        help="Diffusion Policy denoiser (small transformer: 4 layers, 128 wide)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed training steps")
    parser.add_argument("--infer-repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="torch.compile the inference path")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rows = []
    for kind in args.configs:
        for name in args.policies:
            row = bench_one(name, kind, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_policies.py " + " ".join(argv or []),
        "setup": {
            "cameras": args.cameras,
            "image": args.image,
            "state_dim": args.state_dim,
            "action_dim": args.action_dim,
        },
        "results": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
