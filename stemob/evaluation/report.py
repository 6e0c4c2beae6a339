"""Reports of evaluation results: ``results.json``, a Markdown table and bar plots.

The table follows the Stem-OB paper: the training (clean) setting, then each perturbation, then
the mean over the perturbations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemob.errors import StemobError
from stemob.evaluation.results import FactorResult, mean_over

TRAIN_FACTOR = "none"
"""The factor name of the training (clean) setting."""
MEAN_ROW = "mean over perturbations"
COLOSSEUM_SETTINGS: dict[str, tuple[int, str]] = {
    "none": (0, "no_variations"), "all": (1, "all_mixed"),
    "mo_color": (2, "manip_obj_color"), "ro_color": (3, "recv_obj_color"),
    "mo_texture": (4, "manip_obj_tex"), "ro_texture": (5, "recv_obj_tex"),
    "mo_size": (6, "manip_obj_size"), "ro_size": (7, "recv_obj_size"),
    "light_color": (8, "light_color"), "table_color": (9, "table_color"),
    "table_texture": (10, "table_texture"), "distractor_object": (11, "distractor"),
    "background_texture": (12, "background_texture"), "camera_pose": (14, "camera_pose"),
    "object_friction": (16, "friction"), "object_mass": (17, "mass"),
    # GENIMA's six evaluations (configs/perturbation/genima/)
    "open_drawer_random_object_color": (2, "manip_obj_color"),
    "open_drawer_lighting_variations": (8, "light_color"),
    "open_drawer_distractor_objects": (11, "distractor"),
    "basketball_in_hoop_random_table_textures": (10, "table_texture"),
    "move_hanger_random_background_textures": (12, "background_texture"),
    "move_hanger_random_camera_poses": (14, "camera_pose"),
}  # fmt: skip
"""stemob factor -> Colosseum's numbered setting and its name (``colosseum/assets/json/<task>.json``
at robot-colosseum 098a910: 0-17; 13 and 15 add RLBench's own variations, which have no stemob
factor), so reports can be read against Colosseum's published tables (25 episodes a setting)."""


def colosseum_setting(name: str) -> str:
    """``"2 manip_obj_color"`` for a factor Colosseum numbers, else ``"-"``."""
    key = name.split("/")[-1]
    if key not in COLOSSEUM_SETTINGS:
        return "-"
    number, label = COLOSSEUM_SETTINGS[key]
    return f"{number} {label}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _label(name: str, train_factor: str) -> str:
    return f"Train ({name})" if name == train_factor else name


def _split(
    results: Mapping[str, FactorResult], train_factor: str
) -> tuple[FactorResult | None, list[FactorResult]]:
    train = results.get(train_factor)
    return train, [r for n, r in results.items() if n != train_factor]


def _pct(rate: float, stderr: float) -> str:
    return f"{100 * rate:.1f} ± {100 * stderr:.1f}"


def summarize(results: Mapping[str, FactorResult], train_factor: str = TRAIN_FACTOR) -> dict:
    """``{"factors": {name: summary}, "mean_over_perturbations": {rate, stderr, factors}}``."""
    _, perturbed = _split(results, train_factor)
    mean, se = mean_over(perturbed)
    return {
        "train_factor": train_factor if train_factor in results else None,
        "factors": {name: r.summary() for name, r in results.items()},
        "mean_over_perturbations": {
            "rate": mean,
            "stderr": se,
            "factors": [r.name for r in perturbed if r.completed],
        },
    }


def _bar_plot(
    series: Mapping[str, Mapping[str, FactorResult]],
    labels: list[str],
    path: Path,
    title: str,
    train_factor: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(labels) + 1)
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(x) * max(1, len(series)) + 2), 4.0))
    for i, (method, results) in enumerate(series.items()):
        _, perturbed = _split(results, train_factor)
        mean, se = mean_over(perturbed)
        rates = [results[n].rate if n in results else np.nan for n in labels] + [mean]
        errs = [results[n].stderr if n in results else 0.0 for n in labels] + [se]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            100 * np.asarray(rates),
            width,
            yerr=100 * np.asarray(errs),
            capsize=2,
            label=method,
        )
    ax.set_xticks(x, [_label(n, train_factor) for n in labels] + ["mean (perturbed)"])
    ax.tick_params(axis="x", rotation=60)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _ordered(names: list[str], train_factor: str) -> list[str]:
    return ([train_factor] if train_factor in names else []) + [
        n for n in names if n != train_factor
    ]


def write_report(
    results: Mapping[str, FactorResult],
    out_dir: str | Path,
    title: str = "Evaluation",
    meta: Mapping[str, Any] | None = None,
    train_factor: str = TRAIN_FACTOR,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` to ``out_dir``; returns paths.

    ``results.json`` holds per factor successes, episodes, completed, errors, rate, stderr,
    mean episode length, seeds, error messages, videos and every episode record, plus the mean
    over perturbations and ``meta`` (checkpoint, settings, date: whatever the caller passes).
    """
    if not results:
        raise StemobError("write_report needs at least one factor result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _ordered(list(results), train_factor)
    data = {
        "title": title,
        "meta": dict(meta or {}),
        **summarize(results, train_factor),
        "colosseum_settings": {n: colosseum_setting(n) for n in names},
        "records": {n: results[n].to_dict()["records"] for n in names},
    }
    json_path = out / "results.json"
    write_text_atomic(json_path, json.dumps(data, indent=2, default=str))

    lines = [
        f"# {title}",
        "",
        "| setting | Colosseum | success (%) | successes / completed | errors | mean length |",
        "|---|---|---|---|---|---|",
    ]
    for n in names:
        r = results[n]
        lines.append(
            f"| {_label(n, train_factor)} | {colosseum_setting(n)} | {_pct(r.rate, r.stderr)} | "
            f"{r.successes} / {r.completed} | {r.errors} | {r.mean_length:.1f} |"
        )
    _, perturbed = _split(results, train_factor)
    if perturbed:
        mean, se = mean_over(perturbed)
        lines.append(f"| **{MEAN_ROW}** | | **{_pct(mean, se)}** | | | |")
    lines += [
        "",
        "Success rates ± binomial standard error, over the episodes that did not raise. "
        "Colosseum: the setting's number and name in Colosseum's tables "
        "(`colosseum/assets/json/<task>.json`; it evaluates 25 episodes a setting).",
    ]
    if meta:
        lines += ["", *[f"- {k}: {v}" for k, v in meta.items()]]
    errors = [m for n in names for m in results[n].error_messages]
    if errors:
        lines += ["", "## Errors", "", *[f"- {m}" for m in errors[:50]]]
    md_path = out / "results.md"
    write_text_atomic(md_path, "\n".join(lines) + "\n")

    png_path = out / "results.png"
    _bar_plot({title: results}, names, png_path, title, train_factor)
    return {"json": json_path, "markdown": md_path, "plot": png_path}


def write_comparison(
    named_results: Mapping[str, Mapping[str, FactorResult]],
    out_dir: str | Path,
    title: str = "Comparison",
    train_factor: str = TRAIN_FACTOR,
) -> dict[str, Path]:
    """One table (settings x methods) and one grouped bar plot for several methods.

    Writes ``comparison.json``, ``comparison.md`` and ``comparison.png``; returns their paths.
    """
    if not named_results:
        raise StemobError("write_comparison needs at least one method")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    for results in named_results.values():
        seen += [n for n in results if n not in seen]
    names = _ordered(seen, train_factor)
    methods = list(named_results)
    data = {
        "title": title,
        "methods": {m: summarize(r, train_factor) for m, r in named_results.items()},
    }
    json_path = out / "comparison.json"
    write_text_atomic(json_path, json.dumps(data, indent=2, default=str))
    lines = [
        f"# {title}",
        "",
        "| setting | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for n in names:
        cells = [
            _pct(named_results[m][n].rate, named_results[m][n].stderr)
            if n in named_results[m]
            else "–"
            for m in methods
        ]
        lines.append(f"| {_label(n, train_factor)} | " + " | ".join(cells) + " |")
    means = [mean_over(_split(named_results[m], train_factor)[1]) for m in methods]
    lines.append(f"| **{MEAN_ROW}** | " + " | ".join(f"**{_pct(*ms)}**" for ms in means) + " |")
    lines += ["", "Success rate (%) ± binomial standard error."]
    md_path = out / "comparison.md"
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    png_path = out / "comparison.png"
    _bar_plot(named_results, names, png_path, title, train_factor)
    return {"json": json_path, "markdown": md_path, "plot": png_path}
