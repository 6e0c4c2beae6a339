"""Stem-OB inversion: model loading, the Inverter (ddpm / ddim), the CLI and the dataset cache.

Imports nothing else of the project (see DESIGN.md's dependency direction).
"""

from stemob.inversion.dataset_cache import build_cache, cache_path, find_cache, verify_cache
from stemob.inversion.inverter import FrameId, Inverter, frame_seed, timestep_for_step
from stemob.inversion.models import DiffusionModel, load_model, resolve_model_dir
from stemob.inversion.settings import EMBEDDED, MODES, InversionSettings

__all__ = [
    "EMBEDDED",
    "MODES",
    "DiffusionModel",
    "FrameId",
    "InversionSettings",
    "Inverter",
    "build_cache",
    "cache_path",
    "find_cache",
    "frame_seed",
    "load_model",
    "resolve_model_dir",
    "timestep_for_step",
    "verify_cache",
]
