"""Transformer denoiser for Diffusion Policy (the paper's time-series diffusion transformer):
action tokens attend causally to each other and cross-attend to a memory of condition tokens
(the diffusion step and one token per observation step)."""

from __future__ import annotations

import torch
from torch import nn

from policies.encoders import sinusoidal_embedding


class TransformerDenoiser(nn.Module):
    """Denoiser ``(B, T, A), step (B,), cond (B, n_obs * F) -> (B, T, A)``.

    The observation tokens are computed once per chunk by :meth:`precompute`.
    """

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        n_obs_steps: int,
        horizon: int,
        n_layer: int = 8,
        n_head: int = 4,
        n_emb: int = 256,
        p_drop_emb: float = 0.0,
        p_drop_attn: float = 0.3,
        causal_attn: bool = True,
    ) -> None:
        super().__init__()
        self.n_obs_steps, self.n_emb = n_obs_steps, n_emb
        self.input_emb = nn.Linear(action_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.cond_obs_emb = nn.Linear(cond_dim // n_obs_steps, n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, 1 + n_obs_steps, n_emb))
        self.time_emb = nn.Linear(n_emb, n_emb)
        self.drop = nn.Dropout(p_drop_emb)
        self.cond_mlp = nn.Sequential(
            nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb)
        )
        layer = nn.TransformerDecoderLayer(
            n_emb,
            n_head,
            4 * n_emb,
            p_drop_attn,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, n_layer)
        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, action_dim)
        mask = torch.triu(torch.full((horizon, horizon), float("-inf")), 1) if causal_attn else None
        self.register_buffer("causal_mask", mask, persistent=False)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    def precompute(
        self, cond: torch.Tensor, timesteps: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Observation tokens ``(B, n_obs, n_emb)`` (constant over denoising)."""
        del timesteps  # the step token is cheap
        return {"cond": self.cond_obs_emb(cond.reshape(cond.shape[0], self.n_obs_steps, -1))}

    def forward(
        self,
        sample: torch.Tensor,
        step: torch.Tensor,
        cond: torch.Tensor | None = None,
        cond_cache: dict[str, torch.Tensor] | None = None,
        step_index: int | None = None,
    ) -> torch.Tensor:
        if cond_cache is None:
            if cond is None:
                raise ValueError("TransformerDenoiser needs cond or cond_cache")
            cond_cache = self.precompute(cond)
        b = sample.shape[0]
        step = step.expand(b) if step.dim() == 0 else step
        time = self.time_emb(sinusoidal_embedding(step.to(sample.device), self.n_emb))[:, None]
        memory = torch.cat([time, cond_cache["cond"].expand(b, -1, -1)], 1) + self.cond_pos_emb
        memory = self.cond_mlp(self.drop(memory))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, : sample.shape[1]])
        mask = (
            self.causal_mask[: x.shape[1], : x.shape[1]] if self.causal_mask is not None else None
        )
        x = self.decoder(x, memory, tgt_mask=mask)
        return self.head(self.ln_f(x))
