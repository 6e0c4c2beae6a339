"""The robustness study (Stem-OB vs the original observations and augmentation baselines).

    python tools/robustness.py plan                 # every row and the two commands that make it
    python tools/robustness.py run                  # run the missing rows in order (resumable)
    python tools/robustness.py run --only lift_cube/org   # rows whose name starts with this
    python tools/robustness.py aggregate            # results/robustness.{md,json} + plots

A row trains one policy on clean demonstrations (train.py, no final benchmark) and evaluates it
with eval.py on the Colosseum benchmark (``reset(seed=100000 + i)`` for every method, so every
method sees identical initial states and appearances). A killed row resumes: training continues
from its newest checkpoint and a finished evaluation is kept. Rows live in ``outputs/study/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "outputs" / "study"
RESULTS = REPO / "results"
VALIDATION_FACTOR = "light_color"
"""The factor k is chosen on; it is left out of the reported Gen mean."""
EXCLUDED_FROM_GEN = {"none", "all", VALIDATION_FACTOR}
TASKS = ("lift_cube", "put_in_bowl")
EPISODES = 25
K_SWEEP = (5, 10, 15, 20, 25)
CHOSEN_K = 15
METHODS = {
    "org": ["stemob=none", "obs_aug=none"],
    "aug": ["stemob=none", "obs_aug=aug"],
    "srm": ["stemob=none", "obs_aug=srm"],
    "mix": ["stemob=none", "obs_aug=mix"],
    "ro": ["stemob=none", "obs_aug=ro"],
    "stemob": ["stemob=ddpm", f"stemob.inversion_steps={CHOSEN_K}", "obs_aug=none"],
    "stemob_ddim": ["stemob=ddim", f"stemob.inversion_steps={CHOSEN_K}", "obs_aug=none"],
}
SEEDS = {"org": 3, "aug": 3, "stemob": 3}


@dataclass
class Row:
    """One trained policy and its benchmark."""

    name: str
    task: str
    overrides: list[str]
    eval_overrides: list[str] = field(default_factory=list)
    kind: str = "main"  # main | sweep | blind
    policy_of: str | None = None  # evaluate another row's policy (the blind check)

    @property
    def run_dir(self) -> Path:
        return STUDY / self.name

    @property
    def checkpoint(self) -> Path:
        return STUDY / self.policy_of if self.policy_of else self.run_dir

    @property
    def results(self) -> Path:
        return self.run_dir / "benchmark" / "results.json"

    def train_command(self) -> list[str]:
        return [
            sys.executable, "train.py", f"task={self.task}", *self.overrides,
            f"run_dir={self.run_dir}", "evaluation.enabled=false", "logger.group=robustness",
        ]  # fmt: skip

    def eval_command(self) -> list[str]:
        return [
            sys.executable, "eval.py", f"checkpoint={self.checkpoint}", "benchmark=colosseum",
            f"episodes={EPISODES}", "envs=4", "videos=1", f"output_dir={self.run_dir / 'benchmark'}",
            "logger.group=robustness", *self.eval_overrides,
        ]  # fmt: skip


def rows() -> list[Row]:
    """Every row of the CPU-scale protocol, in the order they are run."""
    out: list[Row] = []
    for task in TASKS:
        for method, overrides in METHODS.items():
            for seed in range(SEEDS.get(method, 1)):
                out.append(Row(f"{task}/{method}/seed{seed}", task,
                               ["policy=diffusion_small", *overrides, f"training.seed={seed}"]))  # fmt: skip
    out.append(
        Row(
            "lift_cube/blind/seed0",
            "lift_cube",
            [],
            ["perturbation=none", "blind=true"],
            kind="blind",
            policy_of="lift_cube/org/seed0",
        )  # fmt: skip
    )
    for method in ("org", "stemob"):
        out.append(Row(f"lift_cube/act_{method}/seed0", "lift_cube",
                       ["policy=act_small", *METHODS[method], "training.seed=0"]))  # fmt: skip
    for k in K_SWEEP:
        if k != CHOSEN_K:
            out.append(
                Row(
                    f"lift_cube/sweep_k{k}/seed0",
                    "lift_cube",
                    [
                        "policy=diffusion_small",
                        "stemob=ddpm",
                        f"stemob.inversion_steps={k}",
                        "obs_aug=none",
                        "training.seed=0",
                    ],
                    [f"perturbation={VALIDATION_FACTOR}"],
                    kind="sweep",
                )  # fmt: skip
            )
    return out


def _shell(command: list[str]) -> str:
    return " ".join(f"'{c}'" if any(ch in c for ch in " []{}") else c for c in command)


def run_row(row: Row) -> None:
    """Train (or resume) and evaluate one row; a finished part is skipped."""
    if row.results.is_file():
        return
    if row.policy_of is None and not (row.run_dir / "summary.json").is_file():
        resume = ["resume=true"] if (row.run_dir / "checkpoints").is_dir() else []
        subprocess.run([*row.train_command(), *resume], cwd=REPO, check=True)
    subprocess.run(row.eval_command(), cwd=REPO, check=True)


def _rates(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text())["factors"]


def aggregate() -> dict:
    """Collect every finished row into results/robustness.json and results/robustness.md."""
    import numpy as np

    table: dict[str, dict] = {}
    for row in rows():
        if not row.results.is_file():
            continue
        factors = _rates(row.results)
        method = row.name.split("/")[1]
        entry = table.setdefault(f"{row.task}/{method}", {"seeds": [], "kind": row.kind})
        entry["seeds"].append({name: {k: f[k] for k in ("successes", "completed", "rate")}
                               for name, f in factors.items()})  # fmt: skip
    summary = {}
    for key, entry in table.items():
        seeds = entry["seeds"]
        names = sorted(seeds[0])
        per_factor = {n: float(np.mean([s[n]["rate"] for s in seeds if n in s])) for n in names}
        gen = [v for n, v in per_factor.items() if n not in EXCLUDED_FROM_GEN]
        summary[key] = {
            "kind": entry["kind"],
            "seeds": len(seeds),
            "train": per_factor.get("none"),
            "gen_mean": float(np.mean(gen)) if gen else None,
            "gen_std_over_factors": float(np.std(gen)) if gen else None,
            "all": float(np.mean([v for n, v in per_factor.items() if n != "all"])),
            "per_factor": per_factor,
            "raw": seeds,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "robustness.json").write_text(json.dumps(summary, indent=2))
    lines = ["# Robustness study (generated by `python tools/robustness.py aggregate`)", "",
             "| task / method | seeds | Train | Gen (mean ± std over factors) | All |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip

    def pct(v: float | None) -> str:
        return "" if v is None else f"{100 * v:.1f}"

    for key, s in sorted(summary.items()):
        if s["kind"] != "main":
            continue
        gen = (
            f"{pct(s['gen_mean'])} ± {pct(s['gen_std_over_factors'])}"
            if s["gen_mean"] is not None
            else ""
        )
        lines.append(f"| {key} | {s['seeds']} | {pct(s['train'])} | {gen} | {pct(s['all'])} |")
    lines += ["", f"Gen excludes {sorted(EXCLUDED_FROM_GEN)} ({VALIDATION_FACTOR} chose k).", ""]
    sweep = []
    for k in K_SWEEP:
        key = "lift_cube/stemob" if k == CHOSEN_K else f"lift_cube/sweep_k{k}"
        if key in summary:
            sweep.append(f"| {k} | {pct(summary[key]['per_factor'].get(VALIDATION_FACTOR))} |")
    if sweep:
        lines += [f"## k sweep (ddpm, N=50, lift_cube, scored on {VALIDATION_FACTOR} only)", "",
                  f"| k | {VALIDATION_FACTOR} success |", "|---:|---:|", *sweep, ""]  # fmt: skip
    if "lift_cube/blind" in summary:
        lines.append(f"Blind check (org policy, images zeroed, clean): "
                     f"{pct(summary['lift_cube/blind']['train'])} % success.")  # fmt: skip
    (RESULTS / "robustness.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("plan", "run", "aggregate"))
    parser.add_argument("--only", default="", help="run only rows whose name starts with this")
    args = parser.parse_args(argv)
    selected = [r for r in rows() if r.name.startswith(args.only)]
    if args.action == "plan":
        for row in selected:
            done = "done" if row.results.is_file() else "todo"
            print(f"# {row.name} ({row.kind}, {done})")
            if row.policy_of is None:
                print(_shell(row.train_command()))
            print(_shell(row.eval_command()))
    elif args.action == "run":
        for row in selected:
            print(f"== {row.name}", flush=True)
            run_row(row)
        aggregate()
    else:
        print(json.dumps({k: {x: v[x] for x in ("train", "gen_mean", "all")}
                          for k, v in aggregate().items()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
