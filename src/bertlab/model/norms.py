"""Normalisation layers, chosen by `architecture.norm`.

Every factory takes (hidden_size, eps, bias) so the blocks build any of them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NormFactory = Callable[[int, float, bool], nn.Module]


def layer_norm(hidden_size: int, eps: float, bias: bool = True) -> nn.Module:
    """LayerNorm (BERT): centre and scale; `bias=False` drops the shift, as ModernBERT does."""
    return nn.LayerNorm(hidden_size, eps=eps, bias=bias)


def rms_norm(hidden_size: int, eps: float, bias: bool = True) -> nn.Module:
    """RMSNorm: scale by the root mean square only; cheaper, and it has no bias whatever `bias` says."""
    return nn.RMSNorm(hidden_size, eps=eps)


NORMS: dict[str, NormFactory] = {"layernorm": layer_norm, "rmsnorm": rms_norm}
