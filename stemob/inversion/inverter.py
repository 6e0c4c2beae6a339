"""The Stem-OB ``Inverter``: diffusion inversion of batches of observation frames.

``ddpm`` mode (the reference default): ``z0 = mode(E(x)) * scaling_factor``, then
``z = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps`` with ``t`` the timestep of inversion step ``k`` of an
``N``-step schedule of the model's own scheduler config (counted from the clean end), then decode.
``ddim`` mode: the first ``k`` of ``N`` DDIM inverse steps with the UNet (empty prompt), then decode.

Per-frame noise comes from a generator seeded by ``(seed, episode, step, camera)``, so a frame's
result does not depend on the batch it was inverted in, on sharding, or on resuming.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stemob.errors import StemobError
from stemob.inversion.models import DiffusionModel, load_model
from stemob.inversion.settings import InversionSettings

FrameId = tuple[int, int, str]
"""(episode, step, camera): what seeds a frame's noise."""

Images = np.ndarray | torch.Tensor

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """``'fp16'``/``'bf16'``/``'fp32'`` (or a torch dtype) to a torch dtype; ``None`` is float32."""
    if name is None:
        return torch.float32
    if isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise StemobError(f"unknown dtype {name!r}: expected one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def frame_seed(seed: int, episode: int, step: int, camera: str) -> int:
    """The 63-bit seed of one frame's noise generator."""
    key = f"{seed}/{episode}/{step}/{camera}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)


def timestep_for_step(
    scheduler_config: dict[str, Any], num_steps: int, inversion_steps: int
) -> int:
    """Timestep of inversion step ``k`` of an ``N``-step schedule, counted from the clean end.

    Uses the model's own scheduler config (its spacing, offset and training length). With Stable
    Diffusion 2.1's config and N=50 this gives ``t = 20k - 19`` (k=15 -> 281).
    """
    if inversion_steps == 0:
        raise ValueError("step 0 has no timestep: it is the clean latent")
    ascending = _ddpm_schedule(scheduler_config, num_steps)[1]
    return int(ascending[inversion_steps - 1])


def _scheduler_from(scheduler_class: Any, scheduler_config: dict[str, Any]) -> Any:
    """Build ``scheduler_class`` from another scheduler's config, quietly dropping keys it lacks."""
    accepted = inspect.signature(scheduler_class.__init__).parameters
    return scheduler_class.from_config({k: v for k, v in scheduler_config.items() if k in accepted})


def _ddpm_schedule(scheduler_config: dict[str, Any], num_steps: int) -> tuple[Any, list[int]]:
    from diffusers import DDPMScheduler

    scheduler = _scheduler_from(DDPMScheduler, scheduler_config)
    train_steps = scheduler.config.num_train_timesteps
    if num_steps > train_steps:
        raise StemobError(
            f"num_steps={num_steps} exceeds the model's {train_steps} training timesteps"
        )
    scheduler.set_timesteps(num_steps)
    return scheduler, sorted(int(t) for t in scheduler.timesteps)


class Inverter:
    """Stem-OB inversion of frames with one diffusion model and one set of settings.

    Example:
        >>> inverter = Inverter(InversionSettings(mode="ddpm", inversion_steps=15, seed=0))
        >>> inverted = inverter.invert(frames_uint8_bhwc, frame_ids=[(0, i, "front") for i in range(len(frames))])
    """

    def __init__(
        self,
        settings: InversionSettings | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        model: DiffusionModel | None = None,
    ) -> None:
        self.settings = settings or InversionSettings()
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # small conv nets run many times slower on denormals
        needs_unet = self.settings.mode == "ddim" and self.settings.inversion_steps > 0
        if model is None:
            model = load_model(
                self.settings.pretrained, with_unet=needs_unet, device=self.device, dtype=self.dtype
            )
        elif needs_unet and model.unet is None:
            raise StemobError(
                f"mode=ddim needs the model's UNet, but {model.folder} was loaded without one"
            )
        self.model = model
        k, n = self.settings.inversion_steps, self.settings.num_steps
        scheduler, ascending = _ddpm_schedule(model.scheduler_config, n)
        self.timestep: int | None = ascending[k - 1] if k > 0 else None
        self.alpha_bar: float = float(scheduler.alphas_cumprod[self.timestep]) if k > 0 else 1.0
        self._inverse_scheduler = None
        if needs_unet:
            from diffusers import DDIMInverseScheduler

            self._inverse_scheduler = _scheduler_from(DDIMInverseScheduler, model.scheduler_config)
            try:
                self._inverse_scheduler.set_timesteps(n)
            except ValueError as error:  # e.g. a timestep spacing DDIM inversion does not support
                raise StemobError(
                    f"mode=ddim cannot use the scheduler of {model.folder}: {error}"
                ) from error

    # ------------------------------------------------------------------ public API
    def invert(
        self,
        images: Images,
        frame_ids: Sequence[FrameId] | None = None,
        *,
        output: str = "rgb",
        batch_size: int | None = None,
    ) -> Images:
        """Invert a batch of frames.

        Args:
            images: uint8 ``(B, H, W, 3)`` / ``(H, W, 3)`` arrays or tensors, or float arrays or
                tensors ``(B, 3, H, W)`` / ``(3, H, W)`` in [0, 1].
            frame_ids: one ``(episode, step, camera)`` per frame; it seeds the frame's noise. Default:
                ``(0, i, "")`` for the i-th frame of this call.
            output: ``"rgb"`` (same type, layout and size as the input), ``"latent"`` (the inverted
                latent, a float32 tensor ``(B, C, h, w)``) or ``"both"`` (a tuple of the two).
            batch_size: process at most this many frames at once (default: all).
        """
        if output not in ("rgb", "latent", "both"):
            raise StemobError(f"unknown output {output!r}: expected 'rgb', 'latent' or 'both'")
        pixels, layout = to_model_pixels(images)
        count = pixels.shape[0]
        if frame_ids is None:
            frame_ids = [(0, i, "") for i in range(count)]
        if len(frame_ids) != count:
            raise StemobError(f"got {len(frame_ids)} frame_ids for {count} frames")
        base_seed = self.settings.seed if self.settings.seed is not None else secrets.randbits(63)
        chunk = batch_size or count or 1
        rgb, latents = [], []
        for start in range(0, count, chunk):
            ids = frame_ids[start : start + chunk]
            decoded, z = self._invert_pixels(
                pixels[start : start + chunk], ids, base_seed, output != "latent"
            )
            rgb.append(decoded)
            latents.append(z)
        latent = torch.cat(latents) if latents else torch.zeros(0)
        if output == "latent":
            return latent
        result = from_model_pixels(
            torch.cat(rgb) if rgb else pixels[:0], layout, self.settings.rounding == "truncate"
        )
        return (result, latent) if output == "both" else result

    __call__ = invert

    # ------------------------------------------------------------------ steps
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] ``(B, 3, H, W)`` -> scaled latent mode ``(B, C, h, w)`` in float32."""
        x = pixels.to(self.device, self.dtype)
        mean = self.model.vae.encode(x).latent_dist.mode()
        return (mean.float() - self.model.shift_factor) * self.model.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> pixels in [-1, 1] (float32)."""
        z = latents / self.model.scaling_factor + self.model.shift_factor
        return self.model.vae.decode(z.to(self.device, self.dtype)).sample.float().clamp(-1, 1)

    def noise(
        self, latent_shape: Sequence[int], frame_ids: Sequence[FrameId], base_seed: int
    ) -> torch.Tensor:
        """Standard normal noise, one generator per frame seeded by its id (on the CPU, so devices agree)."""
        frames = []
        for episode, step, camera in frame_ids:
            generator = torch.Generator().manual_seed(
                frame_seed(base_seed, int(episode), int(step), str(camera))
            )
            frames.append(torch.randn(tuple(latent_shape), generator=generator))
        return torch.stack(frames).to(self.device)

    def forward_noise(
        self, z0: torch.Tensor, frame_ids: Sequence[FrameId], base_seed: int
    ) -> torch.Tensor:
        """ddpm mode: ``sqrt(abar_t) z0 + sqrt(1 - abar_t) eps``."""
        if self.timestep is None:
            return z0
        eps = self.noise(z0.shape[1:], frame_ids, base_seed)
        return self.alpha_bar**0.5 * z0 + (1.0 - self.alpha_bar) ** 0.5 * eps

    def ddim_invert(self, z0: torch.Tensor) -> torch.Tensor:
        """ddim mode: the first k of N DDIM inverse steps with the UNet."""
        scheduler = self._inverse_scheduler
        z = z0
        if scheduler is None:
            return z
        for t in scheduler.timesteps[: self.settings.inversion_steps]:
            prediction = self.model.unet_forward(z.to(self.dtype), t.to(self.device)).float()
            z = scheduler.step(prediction, t, z).prev_sample
        return z

    @torch.inference_mode()
    def _invert_pixels(
        self, pixels: torch.Tensor, frame_ids: Sequence[FrameId], base_seed: int, decode: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(decoded pixels in [-1, 1] at the input size or None, inverted latent) of one chunk."""
        height, width = pixels.shape[-2:]
        z0 = self.encode(self._fit(pixels))
        if self.settings.mode == "ddpm":
            z = self.forward_noise(z0, frame_ids, base_seed)
        else:
            z = self.ddim_invert(z0)
        decoded = self._unfit(self.decode(z), height, width).cpu() if decode else None
        return decoded, z.float().cpu()

    # ------------------------------------------------------------------ sizes
    def _processing_size(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(resized h, resized w, padded h, padded w) for a frame of the given size."""
        resolution, short = self.settings.resolution, self.settings.short_side
        h, w = (resolution, resolution) if resolution else (height, width)
        if short:
            scale = short / min(height, width)
            h, w = max(1, round(height * scale)), max(1, round(width * scale))
        multiple = self.model.size_multiple
        return h, w, -(-h // multiple) * multiple, -(-w // multiple) * multiple

    def _fit(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        h, w, ph, pw = self._processing_size(height, width)
        x = pixels.to(self.device, torch.float32)
        if (h, w) != (height, width):
            x = self._resize(x, h, w)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        return x

    def _unfit(self, decoded: torch.Tensor, height: int, width: int) -> torch.Tensor:
        h, w, _, _ = self._processing_size(height, width)
        x = decoded[..., :h, :w]
        if (h, w) != (height, width):
            x = self._resize(x, height, width)
        return x.clamp(-1, 1)

    def _resize(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bilinear with antialiasing, or nearest by pixel centres (Pillow's NEAREST)."""
        if self.settings.interpolation == "nearest":
            return F.interpolate(x, size=(height, width), mode="nearest-exact")
        return F.interpolate(
            x, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )


# ---------------------------------------------------------------------- image conversion
def to_model_pixels(images: Images) -> tuple[torch.Tensor, dict[str, Any]]:
    """Validate frames and convert them to float32 ``(B, 3, H, W)`` in [-1, 1].

    Returns the pixels and a layout record for :func:`from_model_pixels`.
    """
    is_numpy = isinstance(images, np.ndarray)
    if not is_numpy and not isinstance(images, torch.Tensor):
        raise StemobError(
            f"frames must be a numpy array or a torch tensor, got {type(images).__name__}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(images)) if is_numpy else images
    single = tensor.ndim == 3
    if tensor.ndim not in (3, 4):
        raise StemobError(
            f"frames must have rank 3 or 4 (HxWx3, BxHxWx3 uint8 or Bx3xHxW float), got shape {tuple(tensor.shape)}"
        )
    batch = tensor.unsqueeze(0) if single else tensor
    if tensor.dtype == torch.uint8:
        if batch.shape[-1] != 3:
            raise StemobError(
                f"uint8 frames must be (..., H, W, 3) RGB, got shape {tuple(tensor.shape)}"
            )
        pixels = batch.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    elif tensor.dtype.is_floating_point:
        if batch.shape[1] != 3:
            raise StemobError(
                f"float frames must be (..., 3, H, W) RGB in [0, 1], got shape {tuple(tensor.shape)}"
            )
        pixels = batch.float() * 2.0 - 1.0
    else:
        raise StemobError(
            f"frames must be uint8 (H, W, 3) images or float tensors (3, H, W) in [0, 1], got {images.dtype}"
        )
    if pixels.shape[-1] < 1 or pixels.shape[-2] < 1:
        raise StemobError(f"frames are empty: shape {tuple(tensor.shape)}")
    layout = {
        "numpy": is_numpy,
        "single": single,
        "uint8": tensor.dtype == torch.uint8,
        "dtype": tensor.dtype,
        "device": tensor.device,
    }
    return pixels.contiguous(), layout


def from_model_pixels(
    pixels: torch.Tensor, layout: dict[str, Any], truncate: bool = False
) -> Images:
    """Inverse of :func:`to_model_pixels`: back to the caller's type, layout and value range
    (uint8 by rounding, or by truncation as ``numpy.astype(np.uint8)`` does)."""
    if layout["uint8"]:
        values = (pixels + 1.0) * 127.5
        values = values if truncate else values.round()
        out = values.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    else:
        out = ((pixels + 1.0) / 2.0).clamp(0, 1).to(layout["dtype"])
    if layout["single"]:
        out = out[0]
    if layout["numpy"]:
        return np.ascontiguousarray(out.numpy())
    return out.to(layout["device"])


def invert_grouped(
    inverter: Inverter,
    images: Sequence[np.ndarray],
    frame_ids: Sequence[FrameId],
    outputs: Sequence[str],
) -> list[np.ndarray]:
    """Invert frames of mixed sizes and outputs (``"rgb"`` or ``"latent"``, one per frame).

    Frames that share a shape and an output go through one ``inverter.invert`` call (one call in
    all for same-size cameras); the results come back in input order, as numpy arrays.
    """
    if not len(images) == len(frame_ids) == len(outputs):
        raise StemobError(
            f"got {len(images)} frames, {len(frame_ids)} frame ids and {len(outputs)} outputs"
        )
    groups: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for i, (image, output) in enumerate(zip(images, outputs, strict=True)):
        groups.setdefault((tuple(np.shape(image)), output), []).append(i)
    results: list[np.ndarray] = [np.empty(0)] * len(images)
    for (_, output), members in groups.items():
        stacked = np.stack([np.asarray(images[i]) for i in members])
        inverted = inverter.invert(stacked, [frame_ids[i] for i in members], output=output)
        for i, result in zip(members, inverted, strict=True):
            results[i] = np.asarray(result)
    return results
