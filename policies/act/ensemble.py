"""Temporal ensembling of overlapping action chunks (ACT's temporal aggregation)."""

from __future__ import annotations

import collections
import math

import torch

from stemob.errors import StemobError


class TemporalEnsembler:
    """Averages, for the current step, the actions that every still-valid chunk predicted for it.

    A chunk predicted at step ``s`` covers steps ``s .. s + chunk_size - 1``. At step ``t`` the
    valid chunks are ordered from the oldest (``i = 0``) to the newest and weighted by
    ``exp(-coeff * i)`` (normalised), as in ACT: older predictions weigh more for ``coeff > 0``.
    Call :meth:`update` once per environment step with the chunk predicted at that step.
    """

    def __init__(self, coeff: float, chunk_size: int) -> None:
        if coeff < 0 or chunk_size < 1:
            raise StemobError(f"need coeff >= 0 and chunk_size >= 1, got {coeff}, {chunk_size}")
        self.coeff, self.chunk_size = float(coeff), int(chunk_size)
        self.reset()

    def reset(self) -> None:
        """Forget every chunk (new episode)."""
        self.step = 0
        self.chunks: collections.deque[tuple[int, torch.Tensor]] = collections.deque()

    def weights(self, count: int) -> torch.Tensor:
        """Normalised weights of ``count`` chunks, oldest first."""
        w = torch.tensor([math.exp(-self.coeff * i) for i in range(count)], dtype=torch.float64)
        return w / w.sum()

    def update(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add the chunk ``(B, chunk_size, A)`` predicted now; return the action ``(B, A)``."""
        if chunk.dim() != 3 or chunk.shape[1] < self.chunk_size:
            raise StemobError(
                f"chunk has shape {tuple(chunk.shape)}, expected (B, >={self.chunk_size}, A)"
            )
        self.chunks.append((self.step, chunk[:, : self.chunk_size]))
        while self.chunks and self.chunks[0][0] + self.chunk_size <= self.step:
            self.chunks.popleft()
        actions = torch.stack([c[:, self.step - start] for start, c in self.chunks], 0)
        w = self.weights(len(self.chunks)).to(actions)
        self.step += 1
        return (actions * w.view(-1, 1, 1)).sum(0)
