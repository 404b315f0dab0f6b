"""Multi-head self-attention: QKV projection, optional rotary positions, interchangeable kernels, masks.

Kernels take q, k, v shaped [batch, heads, tokens, head_dim] and an optional mask broadcastable to
[batch, heads, tokens, tokens]: boolean (True = may attend) or an additive float bias (ALiBi, with masked
entries already at a very large negative value). The encoder builds that mask once per forward pass and
shares it between layers; with no padding, no ALiBi, no sliding window and no document packing it builds
none, so the fused kernels run their unmasked path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bertlab.model.dropout import dropout

AttentionKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor
]
# Masked score for additive float masks; clamped to the compute dtype's range when cast (see _in_dtype).
MASKED = torch.finfo(torch.float32).min


def _in_dtype(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A float mask in the kernel's dtype (under bf16/fp16 autocast q is not fp32); bool masks unchanged."""
    if mask is None or mask.dtype in (torch.bool, dtype):
        return mask
    return mask.to(dtype).clamp_min(torch.finfo(dtype).min)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """torch's fused scaled-dot-product attention (flash / memory-efficient kernels where available).

    With dropout on CPU, SDPA has no fused kernel and falls back to matmul-softmax-matmul with Bernoulli
    masks; the eager kernel computes the same with the cheaper mask source.
    """
    if dropout_p > 0.0 and q.device.type == "cpu":
        return eager_attention(q, k, v, mask, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_in_dtype(mask, q.dtype), dropout_p=dropout_p)


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """Explicit matmul-softmax-matmul: the readable reference, and often the fastest in bf16 on CPU."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    elif mask is not None:
        scores = scores + _in_dtype(mask, scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = dropout(probs, dropout_p)
    return torch.matmul(probs, v)


@dataclass(frozen=True)
class AttentionStyle:
    """A value of `architecture.attention`: the kernel, and whether (some) layers see only a window."""

    kernel: AttentionKernel
    sliding_window: bool = False


ATTENTION_STYLES: dict[str, AttentionStyle] = {
    "sdpa": AttentionStyle(sdpa_attention),
    "eager": AttentionStyle(eager_attention),
    "local": AttentionStyle(sdpa_attention, sliding_window=True),
}


def sliding_window(tokens: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool [tokens, tokens]: query m may attend to key n when |m - n| <= window (both directions)."""
    position = torch.arange(tokens, device=device)
    return (position[None, :] - position[:, None]).abs() <= window


def same_document(document_ids: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, T, T] from document ids [B, T]: query m may attend to key n when both are of one document
    (document packing: the block-diagonal mask)."""
    return document_ids[:, None, :, None] == document_ids[:, None, None, :]


def combine_masks(
    padding: torch.Tensor | None,
    bias: torch.Tensor | None,
    window: torch.Tensor | None,
    documents: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """One kernel mask from a key-padding mask [B,1,1,T], a score bias [H,T,T], a window [T,T] and a
    same-document mask [B,1,T,T] (see `same_document`).

    Returns None when all four are None, a bool mask when there is no bias, else the bias with the
    disallowed entries set to MASKED. With a window or documents and padding, a padding query can find only
    padding among the keys it may see; it may always attend to itself so that no row is empty (empty rows
    give NaN or garbage that the backward pass would spread). Real tokens never attend to padding either way.
    """
    allowed = padding
    for restriction in (window, documents):
        if restriction is not None:
            allowed = restriction if allowed is None else allowed & restriction
    if padding is not None and (window is not None or documents is not None):
        tokens = padding.size(-1)
        allowed = allowed | torch.eye(tokens, dtype=torch.bool, device=padding.device)
    if bias is None or allowed is None:
        return allowed if bias is None else bias
    return bias.masked_fill(~allowed, MASKED)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the rotate-half layout: pairs (i, i + d/2) rotated by the angles in cos/sin [T, d] (or
    [B, 1, T, d]: a position per token, document packing)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-second, first], dim=-1) * sin.to(x.dtype)


class FusedQKV(nn.Linear):
    """One [hidden -> 3 x hidden] matmul for queries, keys and values: fewer, larger kernels.

    A Linear subclass, so its weights keep the plain `qkv.weight` / `qkv.bias` checkpoint keys.
    """

    def __init__(self, hidden_size: int, num_heads: int, bias: bool) -> None:
        super().__init__(hidden_size, 3 * hidden_size, bias=bias)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, hidden = x.shape
        qkv = super().forward(x).view(batch, tokens, 3, self.num_heads, hidden // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v


class SeparateQKV(nn.Module):
    """Three projections, laid out like Hugging Face BERT's query / key / value."""

    def __init__(self, hidden_size: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, hidden = x.shape
        shape = (batch, tokens, self.num_heads, hidden // self.num_heads)
        return tuple(linear(x).view(shape).transpose(1, 2) for linear in (self.query, self.key, self.value))


class SelfAttention(nn.Module):
    """Self-attention over all tokens of a sequence; padding, windows and ALiBi act through the mask."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        attention_dropout: float,
        kernel: AttentionKernel,
        bias: bool = True,
        fused_qkv: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.kernel = kernel
        self.qkv = (SeparateQKV, FusedQKV)[fused_qkv](hidden_size, num_heads, bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x [B, T, hidden]; `mask` as the kernels take it; `rotary` (cos, sin) [T, head_dim] or None."""
        batch, tokens, hidden = x.shape
        q, k, v = self.qkv(x)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        dropout_p = self.attention_dropout if self.training else 0.0
        context = self.kernel(q, k, v, mask, dropout_p)
        return self.out(context.transpose(1, 2).reshape(batch, tokens, hidden))
