"""Positional encodings: absolute ones added to the token embeddings, relative ones applied in attention.

Every scheme has the same constructor and answers the same three questions, so the encoder never asks
which scheme it holds:

- `embeddings(tokens)`: a [tokens, hidden] table to add to the token embeddings (learned, sinusoidal);
- `rotary(tokens)`: cos and sin tables [tokens, head_dim] that rotate queries and keys (RoPE);
- `attention_bias(tokens)`: an additive [heads, tokens, tokens] score bias (ALiBi).

Each returns None when the scheme does not act there. Fixed tables are non-persistent buffers computed once
for `max_positions` and sliced per length, so checkpoints hold only trained weights and no step rebuilds a
table. `offset` shifts every position by the same amount: the relative schemes are invariant to it, which
the tests check. `positions` [batch, tokens] (document packing: see `document_positions`) gives every token
its own position instead; the tables are then gathered per token and gain a leading batch dimension.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """Per token of [batch, tokens]: its distance from the first token of its document (positions restart at
    0 for every document). `document_ids` are non-decreasing along each row (bertlab.data.document_packing).
    """
    index = torch.arange(document_ids.size(1), device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, 0).cummax(dim=1).values
    return index - first


class PositionEncoding(nn.Module):
    """The interface and the `none` scheme: no positional information at all (a bag of tokens)."""

    def __init__(
        self, max_positions: int, hidden_size: int, num_heads: int, rope_base: float = 10000.0
    ) -> None:
        super().__init__()
        self.max_positions = max_positions

    def embeddings(
        self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """[tokens, hidden] (or [batch, tokens, hidden] with `positions`) added to the token embeddings, or
        None."""
        return None

    def rotary(
        self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin), each [tokens, head_dim] (or [batch, 1, tokens, head_dim] with `positions`, to broadcast
        over the heads), to rotate queries and keys with, or None."""
        return None

    def attention_bias(
        self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """[heads, tokens, tokens] added to the attention scores, or None."""
        return None


class LearnedPositions(PositionEncoding):
    """A trained vector per position (original BERT)."""

    def __init__(
        self, max_positions: int, hidden_size: int, num_heads: int, rope_base: float = 10000.0
    ) -> None:
        super().__init__(max_positions, hidden_size, num_heads, rope_base)
        self.embedding = nn.Embedding(max_positions, hidden_size)

    def embeddings(self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is not None:
            return self.embedding(positions)
        return self.embedding.weight[offset : offset + tokens]


class SinusoidalPositions(PositionEncoding):
    """Fixed sines and cosines of geometrically spaced frequencies (Vaswani et al., 2017); no parameters."""

    def __init__(
        self, max_positions: int, hidden_size: int, num_heads: int, rope_base: float = 10000.0
    ) -> None:
        super().__init__(max_positions, hidden_size, num_heads, rope_base)
        position = torch.arange(max_positions, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(
            torch.arange(0, hidden_size, 2, dtype=torch.float32) * (-math.log(10000.0) / hidden_size)
        )
        table = torch.zeros(max_positions, hidden_size)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: hidden_size // 2])
        self.register_buffer("table", table, persistent=False)

    def embeddings(self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is not None:
            return self.table[positions]
        return self.table[offset : offset + tokens]


class RotaryPositions(PositionEncoding):
    """RoPE (Su et al., 2021): rotates each (i, i + head_dim/2) pair of q and k by position x frequency.

    The score q_m . k_n then depends on m - n only. Frequencies are base^(-2i/head_dim); a larger `rope_base`
    suits longer contexts. Uses the rotate-half layout of GPT-NeoX / LLaMA / ModernBERT.
    """

    def __init__(
        self, max_positions: int, hidden_size: int, num_heads: int, rope_base: float = 10000.0
    ) -> None:
        super().__init__(max_positions, hidden_size, num_heads, rope_base)
        head_dim = hidden_size // num_heads
        inverse = 1.0 / (rope_base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inverse)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotary(
        self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if positions is not None:
            return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        return self.cos[offset : offset + tokens], self.sin[offset : offset + tokens]


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head slopes of Press et al. (2022): geometric from 2^(-8/n), interleaved for non-powers of 2."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(closest)
    if closest < num_heads:
        slopes += power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBiPositions(PositionEncoding):
    """ALiBi, bidirectional (as in MosaicBERT): score bias -slope_h x |m - n|, a distance penalty per head.

    Per-token `positions` leave the bias as it is: it depends only on the distance m - n, which is the same
    within a document whether its positions restart or not, and the encoder masks every score across
    documents. One [heads, tokens, tokens] table serves every row then, not one per row.
    """

    def __init__(
        self, max_positions: int, hidden_size: int, num_heads: int, rope_base: float = 10000.0
    ) -> None:
        super().__init__(max_positions, hidden_size, num_heads, rope_base)
        position = torch.arange(max_positions, dtype=torch.float32)
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)
        self.register_buffer("distance", (position[None, :] - position[:, None]).abs(), persistent=False)

    def attention_bias(
        self, tokens: int, offset: int = 0, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        distance = self.distance[offset : offset + tokens, offset : offset + tokens]
        return distance * -self.slopes[:, None, None]


POSITION_ENCODINGS: dict[str, type[PositionEncoding]] = {
    "learned": LearnedPositions,
    "sinusoidal": SinusoidalPositions,
    "rope": RotaryPositions,
    "alibi": ALiBiPositions,
    "none": PositionEncoding,
}
