"""Speed of the embedded tabletop suite: env steps per second and reset time.

    MUJOCO_GL=egl python benchmarks/bench_envs.py [--steps 600] [--out benchmarks/results/envs.json]

Single process; the expert is not timed (random ee_delta actions). Figures: steps/s with one
96x96 camera and with two, reset time without and with all 14 perturbation factors; side by side,
steps/s with one 84x84 camera for the tabletop suite and for robosuite's Lift (agentview, shadows,
reflections and multisampling off, OSC_POSE; only where the ``robosuite`` extra is installed),
and robosuite Lift with the backend's fast settings against robosuite's defaults, in 50-step
episodes (the scripted expert's length; the defaults recompile the model at every reset).
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


def steps_per_second(task: str, cameras: tuple[str, ...], steps: int, size: int) -> float:
    """Env steps per second with random actions (episodes restarted when they end)."""
    from envs.tabletop.env import TabletopEnv

    env = TabletopEnv(task, image_size=size, cameras=cameras, terminate_on_success=False)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(10):  # warm-up
        env.step(env.action_space.sample() * 0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, (steps, 7)) * 0.3
    start = time.perf_counter()
    for i in range(steps):
        if i % env.task.max_episode_steps == 0:
            env.reset(seed=i)
        env.step(actions[i].astype(np.float32))
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def robosuite_steps_per_second(
    steps: int, size: int, fast: bool = True, episode: int = 200, mesh_cell: float | None = None
) -> float | None:
    """robosuite Lift steps per second with one camera, a reset every ``episode`` steps (None
    without the robosuite extra). ``fast``: the backend's settings (shadows, reflections and
    multisampling off, ``hard_reset=False``); else robosuite's defaults (``hard_reset=True``
    recompiles the model at every reset, renderer as robosuite sets it up). ``mesh_cell``: the
    backend's ``visual_mesh_cell`` (coarser visual meshes, envs/robosuite/meshes.py)."""
    import importlib.util

    if importlib.util.find_spec("robosuite") is None:
        return None
    from envs.robosuite.env import RobosuiteEnv

    env = RobosuiteEnv("Lift", {"robots": "Panda"}, cameras=("agentview",), image_size=size,
                       fast_render=fast, hard_reset=not fast,
                       visual_mesh_cell=mesh_cell)  # fmt: skip
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(10):  # warm-up
        env.step(np.zeros(env.action_space.shape, np.float32))
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, (steps, low.shape[0])).astype(np.float32) * 0.3
    start = time.perf_counter()
    for i in range(steps):
        if i % episode == 0 and i:
            env.reset(seed=i)
        env.step(actions[i])
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def reset_ms(task: str, perturbation: str | None, n: int) -> float:
    """Mean reset time (ms), including rendering the first observation of two cameras."""
    from envs.tabletop.env import TabletopEnv

    env = TabletopEnv(task, perturbation=perturbation, cameras=("front", "wrist"))
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(n):
        env.reset(seed=i + 1)
    elapsed = time.perf_counter() - start
    env.close()
    return 1000 * elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--resets", type=int, default=30)
    parser.add_argument("--task", default="put_in_bowl")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument(
        "--side-size", type=int, default=84, help="image side of the tabletop/robosuite comparison"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="each figure is the median of this many runs"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/envs.json"))
    args = parser.parse_args()
    all_yaml = str(ROOT / "configs/perturbation/all.yaml")

    def median(measure, *measure_args) -> float | None:
        values = [measure(*measure_args) for _ in range(args.repeats)]
        return None if None in values else statistics.median(values)

    results = {
        "task": args.task,
        "image_size": args.size,
        "repeats": args.repeats,
        "steps_per_s_1cam": median(steps_per_second, args.task, ("front",), args.steps, args.size),
        "steps_per_s_2cam": median(
            steps_per_second, args.task, ("front", "wrist"), args.steps, args.size
        ),
        "side_by_side_image_size": args.side_size,
        "tabletop_steps_per_s_1cam_side": median(
            steps_per_second, args.task, ("front",), args.steps, args.side_size
        ),
        "robosuite_lift_steps_per_s_1cam_side": median(
            robosuite_steps_per_second, args.steps, args.side_size
        ),
        # robosuite Lift episodes as the scripted expert records them (50 steps, then a reset)
        "robosuite_lift_fast_steps_per_s_50step_episodes": median(
            robosuite_steps_per_second, args.steps, args.side_size, True, 50
        ),
        "robosuite_lift_default_steps_per_s_50step_episodes": median(
            robosuite_steps_per_second, args.steps, args.side_size, False, 50
        ),
        "reset_ms": median(reset_ms, args.task, None, args.resets),
        "reset_ms_all_perturbations": median(reset_ms, args.task, all_yaml, args.resets),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "MUJOCO_GL=egl python benchmarks/bench_envs.py",
    }
    for key, value in results.items():
        print(f"{key:28s} {value:.1f}" if isinstance(value, float) else f"{key:28s} {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
