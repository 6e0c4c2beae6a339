"""GENIMA's diffusion agent: a latent diffusion model that draws the target spheres on a tiled
observation (image-to-image), trained to denoise the tiled target given the tiled observation.

Two recipes, one interface (:class:`TargetDrawer`):

- ``controlnet`` (GENIMA's, for a Stable Diffusion folder: ``pretrained=/models/sd-turbo``):
  diffusers ``ControlNetModel.from_unet`` on the frozen text-conditioned UNet (VAE and text
  encoder frozen, the empty prompt), the tiled observation as the ControlNet's image; lr 1e-5.
- ``concat`` (the CPU default, on the embedded prior or any folder with an unconditional
  ``UNet2DModel``): the observation's latent concatenated to the noisy target latent, the UNet's
  first convolution widened with zero weights for the new channels and every weight starting from
  the prior's (InstructPix2Pix's way of conditioning a pretrained UNet); the VAE frozen.

Both predict the noise (epsilon) of the target latent (with ``residual``: of the target's latent
minus the observation's) under the folder's DDPM schedule and draw with DDIM in
``num_inference_steps`` (GENIMA: 10) from pure noise, without guidance. Images are
uint8 ``(B, H, W, 3)``; sides must be multiples of the VAE's downsampling.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stemob.errors import StemobError

RECIPES = ("auto", "concat", "controlnet")


@dataclass
class DrawerConfig:
    """How the drawer is built and run.

    Attributes:
        pretrained: ``embedded`` or a diffusers folder (VAE, scheduler, UNet).
        recipe: ``concat``, ``controlnet`` or ``auto`` (controlnet for a text-conditioned UNet).
        num_inference_steps: DDIM steps when drawing (GENIMA: 10).
        lr: AdamW learning rate (GENIMA's ControlNet: 1e-5; the CPU concat recipe: 1e-4).
        residual: denoise the difference between the target's and the observation's latents
            and add it back when drawing (the spheres are all that differs), instead of the
            target's latents themselves (GENIMA's way).
    """

    pretrained: str = "embedded"
    recipe: str = "auto"
    num_inference_steps: int = 10
    lr: float = 1e-4
    residual: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise StemobError(f"recipe {self.recipe!r}: expected one of {RECIPES}")
        if self.num_inference_steps < 1:
            raise StemobError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")


def _widened_unet(unet: torch.nn.Module, extra: int) -> torch.nn.Module:
    """A copy of an unconditional ``UNet2DModel`` whose first convolution takes ``extra`` more
    input channels, with zero weights for them (so it starts as the prior)."""
    from diffusers import UNet2DModel

    config = dict(unet.config)
    config["in_channels"] = int(config["in_channels"]) + extra
    wide = UNet2DModel.from_config(config)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    weight = state["conv_in.weight"]
    grown = torch.zeros(weight.shape[0], weight.shape[1] + extra, *weight.shape[2:])
    grown[:, : weight.shape[1]] = weight
    state["conv_in.weight"] = grown
    wide.load_state_dict(state)
    return wide


class TargetDrawer(torch.nn.Module):
    """The diffusion agent: ``loss(obs, target)`` to train, ``draw(obs)`` to generate."""

    def __init__(self, config: DrawerConfig, device: str | torch.device = "cpu") -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler

        from stemob.inversion.models import load_model

        self.config = config
        model = load_model(config.pretrained, with_unet=True, device=device)
        self.prior_fingerprint = model.fingerprint
        self.vae = model.vae.requires_grad_(False)
        self.scaling, self.shift = model.scaling_factor, model.shift_factor
        self.multiple = model.vae_downsampling
        conditional = model.conditioning is not None
        recipe = config.recipe
        if recipe == "auto":
            recipe = "controlnet" if conditional else "concat"
        if recipe == "controlnet" and not conditional:
            raise StemobError(
                f"recipe controlnet needs a text-conditioned UNet2DConditionModel; "
                f"{model.folder}/unet is unconditional (use recipe=concat)"
            )
        if recipe == "concat" and conditional:
            raise StemobError(
                f"recipe concat needs an unconditional UNet2DModel; {model.folder}/unet is "
                "text-conditioned (use recipe=controlnet, GENIMA's)"
            )
        self.recipe = recipe
        self.prompt = model.conditioning  # (1, L, D) empty-prompt embeddings, or None
        if recipe == "concat":
            self.denoiser = _widened_unet(model.unet, model.latent_channels).to(device)
            self.unet = None
        else:
            from diffusers import ControlNetModel

            self.unet = model.unet.requires_grad_(False)
            levels = int(np.log2(self.multiple))
            channels = (16, 32, 96, 256)[: levels + 1]  # one stride-2 block per VAE halving
            self.denoiser = ControlNetModel.from_unet(
                self.unet, conditioning_embedding_out_channels=channels
            ).to(device)
        schedule = {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")}
        schedule["prediction_type"] = "epsilon"
        self.train_schedule = DDPMScheduler.from_config(schedule)
        self.sample_schedule = DDIMScheduler.from_config(schedule)
        self.device_ = torch.device(device)

    # ----------------------------------------------------------------- pieces
    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def _pixels(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(images)).to(self.device_)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise StemobError(f"images must be (B, H, W, 3) uint8, got {tuple(x.shape)}")
        h, w = x.shape[1:3]
        if h % self.multiple or w % self.multiple:
            raise StemobError(
                f"image sides {h}x{w} must be multiples of the VAE's downsampling {self.multiple}"
            )
        return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scaled latents of uint8 images (the posterior mean)."""
        latent = self.vae.encode(self._pixels(images)).latent_dist.mean
        return (latent - self.shift) * self.scaling

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        x = self.vae.decode(latents / self.scaling + self.shift).sample
        return (
            ((x.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
        )

    def predict(
        self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        """The predicted noise; ``condition``: the observation's latents (concat) or its pixels
        in [0, 1] (controlnet)."""
        if self.recipe == "concat":
            return self.denoiser(torch.cat([noisy, condition], 1), t).sample
        prompt = self.prompt.expand(noisy.shape[0], -1, -1)
        down, mid = self.denoiser(noisy, t, encoder_hidden_states=prompt,
                                  controlnet_cond=condition, return_dict=False)  # fmt: skip
        return self.unet(noisy, t, encoder_hidden_states=prompt,
                         down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample  # fmt: skip

    def _condition(self, observations: np.ndarray | torch.Tensor) -> torch.Tensor:
        if self.recipe == "concat":
            return self.encode(observations)
        return (self._pixels(observations) + 1) / 2

    def _base(
        self, observations: np.ndarray | torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor | None:
        """The latents a residual drawer adds its drawing to (None without ``residual``)."""
        if not self.config.residual:
            return None
        return condition if self.recipe == "concat" else self.encode(observations)

    # ----------------------------------------------------------------- use
    def loss(
        self,
        observations: np.ndarray,
        targets: np.ndarray,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Noise-prediction MSE on the targets' latents at uniformly drawn timesteps."""
        condition = self._condition(observations)
        return self.loss_from_latents(self.encode(targets), condition, generator,
                                      self._base(observations, condition))  # fmt: skip

    def loss_from_latents(
        self, clean: torch.Tensor, condition: torch.Tensor, generator: torch.Generator | None = None,
        base: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """:meth:`loss` on already encoded targets and conditions (a frozen VAE's cache); with
        ``residual``, ``base`` is the observations' latents (the concat recipe's ``condition``
        when omitted)."""
        if self.config.residual:
            if base is None and self.recipe != "concat":
                raise StemobError("residual drawer: pass the observations' latents as base")
            clean = clean - (condition if base is None else base)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        steps = self.train_schedule.config.num_train_timesteps
        t = torch.randint(0, steps, (clean.shape[0],), generator=generator, device=clean.device)
        noisy = self.train_schedule.add_noise(clean, noise, t)
        return torch.nn.functional.mse_loss(self.predict(noisy, t, condition), noise)

    @torch.no_grad()
    def draw(self, observations: np.ndarray, seed: int = 0) -> np.ndarray:
        """The tiled targets drawn on ``observations`` (uint8 in, uint8 out)."""
        condition = self._condition(observations)
        shape = (len(observations), self.vae.config.latent_channels,
                 observations.shape[1] // self.multiple, observations.shape[2] // self.multiple)  # fmt: skip
        generator = torch.Generator().manual_seed(int(seed))
        latents = torch.randn(shape, generator=generator).to(self.device_)
        schedule = self.sample_schedule
        schedule.set_timesteps(self.config.num_inference_steps)
        for t in schedule.timesteps:
            eps = self.predict(latents, t.expand(len(latents)).to(self.device_), condition)
            latents = schedule.step(eps, t, latents).prev_sample
        base = self._base(observations, condition)
        return self.decode(latents if base is None else latents + base)

    # ----------------------------------------------------------------- files
    def save(self, folder: str | Path) -> Path:
        """The trained part (diffusers folder ``denoiser/``) and ``drawer.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.denoiser.save_pretrained(folder / "denoiser")
        record = {"config": asdict(self.config), "recipe": self.recipe,
                  "prior_fingerprint": self.prior_fingerprint}  # fmt: skip
        (folder / "drawer.json").write_text(json.dumps(record, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> TargetDrawer:
        """A drawer saved by :meth:`save` (its prior must be the one it was trained on)."""
        folder = Path(folder)
        path = folder / "drawer.json"
        if not path.is_file():
            raise StemobError(f"{folder}: no drawer.json (not a GENIMA drawer checkpoint)")
        record = json.loads(path.read_text())
        drawer = cls(DrawerConfig(**record["config"]), device=device)
        if drawer.prior_fingerprint != record["prior_fingerprint"]:
            raise StemobError(
                f"{folder} was trained on another version of {record['config']['pretrained']!r} "
                f"(fingerprint {record['prior_fingerprint']}, now {drawer.prior_fingerprint})"
            )
        kind = type(drawer.denoiser)
        drawer.denoiser = kind.from_pretrained(folder / "denoiser").to(drawer.device_)
        return drawer


def describe(drawer: TargetDrawer) -> dict[str, Any]:
    """Parameter counts of the drawer's parts (trained and frozen)."""
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    return {"recipe": drawer.recipe, "trained": count(drawer.denoiser), "vae": count(drawer.vae),
            "frozen_unet": count(drawer.unet)}  # fmt: skip
