"""ACT configuration: paper defaults and a small CPU config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from policies.base import PolicyConfig, _positive_float, _positive_int
from stemob.errors import StemobError


@dataclass
class ACTConfig(PolicyConfig):
    """Action Chunking with Transformers (Zhao et al., RSS 2023); defaults are the paper's.

    ``horizon`` is the chunk size (100). ``n_action_steps`` actions of each chunk are executed
    when temporal ensembling is off; with it on, the policy is queried every step and the
    overlapping chunks are averaged with weights ``exp(-temporal_ensemble_coeff * i)``.

    Attributes (beyond :class:`PolicyConfig`):
        hidden_dim: transformer width (512).
        dim_feedforward: feed-forward width (3200).
        n_heads: attention heads (8).
        n_encoder_layers / n_decoder_layers: transformer encoder / decoder depth (4 / 7); every
            decoder layer feeds the next and the last one's output is decoded.
        n_vae_encoder_layers: depth of the CVAE encoder over (state, action sequence) (4).
        latent_dim: CVAE latent size (32).
        dropout: dropout in the transformers (0.1).
        pre_norm: LayerNorm before (True) or after (False, the paper) each sub-layer.
        use_vae: train with the CVAE objective; ``False`` trains a deterministic model (z = 0).
        kl_weight: weight of the KL term (10).
        backbone_lr: learning rate of the vision backbone (1e-5).
        temporal_ensemble_coeff: ``None`` turns temporal ensembling off (0.01).
        grid_tokens: every cell of the backbone's feature map is an image token (the paper).
        keypoint_tokens: spatial-softmax keypoints per camera added as image tokens, each the
            projection of its expected (x, y) plus a learned embedding (0: none, the paper). A
            keypoint locates a small object anywhere in the map, where a grid cell only says how
            much of it is in that cell.
        binary_action_dims: action dimensions that take one of two values (a gripper's open /
            close command): predicted as a logit, trained with binary cross-entropy against
            ``action > (min + max) / 2`` of the dataset's statistics, and output as that min or
            max (GENIMA's controller treats its gripper so); ``[]``: every dimension is regressed.
    """

    n_obs_steps: int = 1
    horizon: int = 100
    n_action_steps: int = 100
    use_group_norm: bool = False
    share_encoder: bool = True
    hidden_dim: int = 512
    dim_feedforward: int = 3200
    n_heads: int = 8
    n_encoder_layers: int = 4
    n_decoder_layers: int = 7
    n_vae_encoder_layers: int = 4
    latent_dim: int = 32
    dropout: float = 0.1
    pre_norm: bool = False
    use_vae: bool = True
    kl_weight: float = 10.0
    normalization: dict[str, str] = field(
        default_factory=lambda: {
            "action": "mean_std",
            "state": "mean_std",
            "image": "mean_std",
            "latent": "mean_std",
        }
    )
    lr: float = 1e-5
    backbone_lr: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    temporal_ensemble_coeff: float | None = 0.01
    grid_tokens: bool = True
    keypoint_tokens: int = 0
    binary_action_dims: list[int] = field(default_factory=list)

    INFERENCE_FIELDS: ClassVar[tuple[str, ...]] = (
        *PolicyConfig.INFERENCE_FIELDS,
        "temporal_ensemble_coeff",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_obs_steps != 1:
            raise StemobError(f"ACT uses one observation step, got n_obs_steps={self.n_obs_steps}")
        for name in (
            "hidden_dim",
            "dim_feedforward",
            "n_heads",
            "n_encoder_layers",
            "n_decoder_layers",
            "n_vae_encoder_layers",
            "latent_dim",
        ):
            _positive_int(name, getattr(self, name))
        if self.hidden_dim % self.n_heads or self.hidden_dim % 4:
            raise StemobError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by n_heads ({self.n_heads}) and 4"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise StemobError(f"dropout must be in [0, 1), got {self.dropout}")
        _positive_int("keypoint_tokens", self.keypoint_tokens, minimum=0)
        if not self.grid_tokens and not self.keypoint_tokens and self.image_keys + self.latent_keys:
            raise StemobError(
                "grid_tokens=false needs keypoint_tokens > 0: the images would give no tokens"
            )
        self.binary_action_dims = sorted({int(d) for d in self.binary_action_dims})
        bad = [d for d in self.binary_action_dims if not 0 <= d < self.action_dim]
        if bad:
            raise StemobError(
                f"binary_action_dims {bad} are outside the {self.action_dim} action dimensions"
            )
        _positive_float("kl_weight", self.kl_weight, allow_zero=True)
        _positive_float("backbone_lr", self.backbone_lr)
        if self.temporal_ensemble_coeff is not None:
            _positive_float(
                "temporal_ensemble_coeff", self.temporal_ensemble_coeff, allow_zero=True
            )

    @property
    def chunk_size(self) -> int:
        """Actions predicted per query (``horizon``)."""
        return self.horizon


def paper_config(obs_shapes: dict[str, list[int]], action_dim: int, **overrides: Any) -> ACTConfig:
    """The paper's config: ResNet-18 shared across cameras, hidden 512, feed-forward 3200, 4/7
    layers, chunk 100, KL weight 10, lr 1e-5, temporal ensembling 0.01."""
    return ACTConfig(obs_shapes=obs_shapes, action_dim=action_dim, **overrides)


def small_config(obs_shapes: dict[str, list[int]], action_dim: int, **overrides: Any) -> ACTConfig:
    """The CPU-scale config: the small CNN (width 16, GroupNorm) at stride 8 with 16
    spatial-softmax keypoints per camera as the image tokens, hidden 64, feed-forward 256, 4
    heads, 2 encoder / 2 decoder / 2 CVAE-encoder layers, latent 16, chunk 20, lr 1e-3 with 200
    warm-up steps and a cosine decay.

    Chosen by the ablation in results/act.md (lift_cube, 200 demos, 2500 steps): the previous
    config (a 6x6 grid of stride-16 cells as tokens, lr 1e-4 constant) reached 16 % clean there
    and 56 % after 7000 steps; keypoints locate the 3-4 px cube that a 16 px cell blurs, and the
    keypoint tokens (34 instead of 74) make a step cheaper despite the finer map."""
    values: dict[str, Any] = dict(
        vision_backbone="small_cnn",
        cnn_width=16,
        use_group_norm=True,
        grid_tokens=False,
        keypoint_tokens=16,
        hidden_dim=64,
        dim_feedforward=256,
        n_heads=4,
        n_encoder_layers=2,
        n_decoder_layers=2,
        n_vae_encoder_layers=2,
        latent_dim=16,
        horizon=20,
        n_action_steps=20,
        lr=1e-3,
        backbone_lr=1e-3,
        lr_scheduler="cosine",
        lr_warmup_steps=200,
    )
    values.update(overrides)
    return ACTConfig(obs_shapes=obs_shapes, action_dim=action_dim, **values)
