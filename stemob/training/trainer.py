"""The training loop: accelerate (DDP) aware, resumable, logged, checkpointed."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stemob.errors import StemobError
from stemob.training.batches import BatchStream
from stemob.training.checkpoints import CheckpointManager, rng_state, set_rng_state
from stemob.training.config import TrainingConfig
from stemob.training.loggers import RunLogger

Evaluator = Callable[[Any, int, Path], dict[str, Any]]
"""``(policy, step, out_dir) -> {'success_rate': float, 'videos': [paths], ...}``."""


class LossModule(nn.Module):
    """Makes ``policy.compute_loss`` the ``forward`` of a module, so DDP can wrap it."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy.compute_loss(batch)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    """Trains ``policy`` on ``dataset`` as ``config`` says, in ``run_dir``.

    Args:
        policy: a :class:`policies.base.Policy`.
        dataset: the training ``DemoDataset`` (its ``validation()`` split gives validation losses).
        config: the training section.
        run_dir: where checkpoints and logs go (written by the main process only).
        logger: the run logger (disabled on non-main processes).
        accelerator: an ``accelerate.Accelerator``; its processes split ``config.batch_size``.
        augment: optional function applied to every training batch (observation augmentation).
        evaluator: optional rollout evaluation called every ``eval_every`` steps and at the end.
    """

    def __init__(
        self,
        policy: Any,
        dataset: Any,
        config: TrainingConfig,
        run_dir: Path,
        logger: RunLogger,
        accelerator: Any,
        augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        evaluator: Evaluator | None = None,
    ) -> None:
        from policies.optim import EMA, make_training

        self.config, self.run_dir, self.logger = config, Path(run_dir), logger
        self.accelerator = accelerator
        self.augment, self.evaluator = augment, evaluator
        world = accelerator.num_processes
        if config.batch_size % world:
            raise StemobError(
                f"training.batch_size ({config.batch_size}) must be divisible by the number of "
                f"processes ({world})"
            )
        self.device = accelerator.device
        self.policy = policy.to(self.device)
        self.optimizer, self.scheduler = make_training(self.policy, config.steps)
        pc = self.policy.config
        self.ema = (
            EMA(self.policy, power=pc.ema_power, max_decay=pc.ema_max_decay)
            if hasattr(pc, "ema_power")
            else None
        )
        self.model = LossModule(self.policy)
        if world > 1:
            self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        self.stream = BatchStream(
            dataset,
            config.batch_size // world,
            seed=config.seed,
            rank=accelerator.process_index,
            num_workers=config.num_workers,
        )
        self.val_data = dataset.validation() if len(dataset.val_episodes) else None
        self.checkpoints = CheckpointManager(run_dir, config.keep_last)
        self.step = 0

    # ------------------------------------------------------------------ state
    @property
    def eval_policy(self) -> Any:
        """The weights used for evaluation and deployment (EMA when the policy has it)."""
        return self.ema.model if self.ema is not None else self.policy

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_state(),
            "data": self.stream.state_dict(),
            "augment": self.augment.state_dict() if hasattr(self.augment, "state_dict") else None,
        }

    def resume(self) -> bool:
        """Load the newest checkpoint of the run directory; False when there is none."""
        folder = self.checkpoints.latest()
        if folder is None:
            return False
        state = self.checkpoints.load_state(folder)
        self.policy.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.stream.load_state_dict(state["data"])
        if state.get("augment") is not None and hasattr(self.augment, "load_state_dict"):
            self.augment.load_state_dict(state["augment"])
        self.step = int(state["step"])
        # each process saved the main process's RNG; offset the others as at the start
        set_rng_state(state["rng"])
        if self.accelerator.process_index:
            torch.manual_seed(self.config.seed + 1000 * self.accelerator.process_index + self.step)
        return True

    def save_checkpoint(self) -> Path | None:
        path = None
        if self.accelerator.is_main_process:
            path = self.checkpoints.save(self.step, self.eval_policy, self.state_dict())
        self.accelerator.wait_for_everyone()
        return path

    # ------------------------------------------------------------------ loop
    def fit(self, stop_at: int | None = None) -> None:
        """Train until ``config.steps`` (or ``stop_at``, to simulate an interruption in tests)."""
        from tqdm import tqdm

        cfg = self.config
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        main = self.accelerator.is_main_process
        bar = tqdm(
            total=cfg.steps, initial=self.step, desc="training", unit="step", disable=not main
        )
        batches = iter(self.stream)
        timing = {"data": 0.0, "forward_backward": 0.0, "optimizer": 0.0}
        losses: list[float] = []
        window_start, window_steps = time.perf_counter(), 0
        self.model.train()
        while self.step < end:
            t0 = time.perf_counter()
            batch = next(batches)
            if self.augment is not None:
                batch = self.augment(batch)
            batch = _to_device(batch, self.device)
            t1 = time.perf_counter()
            loss, logs = self.model(batch)
            self.accelerator.backward(loss)
            limit = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), limit)
            t2 = time.perf_counter()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.policy)
            t3 = time.perf_counter()
            self.step += 1
            window_steps += 1
            for key, value in zip(timing, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                timing[key] += value
            losses.append(float(loss.detach()))
            if self.step % cfg.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - window_start
                sps = window_steps * cfg.batch_size / max(elapsed, 1e-9)
                record = {
                    "train/loss": sum(losses) / len(losses),
                    "train/lr": self.scheduler.get_last_lr()[0],
                    "train/grad_norm": float(grad_norm),
                    "train/samples_per_s": sps,
                    **{f"train/{k}": v for k, v in logs.items() if k != "loss"},
                    **{f"time/{k}_ms": 1000 * v / window_steps for k, v in timing.items()},
                }
                self.logger.log(record, self.step)
                bar.set_postfix(loss=f"{record['train/loss']:.4f}", sps=f"{sps:.0f}")
                losses.clear()
                timing = dict.fromkeys(timing, 0.0)
                window_start, window_steps = time.perf_counter(), 0
            bar.update(1)
            if cfg.val_every and self.step % cfg.val_every == 0 and self.val_data is not None:
                self.logger.log({"val/loss": self.validation_loss()}, self.step)
            if self.step < cfg.steps:
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._checkpoint_and_evaluate()
                elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
        bar.close()
        if self.step >= cfg.steps:
            self._checkpoint_and_evaluate()

    def _checkpoint_and_evaluate(self) -> None:
        self.save_checkpoint()
        if self.evaluator is None or self.config.eval_episodes == 0:
            return
        if self.accelerator.is_main_process:
            with torch.random.fork_rng():  # rollouts must not shift the training RNG
                out = self.run_dir / "eval" / f"step_{self.step:07d}"
                result = self.evaluator(self.eval_policy, self.step, out)
            self.eval_policy.train(False)
            rate = float(result["success_rate"])
            self.logger.log({"eval/success_rate": rate}, self.step)
            for i, video in enumerate(result.get("videos", [])):
                self.logger.log_video(f"eval/video_{i}", video, self.step)
            self.checkpoints.update_best(self.step, rate)
        self.accelerator.wait_for_everyone()

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean loss of the EMA weights over ``val_batches`` fixed validation batches."""
        data = self.val_data
        size = min(self.stream.batch_size, len(data))
        policy = self.eval_policy
        with torch.random.fork_rng():
            torch.manual_seed(0)
            total, count = 0.0, 0
            for b in range(self.config.val_batches):
                start = (b * size) % max(1, len(data) - size + 1)
                batch = _to_device(data.get_batch(list(range(start, start + size))), self.device)
                loss, _ = policy.compute_loss(batch)
                total, count = total + float(loss), count + 1
        return total / max(count, 1)
