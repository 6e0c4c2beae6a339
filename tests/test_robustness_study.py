"""The robustness study's runner bookkeeping (tools/robustness.py): k choice, row claims, records
and the aggregate tables. The rows themselves (training + benchmark) are too long for tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def study(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("robustness", REPO / "tools" / "robustness.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "robustness", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "STUDY", tmp_path / "outputs")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "ROW_RESULTS", tmp_path / "results" / "study")
    return module


FACTORS = ("none", "light_color", "table_color", "mo_color", "ro_color", "all")


def _finish(study, name: str, rates: dict[str, float], episodes: int = 20) -> None:
    """Write an eval results.json for the row and record it, as run_row would."""
    row = next(r for r in study.rows() if r.name == name)
    factors, records = {}, {}
    for factor in FACTORS:
        wins = round(rates.get(factor, 0.5) * episodes)
        factors[factor] = {"successes": wins, "completed": episodes, "episodes": episodes,
                           "errors": 0, "rate": wins / episodes, "stderr": 0.1, "mean_length": 50.0}  # fmt: skip
        records[factor] = [{"success": i < wins, "error": None} for i in range(episodes)]
    row.results.parent.mkdir(parents=True, exist_ok=True)
    row.results.write_text(json.dumps({"factors": factors, "records": records}))
    study.write_record(row, {"eval_wall_s": 1.0}, threads=1)


def test_stemob_rows_wait_for_the_sweep_then_use_its_best_k(study):
    stem = next(r for r in study.rows() if r.name == "put_in_bowl/stemob/seed1")
    with pytest.raises(study.Deferred):
        stem.resolved()
    for k, light in zip((5, 10, 15, 20, 25), (0.2, 0.6, 0.6, 0.4, 0.1), strict=True):
        _finish(study, f"lift_cube/sweep_k{k}/seed0", {"light_color": light, "none": 0.5 + k / 100})
    # k=10 and k=15 tie on the validation factor; k=15 has the better clean rate
    assert study.chosen_k() == 15
    assert "stemob.inversion_steps=15" in stem.resolved().train_command()
    chosen = next(r for r in study.rows() if r.name == "lift_cube/stemob/seed0").resolved()
    assert chosen.policy_of == "lift_cube/sweep_k15/seed0"
    assert "benchmark=colosseum_no_receiver" in chosen.eval_command()  # lift_cube has no ro_*


def test_a_claim_is_exclusive_and_a_dead_holders_claim_is_taken_over(study):
    row = study.rows()[0]
    assert study.claim(row)
    assert not study.claim(row)  # held by this live process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (row.run_dir / ".claim").write_text(dead)
    assert study.claim(row)


def test_records_keep_the_outcome_of_every_episode_and_the_commands(study):
    _finish(study, "lift_cube/org/seed0", {"none": 0.75})
    record = json.loads((study.ROW_RESULTS / "lift_cube/org/seed0.json").read_text())
    assert record["factors"]["none"]["outcomes"] == "1" * 15 + "0" * 5
    assert (
        "obs_aug=none" in record["commands"]["train"]
        and "training.threads=1" in (record["commands"]["train"])
    )


def test_aggregate_excludes_the_validation_factor_from_gen_and_keeps_the_hand_written_text(study):
    for seed, table in enumerate((0.2, 0.4, 0.6)):
        _finish(study, f"lift_cube/org/seed{seed}",
                {"none": 0.9, "light_color": 1.0, "table_color": table, "mo_color": 0.0})  # fmt: skip
    study.RESULTS.mkdir(parents=True, exist_ok=True)
    (study.RESULTS / "robustness.md").write_text(
        f"# Study\n\nintro\n\n{study.GENERATED_START}\nold\n{study.GENERATED_END}\n\nclosing\n"
    )
    payload = study.aggregate()
    org = payload["summary"]["lift_cube/org"]
    assert org["seeds"] == 3 and org["train"] == pytest.approx(0.9)
    # light_color (chose k), `all` and ro_color (lift_cube has no receiver object) are left out
    assert org["gen_mean"] == pytest.approx((0.4 + 0.0) / 2)
    assert "ro_color" not in org["per_factor"]
    assert org["gen_by_seed"] == pytest.approx([0.1, 0.2, 0.3])
    # table_color pooled 0.4 over 60 episodes, mo_color 0: sqrt(0.4 * 0.6 / 60) / 2
    assert org["gen_stderr"] == pytest.approx((0.4 * 0.6 / 60) ** 0.5 / 2)
    md = (study.RESULTS / "robustness.md").read_text()
    assert md.startswith("# Study\n\nintro") and md.rstrip().endswith("closing")
    assert "old" not in md and "| lift_cube/org | 3 | 90.0 | 20.0 ± 20.0 |" in md
    assert f"**Rows done: 3 of {len(study.rows())}.** Still to run: `lift_cube/sweep_k15" in md
    assert (study.RESULTS / "robustness_lift_cube.png").stat().st_size > 1000
    assert "lift_cube/aug/seed0" in payload["rows_todo"]


def test_tables_list_org_first_and_the_stemob_variants_after_the_baselines(study):
    for name in ("lift_cube/stemob_aug/seed0", "lift_cube/ro/seed0", "lift_cube/org/seed0",
                 "lift_cube/aug/seed0"):  # fmt: skip
        _finish(study, name, {"none": 0.9})
    study.RESULTS.mkdir(parents=True, exist_ok=True)
    summary = study.aggregate()["summary"]
    assert list(summary) == [f"lift_cube/{m}" for m in ("org", "aug", "ro", "stemob_aug")]
    assert summary["lift_cube/stemob_aug"]["kind"] == "extra"
    md = (study.RESULTS / "robustness.md").read_text()
    assert md.index("| lift_cube/org |") < md.index("| lift_cube/stemob_aug |")


def test_genima_study_rows_and_report_reuse_the_robustness_records(study, tmp_path, monkeypatch):
    """tools/genima_study.py: GENIMA and ACT-joint rows per task and seed, Diffusion Policy from
    the robustness study's `org` records; the report averages what is done."""
    spec = importlib.util.spec_from_file_location(
        "genima_study", REPO / "tools" / "genima_study.py"
    )
    genima = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(genima)  # imports the patched `robustness` module
    monkeypatch.setattr(genima, "OUT", tmp_path / "results" / "genima")
    rows = {r.name: r for r in genima.rows()}
    assert len(rows) == len(genima.rows())
    lift = rows["lift_cube_joint/genima/seed0"]
    assert {"policy=genima", "dataset=genima"} <= set(lift.overrides)
    assert any("camera_jitter" in o for o in lift.overrides)
    assert not any("camera_jitter" in o for o in rows["put_in_bowl_joint/genima/seed1"].overrides)
    assert "open_drawer/org/seed2" in rows and "lift_cube/org/seed0" not in rows

    def finish(row, clean, perturbed):
        factors = {f: {"successes": 0, "completed": 20, "episodes": 20, "errors": 0, "stderr": 0.1,
                       "mean_length": 50.0, "rate": clean if f == "none" else perturbed}
                   for f in FACTORS}  # fmt: skip
        row.results.parent.mkdir(parents=True, exist_ok=True)
        records = {f: [] for f in FACTORS}
        row.results.write_text(json.dumps({"factors": factors, "records": records}))
        study.write_record(row, {"eval_wall_s": 1.0}, threads=1)

    finish(lift, 0.8, 0.6)
    finish(next(r for r in study.rows() if r.name == "lift_cube/org/seed0"), 0.9, 0.4)
    text = genima.report()
    assert "| lift_cube | GENIMA | 1 | 80.0 | 60.0 |" in text
    assert "| lift_cube | Diffusion Policy small | 1 | 90.0 | 40.0 |" in text
    assert "`lift_cube_joint/act/seed0`" in text  # still to run
    assert json.loads((tmp_path / "results" / "genima" / "study.json").read_text())


def test_robosuite_study_rows_keep_the_noiseless_demos_apart_and_the_report_plots(
    study, tmp_path, monkeypatch
):
    """tools/robosuite_study.py: the first four rows name the noiseless demo file, every other row
    trains on the task's default (DART-style) demos; the report writes the table, JSON and plot."""
    import yaml

    spec = importlib.util.spec_from_file_location(
        "robosuite_study", REPO / "tools" / "robosuite_study.py"
    )
    robosuite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robosuite)
    monkeypatch.setattr(robosuite, "RESULTS", tmp_path / "results" / "robosuite.md")
    monkeypatch.setattr(robosuite, "PLOT", tmp_path / "results" / "robosuite_lift.png")
    task = yaml.safe_load((REPO / "configs" / "task" / "robosuite_lift.yaml").read_text())
    assert task["demos"]["action_noise"] == robosuite.DART_NOISE
    rows = {r.name: r for r in robosuite.rows()}
    for method in robosuite.NOISELESS_METHODS:
        assert set(robosuite.NOISELESS) <= set(rows[f"robosuite_lift/{method}/seed0"].overrides)
    dart = [r for name, r in rows.items() if "_dart/" in name]
    assert {r.method for r in dart} >= {"org_dart", "stemob_dart", "stemob_ro_dart", "act_org_dart"}
    assert not any("action_noise" in o or "dataset.path" in o for r in dart for o in r.overrides)

    def finish(row, clean, perturbed):
        factors = {f: {"successes": 0, "completed": 25, "episodes": 25, "errors": 0, "stderr": 0.1,
                       "mean_length": 50.0,
                       "rate": {"none": clean, "light_color": 0.1}.get(f, perturbed)}
                   for f in ("none", "mo_color", "light_color", "robosuite_all")}  # fmt: skip
        row.results.parent.mkdir(parents=True, exist_ok=True)
        row.results.write_text(
            json.dumps({"factors": factors, "records": {f: [] for f in factors}})
        )
        study.write_record(row, {"eval_wall_s": 60.0}, threads=1)

    finish(rows["robosuite_lift/org/seed0"], 0.56, 0.3)
    finish(rows["robosuite_lift/org_dart/seed0"], 0.96, 0.7)
    text = robosuite.report()
    assert (
        "| `org_dart` | 0 | **96** | **70.0** |" in text
    )  # Gen: mo_color only (light_color chose k)
    assert "`robosuite_lift/stemob_dart/seed0`" in text  # still to run
    assert (tmp_path / "results" / "robosuite_lift.png").stat().st_size > 0
    assert set(json.loads((tmp_path / "results" / "robosuite.json").read_text())) == {
        "org",
        "org_dart",
    }
