"""The perturbation benchmark: one :func:`evaluate` per factor (Colosseum-style)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from stemob.errors import StemobError
from stemob.evaluation.report import TRAIN_FACTOR, write_text_atomic
from stemob.evaluation.results import FactorResult
from stemob.evaluation.rollout import evaluate, policy_device
from stemob.evaluation.sharding import is_main, merge


def load_benchmark(
    path: str | Path = "configs/benchmark/colosseum.yaml", root: str | Path | None = None
) -> dict[str, Path | None]:
    """``{factor name: perturbation YAML path}`` of a benchmark file; ``none`` maps to ``None``
    (the env of the checkpoint's ``env_args``: the training setting).

    The file lists ``perturbations`` (names) under ``perturbation_dir`` (relative to ``root``,
    default: the benchmark file's grandparent folder, i.e. the repository for ``configs/...``).
    """
    path = Path(path)
    if not path.is_file():
        raise StemobError(f"benchmark file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise StemobError(f"{path}: not valid YAML: {error}") from error
    names = data.get("perturbations")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise StemobError(f"{path}: 'perturbations' must be a non-empty list of factor names")
    base = Path(root) if root is not None else path.resolve().parent.parent.parent
    folder = base / str(data.get("perturbation_dir", "configs/perturbation"))
    out: dict[str, Path | None] = {}
    for name in names:
        if name == TRAIN_FACTOR:
            out[name] = None
            continue
        file = folder / f"{name}.yaml"
        if not file.is_file():
            raise StemobError(f"{path}: perturbation {name!r} has no file {file}")
        out[name] = file
    return out


def run_benchmark(
    policy: Any,
    env_args: Mapping[str, Any] | None,
    factors: Mapping[str, str | Path | Mapping[str, Any] | None],
    episodes: int | Mapping[str, int],
    *,
    progress: bool = True,
    video_dir: str | Path | None = None,
    on_result: Callable[[str, FactorResult], None] | None = None,
    resume_dir: str | Path | None = None,
    resume_key: Mapping[str, Any] | None = None,
    **evaluate_kwargs: Any,
) -> dict[str, FactorResult]:
    """Evaluate ``policy`` under every factor (``None``: the env of ``env_args`` as it is).

    ``episodes`` is one count for every factor or ``{factor: count}`` (e.g. more clean episodes).
    With Stem-OB settings on the policy, one Inverter is built and shared by all factors (unless
    ``inverter=`` is given).

    Every factor uses the same seeds (``base_seed + i``), so all methods and factors see the
    same initial states. ``on_result(name, result)`` is called after each factor (e.g. to log
    to wandb or write partial reports). Other keyword arguments go to :func:`evaluate`.

    With ``shard=(rank, world)`` (from :func:`stemob.evaluation.sharding.current_shard`), each
    rank runs its share of every factor and the ranks' records are merged after each factor
    (every rank must call this with the same factors); only the main rank saves them.

    With ``resume_dir``, each finished factor is saved there (``<factor>.json``) and a later call
    with the same ``resume_key`` (e.g. the checkpoint's fingerprint), factor file and episode
    count reuses it instead of evaluating it again: a killed benchmark resumes factor by factor.
    """
    from tqdm import tqdm

    if not factors:
        raise StemobError("run_benchmark needs at least one factor")
    if isinstance(episodes, Mapping):
        missing = [n for n in factors if n not in episodes]
        if missing:
            raise StemobError(f"episodes: no count for factor(s) {missing}")
        counts = {n: int(episodes[n]) for n in factors}
    else:
        counts = {n: episodes for n in factors}
    if getattr(policy, "stemob", None) is not None and evaluate_kwargs.get("inverter") is None:
        from envs.wrappers import make_inverter

        device = evaluate_kwargs.get("inversion_device") or str(policy_device(policy))
        evaluate_kwargs["inverter"] = make_inverter(policy.stemob, None, device)  # one model
    shard = evaluate_kwargs.get("shard")
    results: dict[str, FactorResult] = {}
    progress = progress and is_main(shard)
    bar = tqdm(list(factors.items()), desc="benchmark", unit="factor", disable=not progress)
    for name, perturbation in bar:
        bar.set_postfix(factor=name)
        saved = Path(resume_dir) / f"{name}.json" if resume_dir is not None else None
        result, key = None, ""
        if saved is not None:  # the key reads the perturbation file: only when resuming
            key = _factor_key(resume_key, perturbation, counts[name], evaluate_kwargs)
            result = _load_saved(saved, key)
        if result is None:
            result = evaluate(
                policy,
                env_args,
                perturbation,
                counts[name],
                name=name,
                progress=progress,
                video_dir=Path(video_dir) / name if video_dir is not None else None,
                **evaluate_kwargs,
            )
            if shard is not None and shard[1] > 1:
                result = merge(result)  # every rank gets the whole factor
            if saved is not None and is_main(shard):
                saved.parent.mkdir(parents=True, exist_ok=True)
                payload = {"key": key, "result": result.to_dict()}
                write_text_atomic(saved, json.dumps(payload, default=str))
        results[name] = result
        if on_result is not None:
            on_result(name, result)
    bar.close()
    return results


def _factor_key(
    resume_key: Mapping[str, Any] | None,
    perturbation: str | Path | Mapping[str, Any] | None,
    episodes: int,
    evaluate_kwargs: Mapping[str, Any],
) -> str:
    """What a saved factor result must match to be reused: the caller's key, the perturbation
    (a file's content), the episode count and the plain evaluate options."""
    if isinstance(perturbation, (str, Path)):
        perturbation = {"file": str(perturbation), "text": Path(perturbation).read_text()}
    options = {
        k: v
        for k, v in evaluate_kwargs.items()
        if v is None or isinstance(v, (int, float, bool, str))
    }
    return json.dumps(
        [dict(resume_key or {}), perturbation, episodes, options], sort_keys=True, default=str
    )


def _load_saved(path: Path, key: str) -> FactorResult | None:
    """The saved result at ``path`` when its key matches (anything unreadable is ignored)."""
    try:
        data = json.loads(path.read_text())
        return FactorResult.from_dict(data["result"]) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
