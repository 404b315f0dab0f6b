"""The transformer encoder (the backbone shared by pretraining and finetuning)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bertlab.errors import BertlabError
from bertlab.model.attention import ATTENTION_KERNELS, SelfAttention
from bertlab.model.positions import POSITION_ENCODINGS


def _choice(value: str, choices: dict, key: str):
    if value not in choices:
        raise BertlabError(f"unknown value {value!r}; choose one of {sorted(choices)}", key=key)
    return choices[value]


class FeedForward(nn.Module):
    """Position-wise two-layer MLP with GELU (exact, as in BERT)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = True) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class EncoderLayer(nn.Module):
    """Post-norm transformer block (original BERT): residual, then LayerNorm, around attention and MLP."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float,
        attention_dropout: float,
        attention_kernel,
        layer_norm_eps: float,
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden_size, num_heads, attention_dropout, attention_kernel)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, intermediate_size)
        self.feed_forward_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class Encoder(nn.Module):
    """BERT-style encoder: token + position embeddings, then `num_layers` transformer blocks.

    `vocab_size` and `pad_token_id` come from the tokenizer at run time; everything else from
    conf/architecture/.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        num_heads: int = 2,
        intermediate_size: int = 512,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        attention: str = "sdpa",
        position_encoding: str = "learned",
        max_position_embeddings: int = 512,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("intermediate_size", intermediate_size),
            ("max_position_embeddings", max_position_embeddings),
        ):
            if value < 1:
                raise BertlabError(f"must be a positive integer, got {value}", key=key)
        if hidden_size % num_heads:
            raise BertlabError(
                f"{num_heads} heads do not divide hidden_size {hidden_size}; "
                f"pick num_heads so that hidden_size / num_heads is a whole number",
                key="num_heads",
            )
        for key, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= value < 1.0:
                raise BertlabError(f"must be in [0, 1), got {value}", key=key)
        kernel = _choice(attention, ATTENTION_KERNELS, "attention")
        positions = _choice(position_encoding, POSITION_ENCODINGS, "position_encoding")

        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = positions(max_position_embeddings, hidden_size)
        self.embedding_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.embedding_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(
                hidden_size, num_heads, intermediate_size, dropout, attention_dropout, kernel, layer_norm_eps
            )
            for _ in range(num_layers)
        )
        self.apply(init_bert_weights)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states [batch, tokens, hidden]. `attention_mask` [batch, tokens]: 1 for real tokens."""
        tokens = input_ids.size(1)
        if tokens > self.max_position_embeddings:
            raise ValueError(f"{tokens} tokens exceed max_position_embeddings={self.max_position_embeddings}")
        x = self.word_embeddings(input_ids) + self.position_embeddings(tokens, input_ids.device)
        x = self.embedding_dropout(self.embedding_norm(x))
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x


def init_bert_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
