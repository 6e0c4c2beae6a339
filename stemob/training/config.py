"""The training section of a run config (``configs/training/*.yaml``), validated."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stemob.errors import StemobError


@dataclass
class TrainingConfig:
    """How long and how a policy is trained, evaluated and checkpointed.

    Attributes:
        steps: optimisation steps.
        batch_size: global batch size (split evenly over the processes of a distributed run).
        num_workers: DataLoader worker processes per training process.
        seed: seed of the model initialisation, the data order and the training noise.
        device: ``auto`` (accelerate's choice), ``cpu`` or ``cuda``.
        threads: torch CPU threads per process (0: leave torch's default).
        grad_clip: maximum gradient norm (0: no clipping; the norm is logged either way).
        log_every: steps between log lines (train loss, lr, grad norm, samples/s, timings).
        val_every: steps between validation losses (0: never; needs a validation split).
        val_batches: batches averaged per validation loss.
        eval_every: steps between evaluation rollouts on the clean task (0: never).
        eval_episodes: episodes per periodic evaluation.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        keep_last: checkpoints kept besides the best one.
        eval_envs: environments run in lockstep during evaluations.
        videos: rollout videos written per evaluation.
    """

    steps: int = 20000
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    grad_clip: float = 0.0
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 4
    eval_every: int = 0
    eval_episodes: int = 10
    checkpoint_every: int = 2000
    keep_last: int = 2
    eval_envs: int = 1
    videos: int = 2

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "log_every", "val_batches", "keep_last", "eval_envs")
        non_negative = (
            "num_workers", "threads", "val_every", "eval_every", "eval_episodes",
            "checkpoint_every", "videos",
        )  # fmt: skip
        for name in positive + non_negative:
            value = getattr(self, name)
            minimum = 1 if name in positive else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise StemobError(f"training.{name} must be an integer >= {minimum}, got {value!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise StemobError(f"training.device must be auto, cpu or cuda, got {self.device!r}")
        if not isinstance(self.grad_clip, (int, float)) or self.grad_clip < 0:
            raise StemobError(f"training.grad_clip must be >= 0, got {self.grad_clip!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        """Build from the ``training`` section; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StemobError(
                f"unknown training option(s) {unknown}: expected some of {sorted(names)}"
            )
        return cls(**dict(data))
