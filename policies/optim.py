"""Training helpers shared by the policies: EMA of the weights, the AdamW factory and the
learning-rate schedule (linear warm-up, then cosine or constant)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from stemob.errors import StemobError


class EMA:
    """Exponential moving average of a model's weights (Diffusion Policy's schedule).

    The decay at update ``n`` is ``1 - (1 + n / inv_gamma) ** -power`` clipped to
    ``[min_decay, max_decay]``; buffers (e.g. BatchNorm statistics) are copied as they are.
    ``self.model`` is the averaged copy, used for evaluation and saved as the policy.
    """

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        min_decay: float = 0.0,
        max_decay: float = 0.9999,
        update_after_step: int = 0,
    ) -> None:
        if not 0.0 <= min_decay <= max_decay <= 1.0:
            raise StemobError(
                f"EMA needs 0 <= min_decay <= max_decay <= 1, got {min_decay}, {max_decay}"
            )
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma = power, inv_gamma
        self.min_decay, self.max_decay = min_decay, max_decay
        self.update_after_step = update_after_step
        self.optimization_step = 0
        self.decay = 0.0

    def get_decay(self, step: int) -> float:
        """The decay used at optimisation step ``step``."""
        n = max(0, step - self.update_after_step - 1)
        if n <= 0:
            return 0.0
        value = 1.0 - (1.0 + n / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.max_decay))

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self.optimization_step += 1
        self.decay = self.get_decay(self.optimization_step)
        ema_params = dict(self.model.named_parameters())
        for name, param in model.named_parameters():
            target = ema_params[name]
            if param.requires_grad:
                target.lerp_(param.detach(), 1.0 - self.decay)
            else:
                target.copy_(param.detach())
        ema_buffers = dict(self.model.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)

    def state_dict(self) -> dict[str, Any]:
        """Resumable state (weights and step counter)."""
        return {"model": self.model.state_dict(), "optimization_step": self.optimization_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimization_step = int(state["optimization_step"])


def make_optimizer(policy: Any) -> torch.optim.AdamW:
    """AdamW over ``policy.param_groups()`` with the config's lr, betas and weight decay.

    The fused implementation is used where torch has one (CPU, CUDA): the same update in one
    pass over each tensor (3x faster on CPU than the per-tensor loop).
    """
    cfg = policy.config
    groups = policy.param_groups()
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params
    )
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        weight_decay=cfg.weight_decay,
        fused=fused or None,
    )


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, name: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then ``cosine`` decay to 0 at ``total_steps`` or
    ``constant``."""
    if name not in ("cosine", "constant"):
        raise StemobError(f"lr scheduler {name!r}: expected cosine or constant")
    if total_steps < 1 or warmup_steps < 0:
        raise StemobError(
            f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        if name == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_training(policy: Any, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """Optimiser and learning-rate schedule from the policy's config."""
    optimizer = make_optimizer(policy)
    cfg = policy.config
    return optimizer, make_lr_scheduler(
        optimizer, cfg.lr_scheduler, cfg.lr_warmup_steps, total_steps
    )
