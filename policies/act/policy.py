"""ACT: a CVAE whose decoder is a transformer over image tokens, state and the latent style."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policies.act.config import ACTConfig
from policies.act.ensemble import TemporalEnsembler
from policies.act.transformer import Decoder, Encoder
from policies.base import Policy
from policies.encoders import (
    LATENT_BACKBONE,
    SpatialSoftmax,
    make_backbone,
    micro_batched,
    sinusoidal_2d,
    sinusoidal_embedding,
)
from stemob.errors import StemobError


class ACTPolicy(Policy):
    """Zhao et al. (RSS 2023).

    * CVAE encoder (training only): a transformer over ``[CLS, state, a_1..a_k]`` whose CLS output
      gives the mean and log-variance of the latent ``z``; at inference ``z = 0``.
    * Transformer encoder over ``[z, state]`` tokens and the image tokens (the backbone's feature
      map, 1x1-projected, with 2D sine positions), decoder of ``chunk_size`` learned queries.
    * Loss: L1 on the normalised actions (padding masked) + ``kl_weight`` x KL.
    """

    name = "act"
    config_class = ACTConfig
    config: ACTConfig

    def __init__(self, config: ACTConfig | Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        d = cfg.hidden_dim
        n_cam = 1 if cfg.share_encoder and cfg.image_keys else len(cfg.image_keys)
        self.backbones = nn.ModuleList(
            [
                make_backbone(
                    cfg.vision_backbone, 3, cfg.use_group_norm, cfg.cnn_width, cfg.cnn_stride
                )
                for _ in range(n_cam)
            ]
        )
        self.latent_backbones = nn.ModuleDict(
            {
                k.replace(".", "_"): make_backbone(
                    LATENT_BACKBONE, cfg.obs_shapes[k][0], cfg.use_group_norm, cfg.cnn_width
                )
                for k in cfg.latent_keys
            }
        )
        feat_channels = {m.out_channels for m in [*self.backbones, *self.latent_backbones.values()]}
        self.input_proj = nn.ModuleDict(
            {str(c): nn.Conv2d(c, d, 1) for c in sorted(feat_channels) if cfg.grid_tokens}
        )
        n_maps = len(cfg.image_keys) + len(cfg.latent_keys)
        self.keypoint_net = nn.ModuleDict()
        if cfg.keypoint_tokens:
            self.keypoint_net = nn.ModuleDict(
                {str(c): SpatialSoftmax(c, cfg.keypoint_tokens) for c in sorted(feat_channels)}
            )
            self.keypoint_proj = nn.Linear(2, d)
            self.keypoint_pos = nn.Embedding(n_maps * cfg.keypoint_tokens, d)
        self.has_state = cfg.state_dim > 0
        # CVAE encoder
        self.cls_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.vae_action_proj = nn.Linear(cfg.action_dim, d)
        self.vae_state_proj = nn.Linear(cfg.state_dim, d) if self.has_state else None
        self.vae_encoder = Encoder(
            cfg.n_vae_encoder_layers, d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout, cfg.pre_norm
        )
        self.latent_out = nn.Linear(d, 2 * cfg.latent_dim)
        n_vae_tokens = 1 + int(self.has_state) + cfg.horizon
        self.register_buffer(
            "vae_pos", sinusoidal_embedding(torch.arange(n_vae_tokens), d)[None], persistent=False
        )
        # policy transformer
        self.latent_in = nn.Linear(cfg.latent_dim, d)
        self.state_proj = nn.Linear(cfg.state_dim, d) if self.has_state else None
        self.token_pos = nn.Embedding(1 + int(self.has_state), d)
        self.encoder = Encoder(
            cfg.n_encoder_layers, d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout, cfg.pre_norm
        )
        self.decoder = Decoder(
            cfg.n_decoder_layers, d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout, cfg.pre_norm
        )
        self.query_pos = nn.Embedding(cfg.horizon, d)
        self.action_head = nn.Linear(d, cfg.action_dim)
        self._binary_buffers()
        self.ensembler: TemporalEnsembler | None = None
        if cfg.temporal_ensemble_coeff is not None:
            self.ensembler = TemporalEnsembler(cfg.temporal_ensemble_coeff, cfg.horizon)

    def _binary_buffers(self) -> None:
        """The two values of each binary action dimension (the dataset's min and max)."""
        dims = self.config.binary_action_dims
        low, high = [-1.0] * len(dims), [1.0] * len(dims)
        if self.stats and "action" in self.stats:
            low = [self.stats["action"]["min"][d] for d in dims]
            high = [self.stats["action"]["max"][d] for d in dims]
        self.register_buffer("binary_low", torch.tensor(low), persistent=False)
        self.register_buffer("binary_high", torch.tensor(high), persistent=False)
        regressed = [d for d in range(self.config.action_dim) if d not in dims]
        self.register_buffer("regressed_dims", torch.tensor(regressed), persistent=False)

    # ------------------------------------------------------------------ model
    def _image_tokens(self, images: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens ``(B, N, d)`` and their positions ``(1, N, d)``: the feature map's cells
        with 2D sine positions and/or each map's keypoints with learned embeddings."""
        cfg = self.config
        features = []
        keys = cfg.image_keys
        if keys:
            if cfg.share_encoder:
                b = images[keys[0]].shape[0]
                stacked = torch.cat([images[k] for k in keys], 0)
                features += list(self._features(self.backbones[0], stacked).split(b, 0))
            else:
                features += [
                    self._features(net, images[k])
                    for net, k in zip(self.backbones, keys, strict=True)
                ]
        features += [
            self._features(self.latent_backbones[k.replace(".", "_")], images[k])
            for k in cfg.latent_keys
        ]
        tokens, pos = [], []
        if cfg.grid_tokens:
            for fmap in features:
                _, _, h, w = fmap.shape
                tokens.append(self.input_proj[str(fmap.shape[1])](fmap).flatten(2).transpose(1, 2))
                pos.append(sinusoidal_2d(h, w, cfg.hidden_dim, fmap.device))
        if cfg.keypoint_tokens:
            for fmap in features:
                xy = self.keypoint_net[str(fmap.shape[1])](fmap).view(fmap.shape[0], -1, 2)
                tokens.append(self.keypoint_proj(xy))
            pos.append(self.keypoint_pos.weight)
        return torch.cat(tokens, 1), torch.cat(pos, 0)[None]

    def _features(self, backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The backbone's feature map (in CPU micro-batches)."""
        return micro_batched(backbone, images, backbone)

    def _latent(
        self,
        state: torch.Tensor | None,
        action: torch.Tensor | None,
        is_pad: torch.Tensor | None,
        batch: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        cfg = self.config
        if action is None or not cfg.use_vae:
            return torch.zeros(batch, cfg.latent_dim, device=device), None, None
        tokens = [self.cls_embed.expand(batch, -1, -1)]
        if self.vae_state_proj is not None and state is not None:
            tokens.append(self.vae_state_proj(state)[:, None])
        tokens.append(self.vae_action_proj(action))
        x = torch.cat(tokens, 1)
        pad = None
        if is_pad is not None:
            head = torch.zeros(batch, x.shape[1] - action.shape[1], dtype=torch.bool, device=device)
            pad = torch.cat([head, is_pad.to(device)], 1)
        out = self.vae_encoder(x, self.vae_pos[:, : x.shape[1]], pad)[:, 0]
        mu, logvar = self.latent_out(out).chunk(2, -1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return z, mu, logvar

    def forward_model(
        self,
        obs: Mapping[str, torch.Tensor],
        action: torch.Tensor | None = None,
        is_pad: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Normalised action chunk ``(B, chunk, A)`` and the latent's (mu, logvar) in training."""
        images, state = self.prepare_obs(obs)
        images = {k: v[:, -1] for k, v in images.items()}
        state = state[:, -1] if state is not None else None
        img_tokens, img_pos = self._image_tokens(images)
        b = img_tokens.shape[0]
        z, mu, logvar = self._latent(state, action, is_pad, b, img_tokens.device)
        tokens = [self.latent_in(z)[:, None]]
        if self.state_proj is not None and state is not None:
            tokens.append(self.state_proj(state)[:, None])
        x = torch.cat([*tokens, img_tokens], 1)
        pos = torch.cat([self.token_pos.weight[None], img_pos], 1)
        memory = self.encoder(x, pos)
        queries = self.query_pos.weight[None].expand(b, -1, -1)
        out = self.decoder(torch.zeros_like(queries), memory, queries, pos)
        return self.action_head(out), mu, logvar

    # ------------------------------------------------------------------ interface
    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 on normalised actions (padded steps masked), binary cross-entropy on the
        ``binary_action_dims`` logits, + ``kl_weight`` x KL(q(z) || N(0, I))."""
        cfg = self.config
        device = self.normalizer.scale__action.device
        action = torch.as_tensor(batch["action"]).to(device)
        if action.dim() != 3 or action.shape[1:] != (cfg.horizon, cfg.action_dim):
            raise StemobError(
                f"batch['action'] has shape {tuple(action.shape)}, expected "
                f"(B, {cfg.horizon}, {cfg.action_dim})"
            )
        is_pad = batch.get("action_is_pad")
        is_pad = (
            torch.as_tensor(is_pad).to(device).bool()
            if is_pad is not None
            else torch.zeros(action.shape[:2], dtype=torch.bool, device=device)
        )
        target = self.normalizer.normalize("action", action)
        pred, mu, logvar = self.forward_model(batch["obs"], target, is_pad)
        keep = (~is_pad).float()[..., None]
        dims = cfg.binary_action_dims
        regressed = self.regressed_dims
        l1 = (
            F.l1_loss(pred[..., regressed], target[..., regressed], reduction="none") * keep
        ).sum() / (keep.sum() * len(regressed)).clamp(min=1)
        logs = {"l1": float(l1.detach())}
        loss = l1
        if dims:
            is_high = (action[..., dims] > (self.binary_low + self.binary_high) / 2).float()
            bce = (
                F.binary_cross_entropy_with_logits(pred[..., dims], is_high, reduction="none")
                * keep
            ).sum() / (keep.sum() * len(dims)).clamp(min=1)
            loss = loss + bce
            logs["bce"] = float(bce.detach())
        if mu is not None and logvar is not None:
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
            loss = loss + cfg.kl_weight * kl
            logs["kl"] = float(kl.detach())
        logs["loss"] = float(loss.detach())
        return loss, logs

    @torch.inference_mode()
    def predict_chunk(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The chunk ``(B, chunk_size, A)`` in environment units (latent z = 0)."""
        forward = self.forward_model if self._compiled is None else self._compiled
        pred, _, _ = forward(obs)
        actions = self.normalizer.unnormalize("action", pred)
        dims = self.config.binary_action_dims
        if dims:
            actions[..., dims] = torch.where(
                pred[..., dims] > 0, self.binary_high.to(pred), self.binary_low.to(pred)
            )
        return actions

    def _compile_target(self) -> Any:
        """The model's forward (one chunk from one observation)."""
        return self.forward_model

    def select_action(self, obs: Mapping[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """One action ``(B, A)``: temporally ensembled when enabled, else from the action queue."""
        if self.ensembler is None:
            return super().select_action(obs, **kwargs)
        return self.ensembler.update(self.inference_chunk(obs))

    def reset(self) -> None:
        super().reset()
        if self.ensembler is not None:
            self.ensembler.reset()

    def param_groups(self) -> list[dict[str, Any]]:
        """The vision backbones get ``backbone_lr``; everything else the config's ``lr``."""
        backbone = {id(p) for m in (self.backbones, self.latent_backbones) for p in m.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in backbone]
        bb = [p for p in self.parameters() if p.requires_grad and id(p) in backbone]
        groups = [{"params": rest}]
        if bb:
            groups.append({"params": bb, "lr": self.config.backbone_lr})
        return groups
