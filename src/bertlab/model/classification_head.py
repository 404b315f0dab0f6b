"""Sequence-classification head: pool the encoder's states, then classify."""

from __future__ import annotations

import torch
from torch import nn

from bertlab.errors import BertlabError

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per sequence: the first token's state (`cls`) or the mean over real tokens (`mean`)."""
    if pooling == "cls" or attention_mask is None:
        return hidden[:, 0] if pooling == "cls" else hidden.mean(1)
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class ClassificationHead(nn.Module):
    """Pooling (`cls`: the first token; `mean`: average over non-padding tokens), dropout, optional tanh
    hidden layer, then a linear layer to `num_labels` logits. `num_labels` comes from the data."""

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        hidden_layer_size: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise BertlabError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}", "pooling")
        if not 0.0 <= dropout < 1.0:
            raise BertlabError(f"must be in [0, 1), got {dropout}", "dropout")
        if hidden_layer_size is not None and hidden_layer_size < 1:
            raise BertlabError(f"must be a positive integer or null, got {hidden_layer_size}", "hidden_size")
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        layers: list[nn.Module] = []
        width = hidden_size
        if hidden_layer_size:
            layers += [nn.Linear(hidden_size, hidden_layer_size), nn.Tanh(), nn.Dropout(dropout)]
            width = hidden_layer_size
        layers.append(nn.Linear(width, num_labels))
        self.classifier = nn.Sequential(*layers)
        for module in self.classifier:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))
