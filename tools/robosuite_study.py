"""robosuite `Lift` as an external benchmark: Diffusion Policy small and ACT, with and without
Stem-OB, on the robustness study's protocol (results/robosuite.md).

    python tools/robosuite_study.py plan                 # every row, its state and the commands
    python tools/robosuite_study.py run [--only robosuite_lift/org] [--threads 1]   # resumable
    python tools/robosuite_study.py report               # results/robosuite.{md,json} + plot
    python tools/robosuite_study.py figure               # envs/robosuite/factors_lift.png

Rows are those of ``tools/robustness.py`` (same runner, lock files, per-row records in
``results/study/robosuite_lift/...``): 200 scripted demos (``task=robosuite_lift`` records them on
first use), 25 episodes per setting with ``reset(seed=100000 + i)``, the factors the robosuite
backend supports (``benchmark=robosuite``). Stem-OB rows use the k the robustness study chose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustness as study  # noqa: E402  (tools/robustness.py: rows, runner, records)

TASK = "robosuite_lift"
BENCHMARK = "robosuite"
NOT_IN_GEN = {"none", "robosuite_all", study.VALIDATION_FACTOR}
"""Gen = mean over the single factors, as in the robustness study (light_color chose k there)."""
DP_METHODS = {
    "org": study.METHODS["org"],
    "aug": study.METHODS["aug"],
    "ro": study.METHODS["ro"],
    "stemob": study.METHODS["stemob"],
    "stemob_ro": ["stemob=ddpm", f"stemob.inversion_steps={study.K}", "obs_aug=ro"],
}
DP_SEEDS = 2
ACT_METHODS = ("org", "stemob")
RESULTS = study.RESULTS / "robosuite.md"


def rows() -> list[study.Row]:
    """Seed 0 of every Diffusion Policy method first, then ACT, then the second seeds."""
    def dp(method: str, seed: int) -> study.Row:
        overrides = ["policy=diffusion_small", *DP_METHODS[method], f"training.seed={seed}"]
        return study.Row(f"{TASK}/{method}/seed{seed}", TASK, overrides, benchmark=BENCHMARK)

    act = [
        study.Row(f"{TASK}/act_{m}/seed0", TASK,
                  ["policy=act_small", *study.METHODS[m], f"training.steps={study.ACT_STEPS}",
                   "training.seed=0"], benchmark=BENCHMARK)
        for m in ACT_METHODS
    ]  # fmt: skip
    first = [dp(m, 0) for m in DP_METHODS]
    later = [dp(m, s) for s in range(1, DP_SEEDS) for m in DP_METHODS]
    return [*first, *act, *later]


def summarize() -> dict:
    """Per method: clean and Gen (mean over seeds), per-factor rates, cost."""
    out: dict = {}
    for row in rows():
        record = study.load_record(row)
        if record is None:
            continue
        factors = record["factors"]
        single = [f for f in factors if f not in NOT_IN_GEN]
        entry = out.setdefault(row.method, {"seeds": [], "clean": [], "gen": [], "factors": {}})
        entry["seeds"].append(row.name.rsplit("seed", 1)[1])
        entry["clean"].append(factors["none"]["rate"])
        entry["gen"].append(sum(factors[f]["rate"] for f in single) / len(single))
        for name, f in factors.items():
            entry["factors"].setdefault(name, []).append(f["rate"])
        entry.setdefault("train_wall_s", []).append(record.get("train_wall_s"))
        entry.setdefault("eval_wall_s", []).append(record.get("eval_wall_s"))
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def report() -> str:
    summary = summarize()
    factor_names: list[str] = []
    for entry in summary.values():
        factor_names += [f for f in entry["factors"] if f not in factor_names]
    head = ["method", "seeds", "clean", "Gen mean", *factor_names, "train min", "eval min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, e in summary.items():
        cells = [f"`{method}`", ",".join(e["seeds"]), f"**{100 * _mean(e['clean']):.0f}**",
                 f"**{100 * _mean(e['gen']):.1f}**"]  # fmt: skip
        cells += [
            f"{100 * _mean(e['factors'][f]):.0f}" if f in e["factors"] else "n/a"
            for f in factor_names
        ]
        for key in ("train_wall_s", "eval_wall_s"):
            value = _mean(e[key])
            cells.append(f"{value / 60:.0f}" if value else "?")
        lines.append("| " + " | ".join(cells) + " |")
    todo = [r.name for r in rows() if study.load_record(r) is None]
    table = "\n".join(lines)
    (study.RESULTS / "robosuite.json").write_text(json.dumps(summary, indent=1) + "\n")
    return table + ("\n\nNot run yet: " + ", ".join(todo) if todo else "") + "\n"


def figure(out: Path) -> Path:
    """Every factor of the benchmark on robosuite Lift's agentview (reset seed 100000)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    from envs.record import make_env_from_args

    task = yaml.safe_load((study.REPO / "configs" / "task" / f"{TASK}.yaml").read_text())
    bench = yaml.safe_load((study.REPO / "configs" / "benchmark" / f"{BENCHMARK}.yaml").read_text())
    names = bench["perturbations"]
    fig, axes = plt.subplots(2, (len(names) + 1) // 2, figsize=(2.2 * ((len(names) + 1) // 2), 4.8))
    for ax, name in zip(axes.flat, names, strict=False):
        path = study.REPO / "configs" / "perturbation" / f"{name}.yaml"
        env = make_env_from_args(task["env_args"], cameras=["agentview"], image_size=168,
                                 perturbation=None if name == "none" else str(path))  # fmt: skip
        obs, _ = env.reset(seed=100000)
        env.close()
        ax.imshow(obs["agentview_image"])
        ax.set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--only", nargs="+", default=None, help="rows whose name starts with these")
    run.add_argument("--threads", type=int, default=1)
    sub.add_parser("plan")
    sub.add_parser("report")
    fig = sub.add_parser("figure")
    fig.add_argument("--out", default=str(study.REPO / "envs" / "robosuite" / "factors_lift.png"))
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    if args.command == "figure":
        print(figure(Path(args.out)))
        return
    selected = rows()
    if args.command == "plan":
        for row in selected:
            state = "done" if study.load_record(row) else "todo"
            print(f"{state:4} {row.name}\n     {study._shell(row.train_command(args.threads if hasattr(args, 'threads') else 0))}")
        return
    if args.command == "report":
        print(report())
        return
    if args.only:
        selected = [r for r in selected if any(r.name.startswith(o) for o in args.only)]
    study.run(selected, args.threads)


if __name__ == "__main__":
    main()
