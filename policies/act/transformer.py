"""DETR-style transformer layers: positional embeddings are added to queries and keys in every
layer, and the decoder feeds each layer's output to the next (the last one is decoded)."""

from __future__ import annotations

import math

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


def attention(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mha(query, key, value, key_padding_mask)[0]`` (batch-first) with ``mha``'s parameters.

    Without dropout this is scaled-dot-product attention; with dropout (training) the weights
    are computed explicitly and dropped with a uniform draw, which on CPU is faster than the
    SDPA math fallback (its masked-row checks) and ``bernoulli_``-based dropout.
    """
    d, heads = mha.embed_dim, mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    if query is key:
        q, k = F.linear(query, w[: 2 * d], b[: 2 * d]).chunk(2, -1)
    else:
        q, k = F.linear(query, w[:d], b[:d]), F.linear(key, w[d : 2 * d], b[d : 2 * d])
    v = F.linear(value, w[2 * d :], b[2 * d :])
    n, lq, lk = q.shape[0], q.shape[1], k.shape[1]
    q = q.view(n, lq, heads, -1).transpose(1, 2)
    k = k.view(n, lk, heads, -1).transpose(1, 2)
    v = v.view(n, lk, heads, -1).transpose(1, 2)
    p = mha.dropout if mha.training else 0.0
    pad = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
    if p == 0.0:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if pad is None else ~pad)
    else:
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
        if pad is not None:
            scores = scores.masked_fill(pad, float("-inf"))
        weights = scores.softmax(-1)
        weights = weights.masked_fill(torch.rand_like(weights) < p, 0.0)
        out = (weights @ v) * (1.0 / (1.0 - p))
    return mha.out_proj(out.transpose(1, 2).reshape(n, lq, d))


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
        x = x + self.drop1(attention(self.attn, q, q, h, pad))
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
        x = x + d1(attention(self.self_attn, q, q, h))
        if not self.pre_norm:
            x = n1(x)
        h = n2(x) if self.pre_norm else x
        x = x + d2(attention(self.cross_attn, h + query_pos, _with_pos(memory, memory_pos), memory))
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
