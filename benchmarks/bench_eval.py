"""Speed of evaluation: episodes per minute on the tabletop lift_cube with a tiny untrained small
Diffusion Policy, with and without test-time Stem-OB inversion, with 1, 2 and 4 envs in lockstep
in this process or each in its own process (``env_processes``), and (``--sharding``) eval.py in
one process against ``accelerate launch --num_processes 2`` on the same benchmark.

    MUJOCO_GL=egl python benchmarks/bench_eval.py [--episodes 8] [--repeats 3] [--image-size 96]
        [--modes lockstep subprocess] [--no-stemob] [--sharding] [--out benchmarks/results/eval.json]

The policy is untrained, so every episode runs the task's full 100 steps (13 planning calls of
8 actions, DDIM 10 steps). Inversion: the embedded prior with ``InversionSettings()`` (ddpm,
k=15 of 50), built once and shared. One torch thread. Figures: median over the repeats of
``episodes / wall time`` of :func:`stemob.evaluation.evaluate` (env construction included), and
of ``episodes / process CPU time`` (steadier when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch

ROOT = Path(__file__).resolve().parents[1]


def build_policy(image_size: int, cameras: tuple[str, ...]):
    """A tiny untrained small-config Diffusion Policy for lift_cube, with its env_args."""
    from envs.record import env_args_of
    from envs.tabletop.env import TabletopEnv
    from policies import make_policy
    from policies.diffusion.config import small_config

    env = TabletopEnv("lift_cube", image_size=image_size, cameras=cameras)
    env_args = env_args_of(env)
    env.close()
    shapes = {f"{c}_image": [3, image_size, image_size] for c in cameras}
    shapes["joint_positions"] = [7]
    shapes["gripper_open"] = [1]
    torch.manual_seed(0)
    return make_policy("diffusion", small_config(shapes, 7), env_args=env_args)


def time_sharding(image_size: int, cameras: tuple[str, ...], episodes: int = 16) -> dict:
    """Wall time of ``eval.py`` (process start included) on 2 factors x ``episodes`` episodes
    with 2 lockstep envs: one process, then ``accelerate launch --cpu --num_processes 2``."""
    import subprocess
    import tempfile

    policy = build_policy(image_size, cameras)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = policy.save(Path(tmp) / "policy")
        args = [
            "eval.py", f"checkpoint={checkpoint}", "benchmark.perturbations=[none,light_color]",
            f"episodes={episodes}", "envs=2", "videos=0", "logger.name=none", "threads=1",
        ]  # fmt: skip
        launch = [
            sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for label, command in (("1 process", [sys.executable]), ("2 ranks", launch)):
            start = time.perf_counter()
            subprocess.run(
                [*command, *args, f"output_dir={tmp}/{label.replace(' ', '_')}"],
                cwd=ROOT, env=env, check=True, capture_output=True,
            )  # fmt: skip
            out[label] = time.perf_counter() - start
            print(f"eval.py, {label}: {out[label]:.1f} s for 2 x {episodes} episodes", flush=True)
    return {"episodes_per_factor": episodes, "factors": 2, "wall_s": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--n-envs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--modes", nargs="+", default=["lockstep", "subprocess"], choices=["lockstep", "subprocess"]
    )
    parser.add_argument("--no-stemob", action="store_true", help="skip the inversion rows")
    parser.add_argument("--sharding", action="store_true", help="also time eval.py on 2 ranks")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/eval.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from stemob.evaluation import evaluate
    from stemob.inversion.inverter import Inverter
    from stemob.inversion.settings import InversionSettings

    cameras = ("front", "wrist")
    policy = build_policy(args.image_size, cameras)
    settings = InversionSettings()
    inverter = Inverter(settings)
    rows = []
    combos = [
        (stemob, mode, n)
        for stemob in ((False,) if args.no_stemob else (False, True))
        for mode in args.modes
        for n in args.n_envs
    ]
    for stemob, mode, n_envs in combos:
        policy.stemob = settings.to_dict() if stemob else None
        rates, steps, cpu_rates = [], [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = evaluate(
                policy,
                None,
                None,
                args.episodes,
                n_envs=n_envs,
                progress=False,
                inverter=inverter if stemob else None,
                env_processes=mode == "subprocess",
            )
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            if result.errors:
                raise RuntimeError(f"benchmark episodes failed: {result.error_messages}")
            rates.append(60.0 * args.episodes / wall)
            cpu_rates.append(60.0 * args.episodes / cpu)
            steps.append(sum(r.length for r in result.records) / wall)
        row = {
            "stemob": stemob,
            "mode": mode,
            "n_envs": n_envs,
            "episodes_per_min": statistics.median(rates),
            "env_steps_per_s": statistics.median(steps),
            "episodes_per_cpu_min": statistics.median(cpu_rates),
            "all_episodes_per_min": rates,
        }
        rows.append(row)
        print(
            f"stemob={'yes' if stemob else 'no ':3}  {mode:10s} n_envs={n_envs}  "
            f"{row['episodes_per_min']:7.1f} episodes/min  "
            f"{row['env_steps_per_s']:7.1f} env steps/s  "
            f"{row['episodes_per_cpu_min']:7.1f} episodes/CPU-min",
            flush=True,
        )
    print()
    print(
        "| test-time inversion | envs | n_envs | episodes / min | env steps / s | "
        "episodes / CPU-min (this process) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {'embedded, k=15' if row['stemob'] else 'none'} | {row['mode']} | {row['n_envs']} | "
            f"{row['episodes_per_min']:.1f} | {row['env_steps_per_s']:.0f} | "
            f"{row['episodes_per_cpu_min']:.1f} |"
        )
    sharding = time_sharding(args.image_size, cameras) if args.sharding else None
    record = {
        "sharding": sharding,
        "task": "lift_cube",
        "policy": "diffusion small_config (untrained), DDIM 10 steps, 2 obs / 8 action steps",
        "cameras": list(cameras),
        "image_size": args.image_size,
        "episodes": args.episodes,
        "max_steps": 100,
        "repeats": args.repeats,
        "settings": settings.to_dict(),
        "rows": rows,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1, MUJOCO_GL="
        f"{os.environ.get('MUJOCO_GL')}",
        "date": date.today().isoformat(),
        "command": "MUJOCO_GL=egl python benchmarks/bench_eval.py "
        f"--episodes {args.episodes} --repeats {args.repeats} --image-size {args.image_size} "
        f"--modes {' '.join(args.modes)}"
        + (" --no-stemob" if args.no_stemob else "")
        + (" --sharding" if args.sharding else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
