"""Latency of one GENIMA decision on this CPU: the drawer's 10 DDIM steps on one tiled frame
(VAE encode + UNet x 10 + VAE decode), then the controller's chunk; and the drawer's training
step time on cached latents.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/bench_genima_agent.py \
        --drawer outputs/genima/drawer_lift_cube --controller outputs/genima/controller_lift_cube_s0 \
        [--repeats 20] [--out benchmarks/results/genima_agent.json]

Frames come from the drawer's GENIMA dataset (held-out demo). Medians over the repeats after two
warm-up calls; torch threads as set by ``--threads``. ``texture_view_ms``: what
``genima_agent.background=texture`` adds per decision (finding the drawn spheres by colour and
putting them on a random texture, every view).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from results_io import publish  # benchmarks/results_io.py (run as a script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drawer", required=True)
    parser.add_argument("--controller", required=True)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import h5py

    from stemob.deploy import PolicyRunner
    from stemob.evaluation.genima_drawn import drawer_layout
    from stemob.genima.dataset import on_random_texture
    from stemob.genima.drawer import TargetDrawer
    from stemob.genima.spheres import sphere_mask
    from stemob.genima.targets import untile

    cameras, grid = drawer_layout(args.drawer)
    state = torch.load(Path(args.drawer) / "latest" / "train_state.pt", weights_only=True)
    drawer = TargetDrawer.load(Path(args.drawer) / "latest")
    drawer.denoiser.eval()
    runner = PolicyRunner.from_checkpoint(args.controller)
    with h5py.File(state["settings"]["dataset"], "r") as h5:
        demo = h5["data"][sorted(h5["data"].keys())[-1]]["obs"]
        tiled = demo["tiled_rgb"][:1]
        views = untile(demo["tiled_rgb"][0], len(cameras), grid)
        drawn_views = untile(demo["tiled_target"][0], len(cameras), grid)
        proprio = {k: demo[k][0] for k in ("joint_positions", "gripper_open")}
        clean, cond = (
            drawer.encode(demo["tiled_target"][:16]),
            drawer.encode(demo["tiled_rgb"][:16]),
        )

    def decide() -> tuple[float, float]:
        started = time.perf_counter()
        drawn = drawer.draw(tiled, seed=0)[0]
        middle = time.perf_counter()
        obs = {
            f"{c}_target": v
            for c, v in zip(cameras, untile(drawn, len(cameras), grid), strict=True)
        }
        runner.reset()
        runner.act(obs, proprio)
        return middle - started, time.perf_counter() - middle

    def texture_view() -> float:
        started = time.perf_counter()
        for i, (drawn, seen) in enumerate(zip(drawn_views, views, strict=True)):
            on_random_texture(drawn, sphere_mask(drawn, seen), 0, view=i)
        return time.perf_counter() - started

    optimizer = torch.optim.AdamW(drawer.trainable(), lr=1e-5)

    def train_step() -> float:
        started = time.perf_counter()
        loss = drawer.loss_from_latents(clean, cond)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started

    for _ in range(2):
        decide()
        train_step()
    times = [decide() for _ in range(args.repeats)]
    steps = [train_step() for _ in range(args.repeats)]
    textures = [texture_view() for _ in range(args.repeats)]
    result = {
        "drawer_ms": 1000 * statistics.median(t[0] for t in times),
        "controller_ms": 1000 * statistics.median(t[1] for t in times),
        "decision_ms": 1000 * statistics.median(sum(t) for t in times),
        "texture_view_ms": 1000 * statistics.median(textures),
        "num_inference_steps": drawer.config.num_inference_steps,
        "tiled_frame": list(tiled.shape[1:]),
        "drawer_train_step_ms_batch16": 1000 * statistics.median(steps),
        "drawer_train_frames_per_s": 16 / statistics.median(steps),
    }
    publish(result, args.threads, args.out)


if __name__ == "__main__":
    main()
