"""Evaluation: rollouts (:func:`evaluate`), the perturbation benchmark (:func:`run_benchmark`)
and reports (:func:`write_report`, :func:`write_comparison`). See ``README.md`` here.

Names are imported on first use, so ``import stemob.evaluation.results`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "evaluate": "stemob.evaluation.rollout",
    "EpisodeRecord": "stemob.evaluation.results",
    "FactorResult": "stemob.evaluation.results",
    "mean_over": "stemob.evaluation.results",
    "load_benchmark": "stemob.evaluation.benchmark",
    "run_benchmark": "stemob.evaluation.benchmark",
    "write_report": "stemob.evaluation.report",
    "write_comparison": "stemob.evaluation.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stemob.evaluation' has no attribute {name!r}")
