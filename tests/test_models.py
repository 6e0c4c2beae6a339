"""Model loading and its clear errors."""

from __future__ import annotations

import shutil

import pytest

from stemob.errors import StemobError
from stemob.inversion import InversionSettings, Inverter, load_model, resolve_model_dir
from stemob.inversion.models import EMBEDDED_DIR


def test_loads_only_what_the_mode_needs(tiny_model):
    ddpm = load_model(str(tiny_model), with_unet=False)
    assert ddpm.unet is None and ddpm.conditioning is None
    ddim = load_model(str(tiny_model), with_unet=True)
    assert ddim.unet is not None
    assert ddim.conditioning.shape == (1, 77, 32)  # empty prompt through the text encoder
    assert ddim.size_multiple == 8 and ddpm.size_multiple == 4
    assert ddpm.fingerprint != ddim.fingerprint


def test_folder_without_vae(tmp_path, tiny_model):
    folder = tmp_path / "novae"
    shutil.copytree(tiny_model, folder)
    shutil.rmtree(folder / "vae")
    with pytest.raises(StemobError, match="has no vae/"):
        load_model(str(folder), with_unet=False)


def test_ddim_without_unet(tmp_path, tiny_model):
    folder = tmp_path / "nounet"
    shutil.copytree(tiny_model, folder)
    shutil.rmtree(folder / "unet")
    Inverter(InversionSettings(pretrained=str(folder)))  # ddpm needs no UNet
    with pytest.raises(StemobError, match="mode=ddim needs the model's UNet"):
        Inverter(InversionSettings(pretrained=str(folder), mode="ddim"))


def test_conditional_unet_without_text_encoder(tmp_path, tiny_model):
    folder = tmp_path / "notext"
    shutil.copytree(tiny_model, folder)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(StemobError, match="text_encoder/ and tokenizer/"):
        load_model(str(folder), with_unet=True)


def test_corrupt_weights(tmp_path, tiny_model):
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_model, folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(StemobError, match="cannot load the VAE"):
        load_model(str(folder), with_unet=False)


def test_missing_paths_and_uncached_hub_ids(tmp_path, monkeypatch):
    with pytest.raises(StemobError, match="no such folder"):
        resolve_model_dir(str(tmp_path / "nowhere"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(StemobError, match="is a file"):
        resolve_model_dir(str(tmp_path / "file.bin"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(StemobError, match="not in the local Hugging Face cache"):
        resolve_model_dir("stabilityai/stable-diffusion-2-1")


def test_hub_id_from_the_local_cache(tmp_path, monkeypatch, tiny_uncond_model):
    """A hub id resolves to its snapshot in the local cache, with no network."""
    hub = tmp_path / "hf" / "hub" / "models--someone--tiny"
    snapshot = hub / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_uncond_model, snapshot)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert resolve_model_dir("someone/tiny") == snapshot


def test_embedded_name_points_into_the_package():
    if (EMBEDDED_DIR / "vae" / "config.json").is_file():
        assert resolve_model_dir("embedded") == EMBEDDED_DIR
    else:
        with pytest.raises(StemobError, match="embedded prior is not in this install"):
            resolve_model_dir("embedded")
