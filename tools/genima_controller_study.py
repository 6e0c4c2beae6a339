"""GENIMA's controller on oracle targets, per tabletop task and Colosseum factor (results/genima/).

A row trains ``policy=genima_controller`` on the task's GENIMA dataset (``dataset=genima``: the
joint-position demos with the expert's pose 20 steps ahead drawn as spheres on random
backgrounds) and evaluates it with ``eval.py genima_oracle.horizon=20`` on the task's Colosseum
benchmark, 25 episodes per setting, seeds ``100000 + i`` as in the robustness study. Both steps
resume after a kill (train.py ``resume=true``; eval.py keeps finished factors).

    python tools/genima_controller_study.py run [--only lift_cube] [--steps 6000] [--threads 1]
        [--variant camera_jitter]
    python tools/genima_controller_study.py report      # the table + JSON in results/genima/

Variants: ``plain`` (the targets drawn from the demos' cameras) and ``camera_jitter`` (the
controller's front-camera targets drawn from a camera moved by up to Colosseum's camera_pose
range, per frame: ``dataset.genima.camera_jitter``); ``camera_jitter_half`` moves it in half of
the frames only (``probability: 0.5``), for tasks where full jitter costs precision (put_in_bowl);
``wrist_only`` reads the wrist camera's targets alone (with proprioception): the wrist camera
moves with the arm, so Colosseum's camera_pose (which moves the front and overhead cameras)
cannot move its spheres; ``camera_jitter_wide`` is ``camera_jitter`` with twice the transformer
width and keypoints per camera (does the jittered task need more capacity than the CPU trunk?).
Evaluation variants reuse a trained variant's controller and change only what it is shown:
``texture_background`` evaluates the ``plain`` controller with ``genima_oracle.background=texture``
(the frame behind the spheres replaced by a random texture, as in its training inputs).

The table's Gen mean is over every factor (``all`` included); "Gen (study)" leaves out
``light_color`` and ``all``, as the robustness and GENIMA studies do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("lift_cube", "put_in_bowl", "open_drawer")
BENCHMARKS = {"lift_cube": "colosseum_no_receiver", "put_in_bowl": "colosseum",
              "open_drawer": "colosseum_no_receiver"}  # fmt: skip
EPISODES = 25
OUT = ROOT / "results" / "genima"
VARIANTS = {
    "plain": [],
    "camera_jitter": ["dataset.genima.camera_jitter={cameras:[front],position:0.1,euler:0.05}"],
    "camera_jitter_half": [
        "dataset.genima.camera_jitter={cameras:[front],position:0.1,euler:0.05,probability:0.5}"
    ],
    "wrist_only": ["dataset.obs_keys=[wrist_target,joint_positions,gripper_open]"],
}
VARIANTS["camera_jitter_wide"] = [
    *VARIANTS["camera_jitter"], "policy.config.hidden_dim=128", "policy.config.dim_feedforward=512",
    "policy.config.keypoint_tokens=32",
]  # fmt: skip


EVAL_VARIANTS = {"texture_background": ("plain", ["genima_oracle.background=texture"])}
"""name -> (the training variant whose controller it evaluates, eval.py overrides)."""
STUDY_LEFT_OUT = ("light_color", "all")
"""Factors the studies' Gen mean leaves out (results/robustness.md)."""

STEPS = 6000


def run_dir(task: str, seed: int, variant: str = "plain", steps: int = STEPS) -> Path:
    """``controller_<task>[_<variant>][_<steps>steps]_s<seed>`` (steps only when not 6000)."""
    tag = ("" if variant == "plain" else f"_{variant}") + (
        "" if steps == STEPS else f"_{steps}steps"
    )
    return ROOT / "outputs" / "genima" / f"controller_{task}{tag}_s{seed}"


def _split(variant: str) -> tuple[str, list[str], str]:
    """(training variant, eval.py overrides, evaluation folder name) of a variant."""
    if variant in EVAL_VARIANTS:
        trained, overrides = EVAL_VARIANTS[variant]
        return trained, overrides, f"oracle_{variant}"
    return variant, [], "oracle"


def commands(task: str, seed: int, steps: int, threads: int, variant: str) -> list[list[str]]:
    trained, eval_overrides, folder = _split(variant)
    run = run_dir(task, seed, trained, steps)
    train = [
        sys.executable, "train.py", f"task={task}_joint", "dataset=genima",
        "policy=genima_controller", "stemob=none", f"training.steps={steps}",
        f"training.seed={seed}", f"training.threads={threads}", "evaluation.enabled=false",
        "logger=none", f"run_dir={run}", "resume=true", *VARIANTS[trained],
    ]  # fmt: skip
    evaluate = [
        sys.executable, "eval.py", f"checkpoint={run}", "genima_oracle.horizon=20",
        f"benchmark={BENCHMARKS[task]}", f"episodes={EPISODES}", "envs=4", "videos=1",
        f"threads={threads}", "logger.name=none", f"output_dir={run / folder}", *eval_overrides,
    ]  # fmt: skip
    return [train, evaluate]


def run(args: argparse.Namespace) -> None:
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": str(args.threads)}
    for task in args.only or TASKS:
        for command in commands(task, args.seed, args.steps, args.threads, args.variant):
            print("$", " ".join(command), flush=True)
            subprocess.run(command, cwd=ROOT, env=env, check=True)


def report(args: argparse.Namespace) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows, factors = [], None
    for variant in [*VARIANTS, *EVAL_VARIANTS]:
        trained, _, folder = _split(variant)
        for task in TASKS:
            path = run_dir(task, args.seed, trained, args.steps) / folder / "results.json"
            tag = ("" if variant == "plain" else f"_{variant}") + (
                "" if args.steps == STEPS else f"_{args.steps}steps"
            )
            kept = OUT / f"oracle_{task}{tag}_s{args.seed}.json"  # the committed copy
            if path.is_file():
                shutil.copyfile(path, kept)
            if not kept.is_file():
                rows.append((task, variant, None))
                continue
            data = json.loads(kept.read_text())
            rows.append((task, variant, data))
            names = [n for n in data["factors"] if n != data["train_factor"]]
            factors = names if factors is None or len(names) > len(factors) else factors
    factors = factors or []
    head = ("| task | variant | clean | Gen mean (s.e.) | Gen (study) | "
            + " | ".join(factors) + " |")  # fmt: skip
    lines = [head, "|" + "---|" * (5 + len(factors))]
    for task, variant, data in rows:
        if data is None:
            lines.append(f"| `{task}` | {variant} | (not run) |" + " |" * (2 + len(factors)))
            continue
        got = data["factors"]
        clean = got[data["train_factor"]]
        gen = data["mean_over_perturbations"]
        cells = [f"{100 * got[f]['rate']:.0f}" if f in got else "n/a" for f in factors]
        study = [got[f]["rate"] for f in factors if f in got and f not in STUDY_LEFT_OUT]
        lines.append(
            f"| `{task}` | {variant} | **{100 * clean['rate']:.0f}** ({clean['successes']}/{clean['completed']}) | "
            f"**{100 * gen['rate']:.1f}** ({100 * gen['stderr']:.1f}) | {100 * sum(study) / len(study):.1f} | "
            + " | ".join(cells)
            + " |"
        )
    (OUT / "controller_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, default=STEPS)
        if name == "run":
            p.add_argument("--only", nargs="+", choices=TASKS)
            p.add_argument("--threads", type=int, default=1)
            p.add_argument("--variant", choices=[*VARIANTS, *EVAL_VARIANTS], default="plain")
    args = parser.parse_args()
    (run if args.command == "run" else report)(args)


if __name__ == "__main__":
    main()
