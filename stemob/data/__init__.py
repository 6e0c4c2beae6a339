"""Demonstration datasets: readers (robomimic HDF5, RLBench, LeRobot, folders), writers, the
sequence sampler, normalisation statistics and the torch ``DemoDataset``.

Imports nothing of the project but ``stemob.errors`` and ``stemob.inversion`` (DESIGN.md).
Names are imported lazily so ``stemob-data`` starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Episode": "stemob.data.episodes",
    "rename_keys": "stemob.data.episodes",
    "DatasetConfig": "stemob.data.dataset",
    "DemoDataset": "stemob.data.dataset",
    "SequenceSampler": "stemob.data.sampler",
    "split_episodes": "stemob.data.sampler",
    "Normalizer": "stemob.data.normalizer",
    "KeyStats": "stemob.data.normalizer",
    "compute_stats": "stemob.data.normalizer",
    "RobomimicReader": "stemob.data.robomimic",
    "write_robomimic": "stemob.data.robomimic",
    "RLBenchReader": "stemob.data.rlbench",
    "write_rlbench": "stemob.data.rlbench",
    "LeRobotReader": "stemob.data.lerobot",
    "write_lerobot": "stemob.data.lerobot",
    "FolderReader": "stemob.data.folder",
    "write_folder": "stemob.data.folder",
    "convert_to_robomimic": "stemob.data.convert",
    "detect_format": "stemob.data.detect",
    "open_reader": "stemob.data.detect",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stemob.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
