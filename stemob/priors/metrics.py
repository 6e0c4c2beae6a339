"""Measurements of the prior's VAE: latent scale and reconstruction quality (PSNR, SSIM)."""

from __future__ import annotations

import torch


@torch.no_grad()
def measure_latent_std(vae: torch.nn.Module, images: torch.Tensor, chunk: int = 32) -> float:
    """Standard deviation of the VAE's latent modes over ``images`` ((N, 3, H, W) in [-1, 1])."""
    vae.eval()
    latents = [
        vae.encode(images[i : i + chunk]).latent_dist.mode() for i in range(0, len(images), chunk)
    ]
    return float(torch.cat(latents).float().std())


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of (N, 3, H, W) images in [0, 1] (Gaussian window 11, sigma 1.5, channel mean)."""
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(3, 1, 11, 11).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, window, groups=3)

    a, b = a.float(), b.float()
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return value.mean(dim=(1, 2, 3))


@torch.no_grad()
def reconstruction_metrics(
    vae: torch.nn.Module, images: torch.Tensor, chunk: int = 16
) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of encode(mode) -> decode on ``images`` in [-1, 1]."""
    vae.eval()
    psnr, sim = [], []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk]
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        mse = (((rec - x) / 2.0) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        psnr.append(10.0 * torch.log10(1.0 / mse))
        sim.append(ssim((rec + 1) / 2, (x + 1) / 2))
    return {"psnr_db": float(torch.cat(psnr).mean()), "ssim": float(torch.cat(sim).mean())}
