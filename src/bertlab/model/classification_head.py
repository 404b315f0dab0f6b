"""Sequence-classification head: pool the encoder's states, then classify (or regress).

One head serves Hugging Face's three problem types (`problem_type`, their names):
- `single_label_classification`: one label per text, softmax over `num_labels` logits;
- `multi_label_classification`: any number of labels per text, a sigmoid per label, a label is predicted
  when its probability reaches `threshold` (a buffer: chosen on the validation split, saved with the weights);
- `regression`: one number per text, learnt on targets standardised by the training split's mean and
  deviation (buffers `target_mean`, `target_std`, saved with the weights) and given back in the target's units.
"""

from __future__ import annotations

import torch
from torch import nn

from bertlab.errors import BertlabError

POOLINGS = ("cls", "mean")
SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per sequence: the first token's state (`cls`) or the mean over real tokens (`mean`)."""
    if pooling == "cls" or attention_mask is None:
        return hidden[:, 0] if pooling == "cls" else hidden.mean(1)
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def check_problem_type(problem_type: str, key: str = "problem_type") -> str:
    if problem_type not in PROBLEM_TYPES:
        raise BertlabError(f"unknown problem type {problem_type!r}; choose one of {list(PROBLEM_TYPES)}", key)
    return problem_type


class ClassificationHead(nn.Module):
    """Pooling (`cls`: the first token; `mean`: average over non-padding tokens), dropout, optional tanh
    hidden layer, then a linear layer to `num_labels` outputs. `num_labels` comes from the data (1 for
    regression)."""

    def __init__(
        self,
        hidden_size: int,
        num_labels: int,
        pooling: str = "cls",
        dropout: float = 0.1,
        hidden_layer_size: int | None = None,
        problem_type: str = SINGLE_LABEL,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise BertlabError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}", "pooling")
        if not 0.0 <= dropout < 1.0:
            raise BertlabError(f"must be in [0, 1), got {dropout}", "dropout")
        if hidden_layer_size is not None and hidden_layer_size < 1:
            raise BertlabError(f"must be a positive integer or null, got {hidden_layer_size}", "hidden_size")
        self.problem_type = check_problem_type(problem_type)
        if problem_type == REGRESSION and num_labels != 1:
            raise BertlabError(f"regression has one output, got num_labels={num_labels}", "num_labels")
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
        if problem_type == MULTI_LABEL:
            self.register_buffer("threshold", torch.tensor(0.5))
        if problem_type == REGRESSION:
            self.register_buffer("target_mean", torch.tensor(0.0))
            self.register_buffer("target_std", torch.tensor(1.0))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return pool(hidden, attention_mask, self.pooling)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, num_labels] (regression: the standardised value, [batch, 1])."""
        return self.classifier(self.dropout(self.pool(hidden, attention_mask)))

    def set_target_scale(self, mean: float, std: float) -> None:
        """Regression: the training targets' mean and deviation (a constant target gets deviation 1)."""
        self.target_mean.fill_(mean)
        self.target_std.fill_(std if std > 0 else 1.0)

    def standardise(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.target_mean) / self.target_std

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """What the head says, from its logits: class probabilities (softmax; a sigmoid per label for
        multi-label), or for regression the value in the target's units [batch]."""
        logits = logits.float()
        if self.problem_type == REGRESSION:
            return logits.squeeze(-1) * self.target_std + self.target_mean
        if self.problem_type == MULTI_LABEL:
            return logits.sigmoid()
        return logits.softmax(-1)
