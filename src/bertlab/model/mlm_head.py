"""Masked-language-model head: predicts the original token at masked positions only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertlab.model.encoder import init_bert_weights


class MLMHead(nn.Module):
    """BERT's prediction head: dense + GELU + LayerNorm, then a projection onto the vocabulary.

    Projecting only the masked positions skips most of the vocabulary matmul (at 15 % masking, 85 % of it).
    """

    def __init__(
        self,
        hidden_size: int,
        vocab_size: int,
        tie_word_embeddings: bool = True,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.tie_word_embeddings = tie_word_embeddings
        self.transform = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.apply(init_bert_weights)

    def tie_to(self, word_embeddings: nn.Embedding) -> None:
        """Share the decoder matrix with the input embeddings, when configured to."""
        if self.tie_word_embeddings:
            self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, k, vocab] at `positions` [batch, k], or at every position when None."""
        if positions is not None:
            hidden = torch.gather(hidden, 1, positions.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        return self.decoder(self.norm(F.gelu(self.transform(hidden))))
