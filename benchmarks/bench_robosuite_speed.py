"""robosuite Lift stepping speed: the backend's fast settings against robosuite's defaults,
llvmpipe's rasterizer threads (``LP_NUM_THREADS``) and the coarser visual meshes
(``visual_mesh_cell``), each setting in a fresh process.

    MUJOCO_GL=egl python benchmarks/bench_robosuite_speed.py [--steps 200] [--size 84] \
        [--repeats 3] [--out benchmarks/results/robosuite_speed.json]

One 84x84 ``agentview`` camera, random OSC actions (``bench_envs.robosuite_steps_per_second``), a
reset every 50 steps (the scripted expert's episode length). ``LP_NUM_THREADS`` is read when the
GL driver starts, so every setting runs in its own subprocess, the settings interleaved per
repeat; the figure is the median over repeats and the ratio is against robosuite's defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESH_CELL = 0.005
"""The ``visual_mesh_cell`` measured (metres): 0.33 / 255 mean pixel change at 84 px (bench_robosuite_meshes.py)."""
SETTINGS = {
    "robosuite's defaults": (False, None, None),
    "fast settings, LP_NUM_THREADS unset": (True, None, None),
    "fast settings, LP_NUM_THREADS=1": (True, "1", None),
    "fast settings, LP_NUM_THREADS=0": (True, "0", None),
    f"fast settings + visual_mesh_cell={MESH_CELL}, LP_NUM_THREADS=1": (True, "1", MESH_CELL),
}
"""name -> (the backend's fast settings, LP_NUM_THREADS (None: as the caller's environment),
``visual_mesh_cell``)."""


def measure(
    fast: bool, lp_threads: str | None, steps: int, size: int, mesh_cell: float | None = None
) -> float:
    """Steps per second of one setting, in a fresh process."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.pop("LP_NUM_THREADS", None)
    if lp_threads is not None:
        env["LP_NUM_THREADS"] = lp_threads
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/benchmarks']\n"
        "from bench_envs import robosuite_steps_per_second as f\n"
        "cell = float(sys.argv[5]) if sys.argv[5] != 'none' else None\n"
        "print(f(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1', 50, cell))"
    )
    args = [sys.executable, "-c", code, str(ROOT), str(steps), str(size), "1" if fast else "0",
            "none" if mesh_cell is None else str(mesh_cell)]  # fmt: skip
    out = subprocess.run(args, env=env, capture_output=True, text=True)
    last = out.stdout.strip().splitlines()[-1:] or [""]
    if out.returncode or last[0] == "None":
        reason = "the robosuite extra is not installed" if last[0] == "None" else out.stderr[-2000:]
        raise SystemExit(f"bench_robosuite_speed: the measuring process failed: {reason}")
    return float(last[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=84)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/robosuite_speed.json"))
    args = parser.parse_args()
    runs: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, (fast, lp, cell) in SETTINGS.items():
            runs[name].append(measure(fast, lp, args.steps, args.size, cell))
    base = statistics.median(runs["robosuite's defaults"])
    rows = {
        name: {"steps_per_s": values, "median": statistics.median(values),
               "ratio": statistics.median(values) / base}
        for name, values in runs.items()
    }  # fmt: skip
    for name, row in rows.items():
        runs_text = ", ".join(f"{v:.1f}" for v in row["steps_per_s"])
        print(f"| {name} | {runs_text} | {row['ratio']:.1f}x |")
    result = {
        "settings": rows, "steps": args.steps, "image_size": args.size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "command": "MUJOCO_GL=egl python benchmarks/bench_robosuite_speed.py",
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
