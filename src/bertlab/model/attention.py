"""Multi-head self-attention with a fused QKV projection and interchangeable attention kernels.

Kernels take q, k, v shaped [batch, heads, tokens, head_dim] and an optional boolean mask broadcastable to
[batch, heads, tokens, tokens] (True = may attend). With no padding the mask is None and no mask is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

AttentionKernel = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor
]


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """torch's fused scaled-dot-product attention (flash / memory-efficient kernels where available)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def eager_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """Explicit matmul-softmax-matmul: the readable reference, and often the fastest in bf16 on CPU."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, v)


ATTENTION_KERNELS: dict[str, AttentionKernel] = {"sdpa": sdpa_attention, "eager": eager_attention}


class SelfAttention(nn.Module):
    """Self-attention over all tokens of a sequence; padding is excluded through the mask."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        attention_dropout: float,
        kernel: AttentionKernel,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.kernel = kernel
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        dropout_p = self.attention_dropout if self.training else 0.0
        context = self.kernel(q, k, v, mask, dropout_p)
        return self.out(context.transpose(1, 2).reshape(batch, tokens, hidden))
