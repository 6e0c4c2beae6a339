"""An endless, resumable stream of training batches (exact position after a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from stemob.errors import StemobError


class BatchStream:
    """Batches of ``dataset`` in a seeded random order, epoch after epoch, from a saved position.

    Each process of a distributed run draws its own permutation (seeded by ``seed``, its rank and
    the epoch) and takes ``batch_size`` samples at a time; the last incomplete batch of an epoch
    is dropped. ``state_dict()`` / ``load_state_dict()`` give exact resumption. With
    ``num_workers > 0`` the batches are fetched by a DataLoader over the remaining indices.
    """

    def __init__(
        self, dataset: Any, batch_size: int, seed: int, rank: int = 0, num_workers: int = 0
    ) -> None:
        if batch_size > len(dataset):
            raise StemobError(
                f"batch size per process ({batch_size}) exceeds the {len(dataset)} training "
                "samples: lower training.batch_size or record more demonstrations"
            )
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.rank, self.num_workers = seed, rank, num_workers
        self.epoch, self.position = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        return rng.permutation(len(self.dataset))

    def _epoch_batches(self) -> Iterator[Any]:
        order = self._order(self.epoch)
        starts = range(self.position * self.batch_size, self.batches_per_epoch * self.batch_size,
                       self.batch_size)  # fmt: skip
        index_lists = [order[s : s + self.batch_size].tolist() for s in starts]
        if self.num_workers == 0:
            for indices in index_lists:
                yield self.dataset.get_batch(indices)
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, sampler=index_lists, batch_size=None, num_workers=self.num_workers
        )
        yield from loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            for batch in self._epoch_batches():
                self.position += 1
                yield batch
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """Where the stream stands: the epoch and the batches already taken from it."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
