"""What train.py and eval.py run from their composed configs: the periodic evaluator of a training
run, the benchmark after training, and eval.py's single or comparison evaluation."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stemob.errors import StemobError
from stemob.evaluation.benchmark import TRAIN_FACTOR, run_benchmark
from stemob.evaluation.results import FactorResult
from stemob.evaluation.sharding import current_shard, is_main
from stemob.training.loggers import RunLogger

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINING_EVAL_SEED = 200000
"""Base seed of the evaluations during training (best-checkpoint selection), kept apart from the
benchmark's seeds so that the reported episodes are not the ones a checkpoint was chosen on."""


def benchmark_factors(
    benchmark: Mapping[str, Any] | None,
    perturbation: str | Mapping[str, Any] | None = None,
    perturbation_name: str | None = None,
) -> dict[str, Path | Mapping[str, Any] | None]:
    """``{factor: perturbation YAML, dict or None}`` from a ``benchmark`` config section, or the
    single factor ``perturbation``: a name under ``configs/perturbation``, a YAML path, or the
    parsed file that hydra's ``perturbation=<factor>`` group selection puts in the config."""
    if isinstance(perturbation, Mapping):
        factors = ((perturbation.get("env") or {}).get("scene") or {}).get("factors") or []
        if not perturbation_name:
            perturbation_name = "+".join(f.get("name", "?") for f in factors) or TRAIN_FACTOR
        return {perturbation_name: None if not factors else dict(perturbation)}
    folder = Path((benchmark or {}).get("perturbation_dir", "configs/perturbation"))
    if not folder.is_absolute():
        folder = REPO_ROOT / folder
    if perturbation is not None:
        names = [str(perturbation)]
    else:
        names = list((benchmark or {}).get("perturbations") or [])
    if not names:
        raise StemobError("no perturbation factors: set benchmark=<name> or perturbation=<factor>")
    factors: dict[str, Path | None] = {}
    for name in names:
        if name == TRAIN_FACTOR:
            factors[name] = None
            continue
        path = Path(name) if name.endswith((".yaml", ".yml")) else folder / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.yaml"))
            raise StemobError(f"perturbation {name!r}: no file {path} (known factors: {known})")
        factors[path.stem if name.endswith((".yaml", ".yml")) else name] = path
    return factors


def genima_horizon(dataset: Mapping[str, Any]) -> int | None:
    """The targets' horizon of a GENIMA dataset section (before or after it is built), else None."""
    value = (dataset.get("genima") or {}).get("horizon") or dataset.get("genima_horizon")
    return int(value) if value else None


def target_factory(
    checkpoint: str | Path,
    oracle_horizon: int | None,
    drawer: str | None,
    horizon: int,
    background: str = "scene",
) -> Any:
    """Where a GENIMA controller's ``<cam>_target`` images come from: the expert's pose
    ``oracle_horizon`` steps ahead, the drawer run ``drawer``, or by default the drawer of the
    GENIMA run ``checkpoint`` belongs to (``train.py policy=genima``); ``None`` for other
    policies (the env's own observations). ``background``: what the controller sees behind the
    spheres (``scene`` or ``texture``)."""
    if oracle_horizon:
        from stemob.evaluation.genima_oracle import OracleEnvFactory

        return OracleEnvFactory(int(oracle_horizon), background=background)
    if not drawer:
        from stemob.genima.agent import run_drawer

        found = run_drawer(checkpoint)
        if found is None:
            return None
        print(f"GENIMA agent: {checkpoint} draws its targets with {found} every {horizon} steps")
        drawer = str(found)
    from stemob.evaluation.genima_drawn import DrawnEnvFactory

    return DrawnEnvFactory(str(drawer), int(horizon), background)


def chunk_overrides(
    config: Any, overrides: Mapping[str, Any], factory: Any, option: str
) -> dict[str, Any]:
    """``overrides`` with a GENIMA controller's open-loop chunk set to the targets' horizon.

    Between two drawings the controller (policy ``config``) must run exactly
    ``factory.horizon`` actions of its chunk: more would act on stale targets, fewer would ask
    for a new chunk on the same drawing. Unchanged without a target ``factory``, when the chunk
    already matches or when ``overrides`` sets ``n_action_steps``; a horizon longer than the
    chunks the controller predicts is refused (``option`` names the config section)."""
    out = dict(overrides)
    horizon = getattr(factory, "horizon", None)
    if horizon is None or "n_action_steps" in out:
        return out
    longest = config.horizon - config.n_obs_steps + 1
    if horizon > longest:
        raise StemobError(
            f"{option}.horizon={horizon}: the controller predicts chunks of {longest} actions, "
            f"so its targets can be redrawn at most every {longest} steps"
        )
    if config.n_action_steps != horizon:
        out["n_action_steps"] = int(horizon)
        print(f"{option}: the controller runs {horizon} of its {longest} predicted actions "
              f"between drawings (n_action_steps {config.n_action_steps} -> {horizon})")  # fmt: skip
    return out


def make_evaluator(cfg: Mapping[str, Any]) -> Any:
    """The evaluator of a training run: clean rollouts of the current EMA weights."""
    from stemob.evaluation.rollout import evaluate

    training = cfg["training"]
    dataset = cfg.get("dataset") or {}
    horizon = genima_horizon(dataset)

    def evaluator(policy: Any, step: int, out_dir: Path) -> dict[str, Any]:
        # GENIMA's controller reads <cam>_target: during training, the expert's, drawn ahead
        factory = target_factory(out_dir, horizon, None, horizon) if horizon else None
        result = evaluate(
            policy,
            env_factory=factory,
            episodes=int(training["eval_episodes"]),
            n_envs=int(training["eval_envs"]),
            base_seed=TRAINING_EVAL_SEED,
            video_dir=out_dir,
            videos=int(training["videos"]),
            name=f"step{step}",
            progress=False,
        )
        return {"success_rate": result.rate, "videos": result.videos}

    return evaluator


def _report_meta(
    folder: Path, policy: Any, overrides: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """What a report records about the evaluated checkpoint."""
    meta = {
        "checkpoint": str(folder),
        "stemob": json.dumps(policy.stemob),
        "date": datetime.date.today().isoformat(),
    }
    if overrides:
        meta["policy_overrides"] = json.dumps(dict(overrides))
    return meta


def _log_results(
    logger: Any,
    results: Mapping[str, FactorResult],
    step: int,
    plot: Path,
    prefix: str = "benchmark",
) -> None:
    values: dict[str, float] = {}
    for name, result in results.items():
        values[f"{prefix}/{name}/success_rate"] = result.rate
        values[f"{prefix}/{name}/stderr"] = result.stderr
        values[f"{prefix}/{name}/mean_length"] = result.mean_length
    perturbed = [r for n, r in results.items() if n != TRAIN_FACTOR]
    if perturbed:
        values[f"{prefix}/perturbed_mean"] = sum(r.rate for r in perturbed) / len(perturbed)
    logger.log(values, step)
    logger.log_image(f"{prefix}/plot", plot, step)
    for name, result in results.items():
        for i, video in enumerate(result.videos):
            logger.log_video(f"{prefix}/{name}/video_{i}", video, step)


def _run_factors(
    policy: Any,
    factors: Mapping[str, Any],
    clean_episodes: int,
    perturbed_episodes: int,
    out_dir: Path,
    options: Mapping[str, Any],
    env_args: Mapping[str, Any] | None = None,
    policy_dir: Path | None = None,
    policy_overrides: Mapping[str, Any] | None = None,
) -> dict[str, FactorResult]:
    """Every factor in one benchmark call (one shared Inverter), a line printed per factor.
    With ``policy_dir``, finished factors are kept in ``out_dir/factors`` and a rerun on the same
    checkpoint (same weights, same ``policy_overrides``) reuses them: a killed evaluation
    resumes."""

    def report(name: str, r: FactorResult) -> None:
        if is_main(options.get("shard")):
            print(f"  {name:<20s} {r.successes:3d}/{r.completed:<3d} success  ({r.errors} errors)")

    resume_dir, resume_key = None, None
    if policy_dir is not None:
        resume_dir = out_dir / "factors"
        resume_key = {"policy": _fingerprint(policy_dir), "env_args": env_args}
        factory = options.get("env_factory")
        if hasattr(factory, "describe"):  # e.g. GENIMA's oracle targets
            resume_key["env_factory"] = factory.describe()
        if policy_overrides:  # absent when empty: earlier evaluations' resume files stay valid
            resume_key["policy_overrides"] = dict(policy_overrides)

    episodes = {n: clean_episodes if n == TRAIN_FACTOR else perturbed_episodes for n in factors}
    return run_benchmark(
        policy,
        env_args,
        factors,
        episodes,
        video_dir=out_dir / "videos",
        on_result=report,
        resume_dir=resume_dir,
        resume_key=resume_key,
        **options,
    )


def _fingerprint(folder: Path) -> str:
    """sha256 over the names and bytes of a checkpoint folder's files."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def after_training(cfg: Mapping[str, Any], run_dir: Path) -> Path | None:
    """The benchmark after training (``evaluation.enabled``): the best (else the newest)
    checkpoint on the clean task and every ``benchmark`` factor; writes ``<run_dir>/eval/final``."""
    from policies.base import load_policy
    from stemob.training.checkpoints import resolve_policy_dir

    section = cfg.get("evaluation") or {}
    if not section.get("enabled", False):
        return None
    policy_dir = resolve_policy_dir(run_dir)
    policy = load_policy(policy_dir)
    factors = benchmark_factors(cfg.get("benchmark"))
    out = Path(run_dir) / "eval" / "final"
    clean = int(section.get("episodes", 50))
    perturbed = int(section.get("perturbation_episodes") or clean)
    print(f"evaluating {policy_dir} on {list(factors)} ({clean} clean / {perturbed} episodes)")
    horizon = genima_horizon(cfg.get("dataset") or {})
    options = {
        "n_envs": int(section.get("envs", 1)),
        "base_seed": int(section.get("base_seed", 100000)),
        "videos": int(section.get("videos", 2)),
    }
    # a GENIMA controller follows its drawer's targets (policy=genima), else the expert's
    drawn = target_factory(run_dir, None, None, horizon or 20)
    factory = drawn or (target_factory(run_dir, horizon, None, 20) if horizon else None)
    if factory is not None:
        options["env_factory"] = factory
    results = _run_factors(policy, factors, clean, perturbed, out, options, policy_dir=policy_dir)
    from stemob.evaluation.report import write_report

    title = f"{cfg['task']['name']}: {run_dir.name}"
    paths = write_report(results, out, title=title, meta=_report_meta(policy_dir, policy))
    logger = RunLogger.from_config(run_dir, cfg, cfg.get("logger"))
    try:
        _log_results(logger, results, int(cfg["training"]["steps"]), paths["plot"])
    finally:
        logger.close()
    print(f"report: {paths['markdown']}")
    return out


def _single_draw_policies(policies: Mapping[str, Path], draws: int) -> dict[str, str]:
    """The compared policies that cannot take ``draws`` > 1 test-time noise draws (no noisy
    Stem-OB inversion), each with the reason; checked before any rollout. One clear error when
    none of them can (the option would change nothing)."""
    from policies.base import checkpoint_record
    from stemob.deploy import draws_refusal

    refused = {}
    for name, folder in policies.items():
        reason = draws_refusal(checkpoint_record(folder).get("stemob"))
        if reason:
            refused[name] = reason
    if len(refused) == len(policies):
        detail = "; ".join(f"{policies[n]}: {r}" for n, r in refused.items())
        raise StemobError(f"test_draws={draws} averages over Stem-OB noise draws, and no policy "
                          f"evaluated here draws noise ({detail})")  # fmt: skip
    return refused


def evaluate_from_config(cfg: Mapping[str, Any]) -> Path:
    """eval.py: one checkpoint (a report) or several (a report each plus a comparison)."""
    from policies.base import checkpoint_config, load_policy
    from stemob.evaluation.report import write_comparison, write_report
    from stemob.training.checkpoints import resolve_policy_dir

    checkpoints = cfg["checkpoint"]
    checkpoints = [checkpoints] if isinstance(checkpoints, str) else list(checkpoints)
    names = cfg.get("names") or [Path(c).name for c in checkpoints]
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise StemobError(f"names {names} must give one distinct label per checkpoint")
    factors = benchmark_factors(
        cfg.get("benchmark"), cfg.get("perturbation"), cfg.get("perturbation_name")
    )
    policies = {n: resolve_policy_dir(c) for n, c in zip(names, checkpoints, strict=True)}
    out = Path(cfg["output_dir"])
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    shard = current_shard()
    main = is_main(shard)
    options = {
        "n_envs": int(cfg.get("envs", 1)),
        "base_seed": int(cfg.get("base_seed", 100000)),
        "videos": int(cfg.get("videos", 2)),
        "max_steps": cfg.get("max_steps"),
        "blind": bool(cfg.get("blind", False)),
        "env_processes": cfg.get("env_processes"),
        "shard": shard,
    }
    test_draws = cfg.get("test_draws", 1)
    single_draw: dict[str, str] = {}  # policies evaluated with one draw: why
    if test_draws != 1:  # absent at 1: evaluations resumed from before the option keep their keys
        from stemob.deploy import positive_draws

        options["test_draws"] = positive_draws(test_draws)
        single_draw = _single_draw_policies(policies, options["test_draws"])
    oracle = cfg.get("genima_oracle") or {}
    agent = cfg.get("genima_agent") or {}
    if agent.get("drawer") and oracle.get("horizon"):
        raise StemobError("genima_agent.drawer and genima_oracle.horizon: choose one target source")
    episodes = int(cfg.get("episodes", 50))
    overrides = dict(cfg.get("policy_overrides") or {})
    logger = RunLogger.from_config(out, cfg, cfg.get("logger"), enabled=main)
    named: dict[str, dict[str, FactorResult]] = {}
    try:
        for (name, folder), checkpoint in zip(policies.items(), checkpoints, strict=True):
            factory = target_factory(
                checkpoint, oracle.get("horizon"), agent.get("drawer"),
                int(agent.get("horizon") or 20),
                (oracle if oracle.get("horizon") else agent).get("background") or "scene",
            )  # fmt: skip
            policy_overrides = overrides
            if factory is not None:  # the chunk to execute is an inference-only field
                option = "genima_oracle" if oracle.get("horizon") else "genima_agent"
                saved = checkpoint_config(folder)
                policy_overrides = chunk_overrides(saved, overrides, factory, option)
            policy = load_policy(folder, cfg.get("device", "cpu"), policy_overrides)
            run_options = {**options, "env_factory": factory} if factory else dict(options)
            if name in single_draw:  # its key then equals a plain evaluation's (resumable)
                del run_options["test_draws"]
                print(f"{name}: test_draws={options['test_draws']} does not apply "
                      f"({single_draw[name]}): one draw")  # fmt: skip
            env_args = policy.env_args
            if cfg.get("env_overrides"):
                if env_args is None:
                    raise StemobError(f"{folder}: the checkpoint stores no env_args to override")
                env_args = {
                    **env_args,
                    "env_kwargs": {**env_args["env_kwargs"], **cfg["env_overrides"]},
                }
            target = out / name if len(policies) > 1 else out
            where = f" (rank {shard[0]} of {shard[1]})" if shard else ""
            print(
                f"evaluating {name} ({folder}) on {list(factors)}, {episodes} episodes each{where}"
            )
            results = _run_factors(
                policy,
                factors,
                episodes,
                episodes,
                target,
                run_options,
                env_args,
                folder,
                policy_overrides,
            )
            if not main:  # the main rank holds the merged results and writes the reports
                continue
            meta = _report_meta(folder, policy, policy_overrides)
            if "test_draws" in run_options:
                meta["test_draws"] = str(options["test_draws"])
            elif name in single_draw:
                meta["test_draws"] = f"1 ({single_draw[name]})"
            paths = write_report(results, target, title=name, meta=meta)
            named[name] = results
            _log_results(logger, results, 0, paths["plot"], prefix=f"eval/{name}")
        if len(named) > 1 and main:
            write_comparison(named, out, title="Comparison")
            print(f"comparison: {out / 'comparison.md'}")
    finally:
        logger.close()
    return out
