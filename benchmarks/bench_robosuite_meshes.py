"""robosuite Lift with coarser visual meshes (``visual_mesh_cell``, envs/robosuite/meshes.py):
faces drawn, render time and pixel change against the full meshes, per cell size, and a figure.

    MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/bench_robosuite_meshes.py [--seeds 8] \
        [--out benchmarks/results/robosuite_meshes.json] [--figure envs/robosuite/visual_meshes.png]

Frames are the reset frames of seeds 100000.. (the evaluation's seeds; a reset is reproducible,
robosuite's stepping is not bit-for-bit across env instances) of ``agentview`` and
``robot0_eye_in_hand`` at 84 px (every build draws the same cube: the backend seeds robosuite's
build). Render time: median of 5 x 20 ``agentview`` renders. Pixel change: mean |difference| in
0-255 units over all pixels and channels, and the share of pixels off by more than 16.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CELLS = (None, 0.002, 0.004, 0.005, 0.006, 0.01)
CAMERAS = ("agentview", "robot0_eye_in_hand")


def views(cell: float | None, seeds: int, size: int = 84) -> tuple[np.ndarray, float, object]:
    """Reset frames (seed, camera side by side), median agentview render ms, mesh stats."""
    from envs.robosuite.env import RobosuiteEnv

    env = RobosuiteEnv("Lift", {"robots": "Panda"}, cameras=CAMERAS, image_size=size,
                       visual_mesh_cell=cell)  # fmt: skip
    frames = []
    for s in range(seeds):
        obs, _ = env.reset(seed=100000 + s)
        frames.append(np.concatenate([obs[f"{c}_image"] for c in CAMERAS], axis=1))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            env.env.sim.render(size, size, camera_name="agentview")
        times.append((time.perf_counter() - start) / 20 * 1000)
    stats = env.mesh_stats
    env.close()
    return np.stack(frames), statistics.median(times), stats


def save_figure(full: np.ndarray, coarse: np.ndarray, cell: float, out: Path) -> None:
    """Full meshes | clustered | 8 x |difference|, both cameras, first two seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(9, 3.4))
    for row in range(2):
        diff = np.clip(8 * np.abs(coarse[row].astype(int) - full[row]), 0, 255).astype(np.uint8)
        for ax, img, title in zip(axes[row], (full[row], coarse[row], diff),
                                  ("full meshes", f"visual_mesh_cell={cell}", "8 x |difference|"),
                                  strict=True):  # fmt: skip
            ax.imshow(img)
            ax.set_title(f"{title}, seed {100000 + row}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--figure-cell", type=float, default=0.005)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/robosuite_meshes.json"))
    parser.add_argument("--figure", default=str(ROOT / "envs/robosuite/visual_meshes.png"))
    args = parser.parse_args()
    cells = sorted({*CELLS, args.figure_cell}, key=lambda c: -1 if c is None else c)
    measured = {cell: views(cell, args.seeds) for cell in cells}
    full, full_ms, _ = measured[None]
    rows = []
    print(
        "| visual_mesh_cell | faces drawn | agentview render ms | ratio | mean abs change | > 16 |"
    )
    for cell, (frames, ms, stats) in measured.items():
        diff = np.abs(frames.astype(int) - full)
        row = {
            "cell": cell, "render_ms": ms, "speedup": full_ms / ms,
            "faces_before": None if stats is None else stats.faces_before,
            "faces_after": None if stats is None else stats.faces_after,
            "mean_abs_change": float(diff.mean()), "share_over_16": float((diff.max(-1) > 16).mean()),
        }  # fmt: skip
        rows.append(row)
        faces = "all" if stats is None else f"{stats.faces_after} / {stats.faces_before}"
        print(f"| {cell or 'off'} | {faces} | {ms:.1f} | {row['speedup']:.2f}x | "
              f"{row['mean_abs_change']:.2f} | {100 * row['share_over_16']:.2f} % |")  # fmt: skip
    save_figure(full, measured[args.figure_cell][0], args.figure_cell, Path(args.figure))
    result = {
        "rows": rows, "seeds": args.seeds, "image_size": 84,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "MUJOCO_GL=egl OMP_NUM_THREADS=1 python benchmarks/bench_robosuite_meshes.py",
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
