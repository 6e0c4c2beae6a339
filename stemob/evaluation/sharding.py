"""Evaluation across processes: ``accelerate launch --num_processes N eval.py ...``.

Each rank runs every ``N``-th lockstep batch of every factor (:func:`stemob.evaluation.rollout.
evaluate`'s ``shard``), so the ranks' episodes are exactly a single process's, with the same
seeds, batches and per-batch torch seeds; the records of a factor are then gathered (accelerate's
``gather_object`` over the process group that ``accelerate launch`` or ``torchrun`` set up, gloo
on CPU) and the main rank writes the one report. Without such a launcher (``WORLD_SIZE`` unset
or 1) nothing is imported and nothing changes.
"""

from __future__ import annotations

import os

from stemob.evaluation.results import FactorResult


def current_shard() -> tuple[int, int] | None:
    """``(rank, world)`` under a multi-process launcher, else ``None``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=True) if not _has_gpu() else PartialState()
    return state.process_index, state.num_processes


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def is_main(shard: tuple[int, int] | None) -> bool:
    """Whether this process writes reports (rank 0, or the only process)."""
    return shard is None or shard[0] == 0


def merge(result: FactorResult) -> FactorResult:
    """This rank's part of a factor joined with every other rank's (a collective call: every
    rank must make it, in the same factor order). Records come back in episode order."""
    from accelerate.utils import gather_object

    parts = [FactorResult.from_dict(d) for d in gather_object([result.to_dict()])]
    records = sorted((r for p in parts for r in p.records), key=lambda r: r.index)
    return FactorResult(
        result.name,
        records,
        next((p.perturbation for p in parts if p.perturbation), None),
        max(p.wall_s for p in parts),
    )


def wait_for_everyone() -> None:
    """A barrier across the ranks (no-op in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
