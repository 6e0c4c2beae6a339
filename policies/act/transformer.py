"""DETR-style transformer layers: positional embeddings are added to queries and keys in every
layer, and the decoder feeds each layer's output to the next (the last one is decoded)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.dropout(F.relu(self.lin1(x))))


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, post- or pre-norm."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = _FeedForward(dim, ff, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.norm1(x) if self.pre_norm else x
        q = _with_pos(h, pos)
        x = x + self.drop1(self.attn(q, q, h, key_padding_mask=pad, need_weights=False)[0])
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        x = x + self.drop2(self.ff(h))
        return x if self.pre_norm else self.norm2(x)


class DecoderLayer(nn.Module):
    """Self-attention over the queries, cross-attention to the memory, feed-forward."""

    def __init__(self, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = _FeedForward(dim, ff, dropout)
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])
        self.drops = nn.ModuleList([nn.Dropout(dropout) for _ in range(3)])
        self.pre_norm = pre_norm

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        memory_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        n1, n2, n3 = self.norms
        d1, d2, d3 = self.drops
        h = n1(x) if self.pre_norm else x
        q = h + query_pos
        x = x + d1(self.self_attn(q, q, h, need_weights=False)[0])
        if not self.pre_norm:
            x = n1(x)
        h = n2(x) if self.pre_norm else x
        x = x + d2(
            self.cross_attn(
                h + query_pos, _with_pos(memory, memory_pos), memory, need_weights=False
            )[0]
        )
        if not self.pre_norm:
            x = n2(x)
        h = n3(x) if self.pre_norm else x
        x = x + d3(self.ff(h))
        return x if self.pre_norm else n3(x)


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer` (with a final LayerNorm when pre-norm)."""

    def __init__(self, layers: int, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            [EncoderLayer(dim, heads, ff, dropout, pre_norm) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, pos, pad)
        return self.norm(x)


class Decoder(nn.Module):
    """A stack of :class:`DecoderLayer`; each layer's output is the next one's input and the final
    LayerNorm is applied to the last layer's output."""

    def __init__(self, layers: int, dim: int, heads: int, ff: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            [DecoderLayer(dim, heads, ff, dropout, pre_norm) for _ in range(layers)]
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        memory_pos: torch.Tensor | None,
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, query_pos, memory_pos)
        return self.norm(x)
