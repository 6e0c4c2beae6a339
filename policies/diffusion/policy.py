"""Diffusion Policy: observation features condition a 1D UNet that denoises the action window."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from policies.base import Policy
from policies.diffusion.config import DiffusionConfig
from policies.diffusion.transformer import TransformerDenoiser
from policies.diffusion.unet import ConditionalUnet1d
from policies.encoders import ObservationEncoder
from stemob.errors import StemobError


class DiffusionPolicy(Policy):
    """Chi et al. (RSS 2023): DDPM training with epsilon prediction, DDIM or DDPM sampling.

    The observation features of the ``n_obs_steps`` frames are concatenated into one global
    conditioning vector, computed once per predicted chunk.
    """

    name = "diffusion"
    config_class = DiffusionConfig
    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig | Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.encoder = ObservationEncoder(
            image_keys=cfg.image_keys,
            latent_channels={k: cfg.obs_shapes[k][0] for k in cfg.latent_keys},
            state_dim=cfg.state_dim,
            backbone=cfg.vision_backbone,
            group_norm=cfg.use_group_norm,
            num_keypoints=cfg.num_keypoints,
            feature_dim=cfg.image_feature_dim,
            crop_shape=cfg.crop_shape,
            shared=cfg.share_encoder,
            width=cfg.cnn_width,
            stride=cfg.cnn_stride,
        )
        cond_dim = self.encoder.out_dim * cfg.n_obs_steps
        self.denoiser: ConditionalUnet1d | TransformerDenoiser
        if cfg.denoiser == "unet":
            self.denoiser = ConditionalUnet1d(
                cfg.action_dim,
                cond_dim,
                cfg.down_dims,
                cfg.kernel_size,
                cfg.n_groups,
                cfg.step_embed_dim,
            )
        else:
            self.denoiser = TransformerDenoiser(
                cfg.action_dim,
                cond_dim,
                cfg.n_obs_steps,
                cfg.horizon,
                n_layer=cfg.transformer_layers,
                n_head=cfg.transformer_heads,
                n_emb=cfg.transformer_dim,
                p_drop_attn=cfg.transformer_dropout,
            )
        self.noise_scheduler = DDPMScheduler(**self._scheduler_kwargs())

    def _scheduler_kwargs(self) -> dict[str, Any]:
        cfg = self.config
        return dict(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
            clip_sample=cfg.clip_sample,
            clip_sample_range=cfg.clip_sample_range,
        )

    def make_inference_scheduler(self, kind: str | None = None) -> DDIMScheduler | DDPMScheduler:
        """A fresh sampling scheduler (``ddim`` or ``ddpm``; default from the config)."""
        kind = kind or self.config.inference_scheduler
        if kind == "ddim":
            return DDIMScheduler(**self._scheduler_kwargs(), set_alpha_to_one=True)
        if kind == "ddpm":
            return DDPMScheduler(**self._scheduler_kwargs())
        raise StemobError(f"inference scheduler {kind!r}: expected ddim or ddpm")

    def encode_obs(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Global conditioning ``(B, n_obs_steps * feature)`` of an observation window."""
        images, state = self.prepare_obs(obs)
        b, t = next(iter(images.values())).shape[:2]
        flat = {k: v.flatten(0, 1) for k, v in images.items()}
        feats = self.encoder(flat, state.flatten(0, 1) if state is not None else None)
        return feats.reshape(b, t * feats.shape[-1])

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Denoising loss (MSE to the noise, or to the clean actions for ``sample``)."""
        cfg = self.config
        action = torch.as_tensor(batch["action"]).to(self.normalizer.scale__action.device)
        if action.dim() != 3 or action.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise StemobError(
                f"batch['action'] has shape {tuple(action.shape)}, expected "
                f"(B, {cfg.horizon}, {cfg.action_dim})"
            )
        cond = self.encode_obs(batch["obs"])
        clean = self.normalizer.normalize("action", action)
        noise = torch.randn_like(clean)
        steps = torch.randint(0, cfg.num_train_timesteps, (clean.shape[0],), device=clean.device)
        noisy = self.noise_scheduler.add_noise(clean, noise, steps)
        pred = self.denoiser(noisy, steps, cond)
        target = noise if cfg.prediction_type == "epsilon" else clean
        loss = F.mse_loss(pred, target, reduction="none")
        if cfg.mask_padding and "action_is_pad" in batch:
            keep = (~torch.as_tensor(batch["action_is_pad"]).to(loss.device)).float()[..., None]
            loss = (loss * keep).sum() / (keep.sum() * loss.shape[-1]).clamp(min=1)
        else:
            loss = loss.mean()
        return loss, {"loss": float(loss.detach())}

    def sample(
        self,
        cond: torch.Tensor,
        scheduler: str | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoise from Gaussian noise given the conditioning; normalised ``(B, horizon, A)``."""
        cfg = self.config
        sched = self.make_inference_scheduler(scheduler)
        steps = num_inference_steps or cfg.num_inference_steps or cfg.num_train_timesteps
        sched.set_timesteps(steps, device=cond.device)
        shape = (cond.shape[0], cfg.horizon, cfg.action_dim)
        x = torch.randn(shape, generator=generator, device="cpu").to(cond.device)
        # the observation (and step) conditioning is computed once per chunk
        cache = self.denoiser.precompute(cond, sched.timesteps)
        denoiser = self.denoiser if self._compiled is None else self._compiled
        for i, t in enumerate(sched.timesteps):
            out = denoiser(x, t, cond_cache=cache, step_index=i)
            x = sched.step(out, t, x, generator=generator).prev_sample
        return x

    def _compile_target(self) -> Any:
        """The denoiser (one denoising step)."""
        return self.denoiser

    @torch.inference_mode()
    def predict_chunk(
        self,
        obs: Mapping[str, torch.Tensor],
        scheduler: str | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The denoised window ``(B, horizon, A)`` in environment units."""
        cond = self.encode_obs(obs)
        x = self.sample(cond, scheduler, num_inference_steps, generator)
        return self.normalizer.unnormalize("action", x)
