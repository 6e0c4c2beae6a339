"""Shared fixtures: tiny randomly initialised diffusers folders and small robomimic-layout datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for the tabletop suite
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one core; the thread count is restored for the other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny SD-like folder: VAE (4x), text-conditioned UNet, CLIP text encoder and tokenizer."""
    from stemob.inversion.model_builder import build_model_folder

    return build_model_folder(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def tiny_uncond_model(tmp_path_factory) -> Path:
    """A tiny folder with an unconditional UNet2DModel (the shape of the embedded prior)."""
    from stemob.inversion.model_builder import build_model_folder

    return build_model_folder(tmp_path_factory.mktemp("models") / "tiny-uncond", "tiny-uncond")


def write_robomimic_hdf5(
    path: Path, demos: int = 3, frames: int = 40, size: int = 32, seed: int = 0
) -> Path:
    """A small robomimic-layout file with two image keys and a low-dim key per demo."""
    import h5py

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        data.attrs["total"] = demos * frames
        for d in range(demos):
            demo = data.create_group(f"demo_{d}")
            demo.attrs["num_samples"] = frames
            demo.create_dataset("actions", data=rng.normal(size=(frames, 7)).astype(np.float32))
            for key in ("agentview_image", "robot0_eye_in_hand_image"):
                demo.create_dataset(
                    f"obs/{key}", data=rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
                )
            demo.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(frames, 3)))
    return path


@pytest.fixture
def robomimic_file(tmp_path) -> Path:
    return write_robomimic_hdf5(tmp_path / "demos.hdf5")
