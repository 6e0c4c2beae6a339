"""Finding and loading the diffusion model (VAE, scheduler config, UNet, empty-prompt conditioning).

One loader serves every model: a diffusers folder (Stable Diffusion 1.x / 2.x, sd-turbo, or the
folder that ``stemob.priors`` ships under the name ``embedded``), or a hub id already in the local
Hugging Face cache. Only the parts a mode needs are loaded: ``ddpm`` needs the VAE and the scheduler
config; ``ddim`` also the UNet and, for a text-conditioned UNet, the text encoder and tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stemob.errors import StemobError
from stemob.inversion.settings import EMBEDDED

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "priors" / "embedded"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def resolve_model_dir(pretrained: str) -> Path:
    """Return the local folder of ``pretrained`` (``embedded``, a folder, or a cached hub id)."""
    if pretrained == EMBEDDED:
        if not (EMBEDDED_DIR / "vae" / "config.json").is_file():
            raise StemobError(
                f"the embedded prior is not in this install (expected a diffusers folder at {EMBEDDED_DIR}); "
                "pass pretrained=<folder or hub id> instead"
            )
        return EMBEDDED_DIR
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise StemobError(f"pretrained={pretrained!r} is a file; expected a diffusers model folder")
    looks_like_hub_id = pretrained.count("/") == 1 and not pretrained.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise StemobError(
            f"pretrained={pretrained!r}: no such folder; expected a diffusers folder, a hub id "
            "('org/name') in the local cache, or 'embedded'"
        )
    return _hub_snapshot(pretrained)


def _hub_snapshot(repo_id: str) -> Path:
    """Local snapshot of a hub model: the cache first, the network only when HF_HUB_OFFLINE is unset."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.txt", "*.safetensors", "*.model"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception as cached_error:  # noqa: BLE001 - any failure means "not in the cache"
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise StemobError(
                f"hub model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                "download it on a machine with network access or pass a local folder"
            ) from cached_error
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as error:  # noqa: BLE001
        raise StemobError(f"could not find or download hub model {repo_id!r}: {error}") from error


def _read_config(folder: Path, part: str) -> dict[str, Any] | None:
    config = folder / part / ("scheduler_config.json" if part == "scheduler" else "config.json")
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StemobError(f"cannot read {config}: {error}") from error


def model_fingerprint(folder: Path, parts: tuple[str, ...]) -> str:
    """A cheap identity of a model: its configs and the sizes of its weight files."""
    digest = hashlib.sha256()
    for part in parts:
        sub = folder / part
        if not sub.is_dir():
            continue
        for file in sorted(sub.iterdir()):
            if file.suffix == ".json":
                digest.update(file.name.encode() + file.read_bytes())
            elif file.suffix in _WEIGHT_SUFFIXES:
                digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:16]


@dataclass
class DiffusionModel:
    """The loaded parts of a diffusion model that inversion uses."""

    folder: Path
    vae: torch.nn.Module
    scheduler_config: dict[str, Any]
    unet: torch.nn.Module | None = None
    conditioning: torch.Tensor | None = (
        None  # empty-prompt embeddings (1, L, D) for a conditional UNet
    )
    fingerprint: str = ""

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        shift = getattr(self.vae.config, "shift_factor", None)
        return float(shift) if shift is not None else 0.0

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_downsampling(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Frame sizes must be a multiple of this (VAE, and UNet when loaded)."""
        multiple = self.vae_downsampling
        if self.unet is not None:
            multiple *= 2 ** (len(self.unet.config.down_block_types) - 1)
        return multiple

    def unet_forward(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """Noise (or v / sample) prediction of the UNet with empty-prompt or no conditioning."""
        if self.unet is None:
            raise StemobError(f"model {self.folder} was loaded without a UNet")
        if self.conditioning is None:
            return self.unet(latents, timestep).sample
        context = self.conditioning.expand(latents.shape[0], -1, -1)
        return self.unet(latents, timestep, encoder_hidden_states=context).sample


def load_model(
    pretrained: str,
    *,
    with_unet: bool,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionModel:
    """Load the VAE and scheduler config of ``pretrained`` (and the UNet when ``with_unet``)."""
    from diffusers import AutoencoderKL

    folder = resolve_model_dir(pretrained)
    if _read_config(folder, "vae") is None:
        raise StemobError(
            f"model folder {folder} has no vae/ (a diffusers AutoencoderKL with vae/config.json); "
            "Stem-OB needs the model's VAE"
        )
    scheduler_config = _read_config(folder, "scheduler")
    if scheduler_config is None:
        raise StemobError(f"model folder {folder} has no scheduler/scheduler_config.json")
    try:
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
    except Exception as error:  # noqa: BLE001 - diffusers raises many kinds
        raise StemobError(f"cannot load the VAE of {folder}: {error}") from error
    vae = vae.to(device).eval().requires_grad_(False)
    parts = ("vae", "scheduler")
    unet = conditioning = None
    if with_unet:
        unet, conditioning = _load_unet(folder, device, dtype)
        parts += ("unet", "text_encoder")
    return DiffusionModel(
        folder=folder,
        vae=vae,
        scheduler_config=scheduler_config,
        unet=unet,
        conditioning=conditioning,
        fingerprint=model_fingerprint(folder, parts),
    )


def _load_unet(
    folder: Path, device: str | torch.device, dtype: torch.dtype
) -> tuple[torch.nn.Module, torch.Tensor | None]:
    import diffusers

    config = _read_config(folder, "unet")
    if config is None:
        raise StemobError(
            f"mode=ddim needs the model's UNet, but {folder} has no unet/ (use mode=ddpm, which needs none)"
        )
    class_name = config.get("_class_name", "UNet2DConditionModel")
    unet_class = getattr(diffusers, class_name, None)
    if unet_class is None or class_name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise StemobError(
            f"{folder}/unet is a {class_name!r}; expected UNet2DModel or UNet2DConditionModel"
        )
    try:
        unet = unet_class.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
    except Exception as error:  # noqa: BLE001
        raise StemobError(f"cannot load the UNet of {folder}: {error}") from error
    unet = unet.to(device).eval().requires_grad_(False)
    conditioning = None
    if class_name == "UNet2DConditionModel":
        conditioning = _empty_prompt_embeddings(folder, unet, device, dtype)
    return unet, conditioning


def _empty_prompt_embeddings(
    folder: Path, unet: torch.nn.Module, device: str | torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Text-encoder output for the empty prompt (the reference's unconditional DDIM inversion)."""
    if not (folder / "text_encoder").is_dir() or not (folder / "tokenizer").is_dir():
        raise StemobError(
            f"{folder}/unet is text-conditioned, so mode=ddim needs text_encoder/ and tokenizer/ "
            "to encode the empty prompt; the folder lacks them"
        )
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder / "tokenizer")
        encoder = transformers.AutoModel.from_pretrained(folder / "text_encoder", dtype=dtype)
    except Exception as error:  # noqa: BLE001
        raise StemobError(
            f"cannot load the text encoder or tokenizer of {folder}: {error}"
        ) from error
    encoder = encoder.to(device).eval()
    tokens = tokenizer(
        [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        hidden = encoder(tokens.input_ids.to(device))[0]
    if hidden.shape[-1] != unet.config.cross_attention_dim:
        raise StemobError(
            f"{folder}: text encoder width {hidden.shape[-1]} != UNet cross_attention_dim "
            f"{unet.config.cross_attention_dim}"
        )
    return hidden.to(dtype)
