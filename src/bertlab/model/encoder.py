"""The transformer encoder (the backbone shared by pretraining and finetuning).

Every option is a constructor argument set from conf/architecture/, and each named choice is looked up in a
registry (attention styles, position encodings, norms, feed-forward blocks, norm positions), so adding a
variant means adding an entry, not a branch.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from bertlab.errors import BertlabError
from bertlab.model.attention import (
    ATTENTION_STYLES,
    AttentionKernel,
    SelfAttention,
    combine_masks,
    same_document,
    sliding_window,
)
from bertlab.model.dropout import Dropout
from bertlab.model.feed_forward import FEED_FORWARDS
from bertlab.model.norms import NORMS, NormFactory
from bertlab.model.positions import POSITION_ENCODINGS, RotaryPositions, document_positions

T = TypeVar("T")


def _choice(value: str, choices: dict[str, T], key: str) -> T:
    if value not in choices:
        raise BertlabError(f"unknown value {value!r}; choose one of {sorted(choices)}", key=key)
    return choices[value]


class EncoderLayer(nn.Module):
    """One transformer block: attention and feed-forward sublayers, each with a residual and a norm.

    Subclasses decide where the norm sits; the submodules (and so the checkpoint keys) are the same.
    """

    final_norm: ClassVar[bool] = False  # whether the encoder needs a norm after the last block

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float,
        attention_dropout: float,
        attention_kernel: AttentionKernel,
        layer_norm_eps: float,
        norm: NormFactory = NORMS["layernorm"],
        feed_forward: Any = FEED_FORWARDS["gelu"],
        bias: bool = True,
        fused_qkv: bool = True,
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(
            hidden_size, num_heads, attention_dropout, attention_kernel, bias=bias, fused_qkv=fused_qkv
        )
        self.attention_norm = norm(hidden_size, layer_norm_eps, bias)
        self.feed_forward = feed_forward(hidden_size, intermediate_size, bias)
        self.feed_forward_norm = norm(hidden_size, layer_norm_eps, bias)
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class PostNormLayer(EncoderLayer):
    """Original BERT: x = norm(x + sublayer(x)). Matches Hugging Face BertLayer exactly."""

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = self.attention_norm(x + self.dropout(self.attention(x, mask, rotary)))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class PreNormLayer(EncoderLayer):
    """x = x + sublayer(norm(x)): an unnormalised residual stream, stabler at depth and with large learning
    rates; the encoder then normalises the output of the last block."""

    final_norm = True

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), mask, rotary))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


NORM_POSITIONS: dict[str, type[EncoderLayer]] = {"post": PostNormLayer, "pre": PreNormLayer}


class Encoder(nn.Module):
    """BERT-style encoder: token embeddings (+ absolute positions), then `num_layers` transformer blocks.

    `vocab_size` and `pad_token_id` come from the tokenizer at run time; everything else from
    conf/architecture/ (docs/architecture.md lists the options). `local_window` and `global_every` apply
    to `attention: local` only, `rope_base` to `position_encoding: rope` only. `type_vocab_size` > 0 adds
    BERT's segment (token-type) embeddings, which text pairs use; 0 (bertlab's presets) does without, as
    RoBERTa-style models do.
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
        norm_position: str = "post",
        norm: str = "layernorm",
        activation: str = "gelu",
        bias: bool = True,
        fused_qkv: bool = True,
        rope_base: float = 10000.0,
        local_window: int = 16,
        global_every: int = 0,
        type_vocab_size: int = 0,
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
        if type_vocab_size < 0:
            raise BertlabError(
                f"must be 0 (no segment embeddings) or the number of segment types, got {type_vocab_size}",
                key="type_vocab_size",
            )
        if hidden_size % num_heads:
            raise BertlabError(
                f"{num_heads} heads do not divide hidden_size {hidden_size}; "
                f"pick num_heads so that hidden_size / num_heads is a whole number",
                key="num_heads",
            )
        for key, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= value < 1.0:
                raise BertlabError(f"must be in [0, 1), got {value}", key=key)
        if not layer_norm_eps > 0:
            raise BertlabError(f"must be positive, got {layer_norm_eps}", key="layer_norm_eps")
        style = _choice(attention, ATTENTION_STYLES, "attention")
        positions = _choice(position_encoding, POSITION_ENCODINGS, "position_encoding")
        layer_type = _choice(norm_position, NORM_POSITIONS, "norm_position")
        make_norm = _choice(norm, NORMS, "norm")
        feed_forward = _choice(activation, FEED_FORWARDS, "activation")
        head_dim = hidden_size // num_heads
        if issubclass(positions, RotaryPositions):
            if head_dim % 2:
                raise BertlabError(
                    f"rope rotates pairs of dimensions and needs an even head dimension, but hidden_size "
                    f"{hidden_size} / num_heads {num_heads} = {head_dim}; change num_heads or hidden_size",
                    key="position_encoding",
                )
            if not rope_base > 1:
                raise BertlabError(f"must be greater than 1, got {rope_base}", key="rope_base")
        if style.sliding_window:
            if not 1 <= local_window <= max_position_embeddings:
                raise BertlabError(
                    f"must be between 1 and max_position_embeddings={max_position_embeddings} "
                    f"(tokens attend to neighbours at most local_window positions away), got {local_window}",
                    key="local_window",
                )
            if global_every < 0:
                raise BertlabError(
                    f"must be 0 (every layer local) or k >= 1 (every k-th layer global), got {global_every}",
                    key="global_every",
                )

        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.max_position_embeddings = max_position_embeddings
        self.pad_token_id = pad_token_id
        self.local_window = local_window
        # Which layers see only a window: with `local`, all but every `global_every`-th (from layer 0).
        self.local_layers = [
            style.sliding_window and not (global_every and index % global_every == 0)
            for index in range(num_layers)
        ]
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.type_vocab_size = type_vocab_size
        if type_vocab_size:
            self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.position_embeddings = positions(max_position_embeddings, hidden_size, num_heads, rope_base)
        self.embedding_norm = make_norm(hidden_size, layer_norm_eps, bias)
        self.embedding_dropout = Dropout(dropout)
        self.layers = nn.ModuleList(
            layer_type(
                hidden_size,
                num_heads,
                intermediate_size,
                dropout,
                attention_dropout,
                style.kernel,
                layer_norm_eps,
                norm=make_norm,
                feed_forward=feed_forward,
                bias=bias,
                fused_qkv=fused_qkv,
            )
            for _ in range(num_layers)
        )
        self.final_norm = (
            make_norm(hidden_size, layer_norm_eps, bias) if layer_type.final_norm else nn.Identity()
        )
        self.apply(init_bert_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states [batch, tokens, hidden]. `attention_mask` [batch, tokens]: 1 for real tokens.

        `token_type_ids` [batch, tokens]: the segment of each token (0 for the first text of a pair, 1 for
        the second), read only by an encoder with segment embeddings (`type_vocab_size` > 0); None: all 0.

        `document_ids` [batch, tokens] (document packing, bertlab.data.document_packing): several documents
        in one row, each seen as if alone: attention stays within a document and positions restart at 0 for
        each. None: the row is one sequence.
        """
        tokens = input_ids.size(1)
        if tokens > self.max_position_embeddings:
            raise ValueError(f"{tokens} tokens exceed max_position_embeddings={self.max_position_embeddings}")
        positions = None if document_ids is None else document_positions(document_ids)
        x = self.word_embeddings(input_ids)
        if self.type_vocab_size:
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        absolute = self.position_embeddings.embeddings(tokens, positions=positions)
        if absolute is not None:
            x = x + absolute
        x = self.embedding_dropout(self.embedding_norm(x))
        masks = self.attention_masks(tokens, attention_mask, x.device, document_ids, positions)
        rotary = self.position_embeddings.rotary(tokens, positions=positions)
        for layer, local in zip(self.layers, self.local_layers, strict=True):
            x = layer(x, masks[local], rotary)
        return self.final_norm(x)

    def attention_masks(
        self,
        tokens: int,
        attention_mask: torch.Tensor | None,
        device: torch.device,
        document_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(mask of the global layers, mask of the local layers), each built once per forward, only if used.

        With no padding, no ALiBi, no local layers and no documents both are None: the kernels take their
        unmasked path.
        """
        padding = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        documents = None if document_ids is None else same_document(document_ids)
        bias = self.position_embeddings.attention_bias(tokens, positions=positions)
        any_local = any(self.local_layers)
        global_mask = None if all(self.local_layers) else combine_masks(padding, bias, None, documents)
        local_mask = (
            combine_masks(padding, bias, sliding_window(tokens, self.local_window, device), documents)
            if any_local
            else None
        )
        return global_mask, local_mask


def init_bert_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit norms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


ENCODER_TARGET = f"{Encoder.__module__}.{Encoder.__qualname__}"  # the architecture section's _target_
# Set at run time from the tokenizer, not by the architecture section.
RUNTIME_ARGUMENTS = ("vocab_size", "pad_token_id")


def encoder_defaults() -> dict[str, Any]:
    """Every architecture option of the Encoder and its default: the one list of the options there are."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(Encoder).parameters.items()
        if parameter.default is not inspect.Parameter.empty and name not in RUNTIME_ARGUMENTS
    }
