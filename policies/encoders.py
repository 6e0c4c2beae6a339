"""Vision encoders written in the project (no torchvision): ResNet-18, a small CNN, spatial-softmax
keypoints, crops, and a multi-camera observation encoder.

Images reach the encoders already normalised (float ``(N, C, H, W)``); crops are random per sample
in training mode and central in evaluation mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stemob.errors import StemobError

BACKBONES = ("resnet18", "small_cnn")
SMALL_CNN_STRIDES = {8: (2, 2, 2, 1), 16: (2, 2, 2, 2)}
"""``small_cnn``'s per-layer strides for each total stride (``cnn_stride``): a 96 px frame gives
12x12 feature cells at 8, 6x6 at 16."""
LATENT_BACKBONE = "latent_cnn"
"""The trunk of Stem-OB latent maps: ``small_cnn`` with one stride-2 layer instead of three, as a
latent is already 4-8x smaller than its frame (a 96 px frame's 24x24 latent from the embedded
prior gives the same 12x12 keypoint grid as the frame through ``small_cnn``)."""

# images per backbone call on CPU: a large batch of feature maps overflows the caches (a training
# batch of 256 84-px images ran ~1.5x slower in one call than in chunks of 32)
CPU_MICRO_BATCH = 32


def make_norm(channels: int, group_norm: bool) -> nn.Module:
    """BatchNorm, or GroupNorm with ``channels // 16`` groups (Diffusion Policy's replacement)."""
    if group_norm:
        return nn.GroupNorm(max(1, channels // 16), channels)
    return nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, cin: int, cout: int, stride: int, group_norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = make_norm(cout, group_norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = make_norm(cout, group_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(cout, group_norm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)), inplace=True)
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class ResNet18(nn.Module):
    """ResNet-18 trunk without pooling and classifier: ``(N, C, H, W) -> (N, 512, H/32, W/32)``."""

    out_channels = 512

    def __init__(self, in_channels: int = 3, group_norm: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            make_norm(64, group_norm),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(
                nn.Sequential(
                    BasicBlock(cin, cout, stride, group_norm),
                    BasicBlock(cout, cout, 1, group_norm),
                )
            )
            cin = cout
        self.layers = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))


class SmallCNN(nn.Module):
    """A four-layer CNN for CPU-scale runs: ``(N, C, H, W) -> (N, width*2, H/8, W/8)`` with the
    default ``strides``."""

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 32,
        group_norm: bool = True,
        strides: Sequence[int] = (2, 2, 2, 1),
    ) -> None:
        super().__init__()
        self.out_channels = width * 2
        chans = (width, width, width * 2, width * 2)
        layers, cin = [], in_channels
        for cout, stride in zip(chans, strides, strict=True):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), make_norm(cout, group_norm), nn.ReLU()]
            cin = cout
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _splittable(module: nn.Module) -> bool:
    """Whether ``module`` treats samples independently (no BatchNorm using batch statistics)."""
    return not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules()
    )


def micro_batched(
    fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, module: nn.Module
) -> torch.Tensor:
    """``fn(images)`` computed in chunks of :data:`CPU_MICRO_BATCH` on CPU (same result: only
    when ``module`` processes samples independently)."""
    n = images.shape[0]
    if n <= CPU_MICRO_BATCH or images.device.type != "cpu" or not _splittable(module):
        return fn(images)
    return torch.cat([fn(part) for part in images.split(CPU_MICRO_BATCH)], 0)


def make_backbone(
    name: str, in_channels: int, group_norm: bool, width: int = 32, stride: int = 8
) -> nn.Module:
    """A backbone by name (``resnet18``, ``small_cnn`` or :data:`LATENT_BACKBONE`) with an
    ``out_channels`` attribute; ``width`` and ``stride`` (a key of :data:`SMALL_CNN_STRIDES`)
    shape ``small_cnn``."""
    if name == "resnet18":
        return ResNet18(in_channels, group_norm)
    if name == "small_cnn":
        if stride not in SMALL_CNN_STRIDES:
            raise StemobError(
                f"small_cnn stride {stride}: expected one of {list(SMALL_CNN_STRIDES)}"
            )
        return SmallCNN(in_channels, width, group_norm, SMALL_CNN_STRIDES[stride])
    if name == LATENT_BACKBONE:
        return SmallCNN(in_channels, width, group_norm, strides=(1, 2, 1, 1))
    raise StemobError(f"unknown vision backbone {name!r}: expected one of {BACKBONES}")


class SpatialSoftmax(nn.Module):
    """Keypoints: a 1x1 conv to ``num_keypoints`` maps, a softmax over each map, and the expected
    (x, y) position in [-1, 1]. Output ``(N, 2 * num_keypoints)``."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = features.shape
        maps = self.proj(features).flatten(2)  # (N, K, H*W)
        attention = maps.softmax(-1)
        ys = torch.linspace(-1.0, 1.0, h, device=features.device, dtype=attention.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=features.device, dtype=attention.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(h * w, 2)
        return (attention @ grid).reshape(n, -1)


def crop_images(
    images: torch.Tensor,
    size: Sequence[int],
    random: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop ``(N, C, H, W)`` to ``size``: a random window per sample, or the centre."""
    ch, cw = int(size[0]), int(size[1])
    n, c, h, w = images.shape
    if (ch, cw) == (h, w):
        return images
    if ch > h or cw > w:
        raise StemobError(f"crop {ch}x{cw} is larger than the {h}x{w} images")
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return images[:, :, top : top + ch, left : left + cw]
    device = images.device
    top = torch.randint(0, h - ch + 1, (n,), generator=generator).to(device)
    left = torch.randint(0, w - cw + 1, (n,), generator=generator).to(device)
    # every window position as a strided view (N, top, left, C, ch, cw); picking one window per
    # sample copies whole rows (an element-wise 4-index gather was ~15x slower on CPU)
    sn, sc, sh, sw = images.stride()
    windows = images.as_strided((n, h - ch + 1, w - cw + 1, c, ch, cw), (sn, sh, sw, sc, sh, sw))
    return windows[torch.arange(n, device=device), top, left]


class CameraEncoder(nn.Module):
    """Crop -> backbone -> spatial-softmax keypoints -> linear (as robomimic's visual core)."""

    def __init__(
        self,
        backbone: str,
        in_channels: int,
        group_norm: bool,
        num_keypoints: int,
        feature_dim: int,
        crop_shape: Sequence[int] | None,
        width: int = 32,
        stride: int = 8,
    ) -> None:
        super().__init__()
        self.backbone = make_backbone(backbone, in_channels, group_norm, width, stride)
        self.keypoints = SpatialSoftmax(self.backbone.out_channels, num_keypoints)
        self.out = nn.Linear(2 * num_keypoints, feature_dim)
        self.crop_shape = tuple(crop_shape) if crop_shape else None
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop_shape is not None:
            images = crop_images(images, self.crop_shape, random=self.training)
        return micro_batched(lambda x: self.out(self.keypoints(self.backbone(x))), images, self)


class ObservationEncoder(nn.Module):
    """Encodes normalised camera images (1-3 cameras, plus optional latent maps) and concatenates
    the features with the normalised low-dim state: ``{key: (N, ...)} -> (N, out_dim)``.

    ``shared``: one encoder for every RGB camera (latent keys always get their own).
    """

    def __init__(
        self,
        image_keys: Sequence[str],
        latent_channels: dict[str, int],
        state_dim: int,
        backbone: str,
        group_norm: bool,
        num_keypoints: int,
        feature_dim: int,
        crop_shape: Sequence[int] | None,
        shared: bool,
        width: int = 32,
        stride: int = 8,
    ) -> None:
        super().__init__()
        self.image_keys = list(image_keys)
        self.latent_keys = list(latent_channels)
        self.shared = shared

        def build(channels: int, name: str, crop: Sequence[int] | None) -> CameraEncoder:
            return CameraEncoder(
                name, channels, group_norm, num_keypoints, feature_dim, crop, width, stride
            )

        n_enc = 1 if shared and self.image_keys else len(self.image_keys)
        self.cameras = nn.ModuleList([build(3, backbone, crop_shape) for _ in range(n_enc)])
        self.latents = nn.ModuleDict(
            {_safe(k): build(c, LATENT_BACKBONE, None) for k, c in latent_channels.items()}
        )
        self.state_dim = state_dim
        self.out_dim = feature_dim * (len(self.image_keys) + len(self.latent_keys)) + state_dim

    def forward(self, images: dict[str, torch.Tensor], state: torch.Tensor | None) -> torch.Tensor:
        feats = []
        if self.image_keys:
            if self.shared:
                n = images[self.image_keys[0]].shape[0]
                stacked = torch.cat([images[k] for k in self.image_keys], 0)
                out = self.cameras[0](stacked)
                feats += list(out.split(n, 0))
            else:
                feats += [
                    enc(images[k]) for enc, k in zip(self.cameras, self.image_keys, strict=True)
                ]
        feats += [self.latents[_safe(k)](images[k]) for k in self.latent_keys]
        if state is not None:
            feats.append(state)
        return torch.cat(feats, -1)


def sinusoidal_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sine/cosine embedding of ``positions`` (any shape) -> ``(*shape, dim)``."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=positions.device, dtype=torch.float32) / half
    )
    args = positions.float()[..., None] * freqs
    emb = torch.cat([args.sin(), args.cos()], -1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sinusoidal_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """2D sine embedding of an ``h x w`` grid (half the channels for y, half for x): ``(h*w, dim)``."""
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    return torch.cat(
        [sinusoidal_embedding(ys, dim // 2), sinusoidal_embedding(xs, dim - dim // 2)], -1
    )


def _safe(key: str) -> str:
    return key.replace(".", "_")
