"""One training run from a composed config: prepare data, build the policy, train, checkpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import yaml

from stemob.errors import StemobError
from stemob.training.checkpoints import CheckpointManager
from stemob.training.config import TrainingConfig
from stemob.training.loggers import RunLogger
from stemob.training.prepare import (
    build_dataset,
    build_policy,
    check_before_long_work,
    ensure_demonstrations,
    ensure_genima_dataset,
    inversion_settings,
    one_builder,
)
from stemob.training.trainer import Evaluator, Trainer

CONFIG_FILE = "config.yaml"
MUST_MATCH_ON_RESUME = ("policy", "task", "dataset", "stemob", "obs_aug")


def _check_run_dir(run_dir: Path, cfg: Mapping[str, Any], resume: bool) -> None:
    has_checkpoints = bool(CheckpointManager(run_dir).steps())
    saved = run_dir / CONFIG_FILE
    if has_checkpoints and not resume:
        raise StemobError(
            f"run directory {run_dir} already holds checkpoints: pass resume=true to continue it, "
            "or choose another run_dir"
        )
    if resume and saved.is_file():
        before = yaml.safe_load(saved.read_text())
        changed = [k for k in MUST_MATCH_ON_RESUME if not _same_section(before.get(k), cfg.get(k))]
        if changed:
            raise StemobError(
                f"resume=true but {changed} differ from the run's saved {saved}: resume with the "
                "same settings, or start a new run_dir"
            )


OFF_VALUES = {"stemob_draws": 1, "shift": 0, "color_jitter": 0.0}
"""Options added after runs were saved whose "off" is a number (the rest are off at ``null`` or
``false``): at these values a resumed run that lacks them counts as unchanged."""


def _same_section(saved: Any, current: Any) -> bool:
    """Whether a config section is unchanged since the run was saved; an option that is new
    since then counts as unchanged while it is off (``null``, ``false`` or its
    :data:`OFF_VALUES` value), so runs resume across stemob versions that add options."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        return all(
            _same_section(saved[k], current[k])
            if k in saved
            else (
                current[k] is None
                or current[k] is False
                or (k in OFF_VALUES and current[k] == OFF_VALUES[k])
            )  # fmt: skip
            for k in current
        ) and set(saved) <= set(current)
    return saved == current


def _write_config(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    tmp = run_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))
    os.replace(tmp, run_dir / CONFIG_FILE)


def make_accelerator(device: str) -> Any:
    """An ``accelerate.Accelerator``; CPU when asked for or when no GPU is present."""
    from accelerate import Accelerator

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return Accelerator(cpu=cpu)


def train(
    cfg: Mapping[str, Any],
    evaluator_factory: Callable[[Mapping[str, Any]], Evaluator] | None = None,
    augment_factory: Callable[[Mapping[str, Any]], Any] | None = None,
    stop_at: int | None = None,
) -> Path:
    """Run the training described by ``cfg`` (the composed ``configs/train.yaml``).

    Returns the run directory. ``evaluator_factory(cfg)`` builds the rollout evaluator and
    ``augment_factory(cfg)`` the batch augmentation (None: no augmentation).
    """
    training = TrainingConfig.from_dict(cfg["training"])
    check_before_long_work(cfg)
    run_dir = Path(cfg["run_dir"])
    resume = bool(cfg.get("resume", False))
    accelerator = make_accelerator(training.device)
    main = accelerator.is_main_process
    if training.threads:
        torch.set_num_threads(training.threads)
    elif accelerator.device.type == "cpu" and accelerator.num_processes > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // accelerator.num_processes))
    torch.set_flush_denormal(True)
    if main:
        _check_run_dir(run_dir, cfg, resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run_dir, cfg)
    accelerator.wait_for_everyone()

    settings = inversion_settings(cfg.get("stemob"))
    if main:
        ensure_demonstrations(cfg["dataset"], cfg["task"])
        ensure_genima_dataset(cfg["dataset"])
    accelerator.wait_for_everyone()
    cfg = {**cfg, "dataset": ensure_genima_dataset(cfg["dataset"], progress=False)}  # built
    cache = None
    if settings is not None:
        from stemob.data.frames import frame_source
        from stemob.inversion.dataset_cache import build_cache, cache_path

        section = cfg["dataset"]
        keys = section.get("stemob_keys")
        if keys is not None:  # policy keys -> the source's names (the cache keeps those)
            inverse = {dst: src for src, dst in (section.get("key_map") or {}).items()}
            keys = [inverse.get(k, k) for k in keys]
        reader_kwargs = dict(section.get("reader_kwargs") or {})
        single = accelerator.num_processes == 1  # under accelerate the processes share a build
        caches = []
        for draw in range(int(section.get("stemob_draws", 1))):
            # draw 0 is the usual cache; dataset.stemob_draws > 1 adds one cache per noise draw
            drawn = settings.draw(draw)
            target = cache_path(section["path"], drawn, section.get("cache_dir"))
            with one_builder(target, "this Stem-OB cache") if single else nullcontext():
                caches.append(build_cache(
                    section["path"], drawn, cache_dir=section.get("cache_dir"), keys=keys,
                    store_latents=bool(section.get("stemob_latents", False)),
                    device="cpu" if accelerator.device.type == "cpu" else "auto",
                    frames=frame_source(section["path"], section.get("reader", "auto"),
                                        **reader_kwargs),
                ))  # fmt: skip
        cache = caches[0]
    dataset = build_dataset(cfg["dataset"], cfg["policy"], settings)
    torch.manual_seed(training.seed)  # identical initial weights on every process
    policy = build_policy(cfg["policy"], dataset, settings, cfg["task"].get("env_args"))
    if accelerator.process_index:
        torch.manual_seed(training.seed + 1000 * accelerator.process_index)

    logger = RunLogger.from_config(run_dir, cfg, cfg.get("logger"), enabled=main)
    trainer = Trainer(
        policy,
        dataset,
        training,
        run_dir,
        logger,
        accelerator,
        augment=augment_factory(cfg) if augment_factory else None,
        evaluator=evaluator_factory(cfg) if evaluator_factory else None,
    )
    resumed = resume and trainer.resume()
    if main:
        if resumed:
            print(f"resumed {run_dir} at step {trainer.step}")
        else:
            _log_dataset(run_dir, logger, dataset, cache, policy)
    summary = None
    try:
        trainer.fit(stop_at=stop_at)
        if main and trainer.step >= training.steps:
            summary = {"steps": trainer.step, "policy": str(CheckpointManager(run_dir).latest())}
            logger.summary(summary)
            if not cfg["policy"].get("drawer"):
                (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:
        logger.close()
    accelerator.wait_for_everyone()
    if summary is not None and cfg["policy"].get("drawer"):  # GENIMA's stage 2, main process
        from stemob.training.genima_drawer import train_in_run

        print("GENIMA stage 2: the diffusion agent (the controller is trained)")
        summary["drawer"] = str(train_in_run(
            cfg["policy"]["drawer"], cfg["dataset"]["path"], run_dir, training.seed,
            str(accelerator.device),
        ))  # fmt: skip
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))  # both stages done
    return run_dir


def _log_dataset(run_dir: Path, logger: RunLogger, dataset: Any, cache: Any, policy: Any) -> None:
    from stemob.training.grid import observation_grid

    if dataset.reader.format == "robomimic" and (dataset.image_keys or dataset.latent_keys):
        grid = observation_grid(
            dataset.config.path,
            run_dir / "observations.png",
            [dataset.source_keys[k] for k in [*dataset.image_keys, *dataset.latent_keys]],
            cache,
        )
        logger.log_image("data/original_vs_inverted", grid, 0)
    params = sum(p.numel() for p in policy.parameters())
    logger.log(
        {
            "data/train_samples": len(dataset),
            "data/episodes": len(dataset.lengths),
            "model/parameters": params,
        },
        0,
    )
