"""Diffusion Policy (Chi et al., RSS 2023): config, 1D conditional UNet and the policy."""

from policies.diffusion.config import DiffusionConfig, paper_config, small_config
from policies.diffusion.policy import DiffusionPolicy
from policies.diffusion.transformer import TransformerDenoiser
from policies.diffusion.unet import ConditionalUnet1d

__all__ = [
    "ConditionalUnet1d",
    "DiffusionConfig",
    "DiffusionPolicy",
    "TransformerDenoiser",
    "paper_config",
    "small_config",
]
