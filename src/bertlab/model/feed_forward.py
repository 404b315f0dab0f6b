"""Position-wise feed-forward blocks, chosen by `architecture.activation`.

Every entry takes (hidden_size, intermediate_size, bias). For the gated variants `intermediate_size` is the
width after gating: the input projection is twice as wide (gate and value), as in ModernBERT's config.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


class FeedForward(nn.Module):
    """Two-layer MLP with exact (erf) GELU, as in BERT."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = True) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class GatedFeedForward(nn.Module):
    """GLU variants (Shazeer, 2020): down(act(gate) * value), gate and value from one fused projection."""

    def __init__(
        self,
        hidden_size: int,
        intermediate_size: int,
        bias: bool = True,
        activation: Callable[[torch.Tensor], torch.Tensor] = F.gelu,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.up = nn.Linear(hidden_size, 2 * intermediate_size, bias=bias)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(self.activation(gate) * value)


FEED_FORWARDS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "gelu": FeedForward,
    "geglu": partial(GatedFeedForward, activation=F.gelu),
    "swiglu": partial(GatedFeedForward, activation=F.silu),
}
