"""Dropout whose keep-mask is cheap to draw on CPU.

On CPU, drawing Bernoulli masks was the largest single cost of a training step (about 14 % of it at
the benchmark size). Here one 64-bit integer draw gives four 16-bit lanes, and a lane above a threshold
keeps its element: keep probability 1 - round(p * 65536) / 65536 (p = 0.1: 0.899994), with the same
scaling as F.dropout. Draws come from torch's global generator, so runs stay seeded and resumable.
On other devices F.dropout is already a fused kernel and is used as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _KeepScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Drop elements of `x` with probability `p` (to 1/65536) and scale the rest by 1 / (1 - p)."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p=p, training=True)
    count = x.numel()
    bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = bits.view(torch.int16)[:count].view(x.shape)
    dropped = round(p * 65536)
    return _KeepScale.apply(x, lanes >= -32768 + dropped, 65536 / (65536 - dropped))


class Dropout(nn.Module):
    """nn.Dropout with the cheap CPU mask source."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
