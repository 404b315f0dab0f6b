"""Absolute positional encodings added to the token embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """A trained vector per position (original BERT)."""

    def __init__(self, max_positions: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_positions, hidden_size)

    def forward(self, tokens: int, device: torch.device) -> torch.Tensor:
        return self.embedding(torch.arange(tokens, device=device))


class SinusoidalPositions(nn.Module):
    """Fixed sines and cosines of geometrically spaced frequencies (Vaswani et al., 2017); no parameters."""

    def __init__(self, max_positions: int, hidden_size: int) -> None:
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(
            torch.arange(0, hidden_size, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden_size)
        )
        table = torch.zeros(max_positions, hidden_size)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: hidden_size // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, tokens: int, device: torch.device) -> torch.Tensor:
        return self.table[:tokens]


POSITION_ENCODINGS: dict[str, type[nn.Module]] = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
}
