"""The Hugging Face BERT and RoBERTa weight formats: which bertlab weight is which of theirs.

One name table serves both directions, so export (bertlab -> Hugging Face) and import (Hugging Face ->
bertlab) cannot drift apart. bertlab's encoder is original BERT; the two formats differ only in names, in
RoBERTa's position table (its position ids start at `pad_token_id + 1`, so the rows before are unused) and
in segment (token-type) embeddings: an import keeps them (architecture.type_vocab_size), so text pairs get
their segments as in Hugging Face; an encoder without them exports a zero type table, which adds nothing.
Runs imported before segments were kept had type row 0 folded into the position table: they export the
same way, a zero type table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

QKV = ("query", "key", "value")
# bertlab layer submodule -> Hugging Face's, under <base>.encoder.layer.<i>.
LAYER_NAMES = {
    "attention.out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "feed_forward.up": "intermediate.dense",
    "feed_forward.down": "output.dense",
    "feed_forward_norm": "output.LayerNorm",
}

# bertlab architecture option -> (transformers config key, its default when config.json omits it; None:
# required). One table for both directions: export writes these keys, import reads them.
CONFIG_KEYS: dict[str, tuple[str, Any]] = {
    "hidden_size": ("hidden_size", None),
    "num_layers": ("num_hidden_layers", None),
    "num_heads": ("num_attention_heads", None),
    "intermediate_size": ("intermediate_size", None),
    "dropout": ("hidden_dropout_prob", 0.1),
    "attention_dropout": ("attention_probs_dropout_prob", 0.1),
    "layer_norm_eps": ("layer_norm_eps", 1e-12),
}
# Encoder options and the values the Hugging Face BERT/RoBERTa formats express (original BERT); an import
# sets the first. "local" attention (a window) has no equivalent; sdpa and eager compute the same.
ENCODER_CHOICES: dict[str, tuple[Any, ...]] = {
    "attention": ("sdpa", "eager"),
    "position_encoding": ("learned",),
    "norm_position": ("post",),
    "norm": ("layernorm",),
    "activation": ("gelu",),
    "bias": (True,),
}


@dataclass(frozen=True)
class HFFormat:
    """One Hugging Face model family bertlab's encoder reproduces exactly."""

    model_type: str  # config.json's model_type
    masked_lm: str  # the transformers class with the MLM head
    base: str  # prefix of the encoder's weights in that class
    head: dict[str, str]  # bertlab MLM head submodule -> theirs
    head_bias: str  # the decoder bias (transformers ties <decoder>.bias to it)
    offset_positions: bool  # position ids start at pad_token_id + 1 (RoBERTa)
    type_vocab_size: int  # what an export writes
    bos_eos: bool  # the tokenizer names its [CLS]/[SEP] roles bos and eos too (RoBERTa's <s> and </s>)
    sequence_classification: str  # the transformers class with the classification head
    classifier_hidden: str  # its tanh layer on the first token (BERT's pooler, RoBERTa's head dense)
    classifier_out: str  # its output layer

    def position_offset(self, pad_token_id: int) -> int:
        return pad_token_id + 1 if self.offset_positions else 0

    def names(self, num_layers: int, mlm_head: bool = True) -> dict[str, str]:
        """bertlab name (q, k, v unfused, `backbone.`/`head.` prefixed) -> Hugging Face name; the encoder's
        only without `mlm_head`."""
        modules = {
            "backbone.embedding_norm": f"{self.base}.embeddings.LayerNorm",
            **({f"head.{ours}": theirs for ours, theirs in self.head.items()} if mlm_head else {}),
        }
        for index in range(num_layers):
            ours, theirs = f"backbone.layers.{index}", f"{self.base}.encoder.layer.{index}"
            modules.update({f"{ours}.attention.qkv.{n}": f"{theirs}.attention.self.{n}" for n in QKV})
            modules.update({f"{ours}.{o}": f"{theirs}.{t}" for o, t in LAYER_NAMES.items()})
        names = {
            f"{o}.{suffix}": f"{t}.{suffix}" for o, t in modules.items() for suffix in ("weight", "bias")
        }
        names["backbone.word_embeddings.weight"] = f"{self.base}.embeddings.word_embeddings.weight"
        return names

    def config_kwargs(
        self,
        architecture: Mapping[str, Any],
        vocab_size: int,
        pad_token_id: int,
        tied: bool = True,
        cls_id: int | None = None,
        sep_id: int | None = None,
        labels: list | None = None,
    ) -> dict[str, Any]:
        """The transformers config of this family for a bertlab `architecture` (its config section)."""
        return {
            "vocab_size": vocab_size,
            **{theirs: architecture[ours] for ours, (theirs, _) in CONFIG_KEYS.items()},
            "hidden_act": "gelu",
            "max_position_embeddings": architecture["max_position_embeddings"]
            + self.position_offset(pad_token_id),
            "type_vocab_size": max(self.type_vocab_size, architecture.get("type_vocab_size") or 0),
            "pad_token_id": pad_token_id,
            **({"bos_token_id": cls_id, "eos_token_id": sep_id} if self.bos_eos else {}),
            "position_embedding_type": "absolute",
            "tie_word_embeddings": tied,
            "architectures": [self.masked_lm if labels is None else self.sequence_classification],
            **(
                {
                    "num_labels": len(labels),
                    "id2label": {i: str(label) for i, label in enumerate(labels)},
                    "label2id": {str(label): i for i, label in enumerate(labels)},
                }
                if labels is not None
                else {}
            ),
        }

    def architecture(self, config: Mapping[str, Any], pad_token_id: int) -> dict[str, Any]:
        """The bertlab architecture options a transformers `config` (config.json) sets.

        The inverse of `config_kwargs`: the table keys, the position table less the offset, and the
        encoder choices the format stands for (the first of ENCODER_CHOICES); the other options keep
        the Encoder's defaults.
        """
        return {
            **{option: values[0] for option, values in ENCODER_CHOICES.items()},
            **{
                ours: config[theirs] if default is None else config.get(theirs, default)
                for ours, (theirs, default) in CONFIG_KEYS.items()
            },
            "max_position_embeddings": config["max_position_embeddings"] - self.position_offset(pad_token_id),
            "type_vocab_size": config.get("type_vocab_size", self.type_vocab_size),
        }

    @property
    def position_key(self) -> str:
        return f"{self.base}.embeddings.position_embeddings.weight"

    @property
    def token_type_key(self) -> str:
        return f"{self.base}.embeddings.token_type_embeddings.weight"


BERT = HFFormat(
    model_type="bert",
    masked_lm="BertForMaskedLM",
    base="bert",
    head={
        "transform": "cls.predictions.transform.dense",
        "norm": "cls.predictions.transform.LayerNorm",
        "decoder": "cls.predictions.decoder",
    },
    head_bias="cls.predictions.bias",
    offset_positions=False,
    type_vocab_size=2,
    bos_eos=False,
    sequence_classification="BertForSequenceClassification",
    classifier_hidden="bert.pooler.dense",
    classifier_out="classifier",
)
ROBERTA = HFFormat(
    model_type="roberta",
    masked_lm="RobertaForMaskedLM",
    base="roberta",
    head={"transform": "lm_head.dense", "norm": "lm_head.layer_norm", "decoder": "lm_head.decoder"},
    head_bias="lm_head.bias",
    offset_positions=True,
    type_vocab_size=1,
    bos_eos=True,
    sequence_classification="RobertaForSequenceClassification",
    classifier_hidden="classifier.dense",
    classifier_out="classifier.out_proj",
)
FORMATS = {fmt.model_type: fmt for fmt in (BERT, ROBERTA)}
POSITIONS = "backbone.position_embeddings.embedding.weight"
TOKEN_TYPES = "backbone.token_type_embeddings.weight"


def fuse_qkv(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Unfused query/key/value weights of every layer stacked into bertlab's fused `qkv` projection."""
    state = dict(state)
    for index in range(num_layers):
        prefix = f"backbone.layers.{index}.attention.qkv"
        for suffix in ("weight", "bias"):
            state[f"{prefix}.{suffix}"] = torch.cat([state.pop(f"{prefix}.{n}.{suffix}") for n in QKV])
    return state


def split_qkv(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of `fuse_qkv`."""
    state = dict(state)
    for index in range(num_layers):
        prefix = f"backbone.layers.{index}.attention.qkv"
        for suffix in ("weight", "bias"):
            for name, part in zip(QKV, state.pop(f"{prefix}.{suffix}").chunk(3, dim=0), strict=True):
                state[f"{prefix}.{name}.{suffix}"] = part
    return state


def to_hf(
    state: dict[str, torch.Tensor],
    fmt: HFFormat,
    num_layers: int,
    fused: bool,
    pad_token_id: int,
    mlm_head: bool = True,
) -> dict[str, torch.Tensor]:
    """bertlab's MLM weights (`backbone.*`, `head.*`) under the format's names; without `mlm_head`, the
    encoder's only (a classifier adds its head itself)."""
    state = split_qkv(state, num_layers) if fused else state
    out = {theirs: state[ours] for ours, theirs in fmt.names(num_layers, mlm_head).items()}
    positions = state[POSITIONS]
    offset = fmt.position_offset(pad_token_id)
    out[fmt.position_key] = torch.cat([positions.new_zeros(offset, positions.size(1)), positions])
    types = state.get(TOKEN_TYPES)
    rows = max(fmt.type_vocab_size, 0 if types is None else types.size(0))
    out[fmt.token_type_key] = positions.new_zeros(rows, positions.size(1))
    if types is not None:
        out[fmt.token_type_key][: types.size(0)] = types
    if mlm_head:
        out[fmt.head_bias] = state["head.decoder.bias"]
    return {key: tensor.detach().clone().contiguous() for key, tensor in out.items()}


def from_hf(
    state: dict[str, torch.Tensor], fmt: HFFormat, num_layers: int, pad_token_id: int
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A Hugging Face state dict as bertlab's (fused q/k/v, `backbone.*` and, where present, `head.*`).

    Returns the weights and what was absent ({bertlab name: Hugging Face name}). A base model without the
    MLM head (BertModel) lacks only `head.*`; the caller decides what that means. Weights saved by a base
    class lack the `<base>.` prefix and old ones name LayerNorm parameters gamma/beta: both are accepted.
    """
    state = {_modern_name(key): value for key, value in state.items()}
    if fmt.position_key not in state:  # saved by the base model class: no prefix
        state = {f"{fmt.base}.{key}": value for key, value in state.items()}
    if fmt.head_bias in state:
        state.setdefault(f"{fmt.head['decoder']}.bias", state[fmt.head_bias])
    names = {**fmt.names(num_layers), POSITIONS: fmt.position_key, TOKEN_TYPES: fmt.token_type_key}
    if f"{fmt.head['decoder']}.weight" not in state:  # tied: transformers saves the matrix once
        names["head.decoder.weight"] = names["backbone.word_embeddings.weight"]
    missing = {ours: theirs for ours, theirs in names.items() if theirs not in state}
    out = {ours: state[theirs] for ours, theirs in names.items() if theirs in state}
    if POSITIONS in out:
        out[POSITIONS] = out[POSITIONS][fmt.position_offset(pad_token_id) :]
    missing.pop(
        TOKEN_TYPES, None
    )  # a model without segments (type_vocab_size 0): the encoder has none either
    if not any(key.startswith("backbone.") for key in missing):
        out = fuse_qkv(out, num_layers)
    return {key: value.float().contiguous() for key, value in out.items()}, missing


def _modern_name(key: str) -> str:
    """Checkpoints converted from TensorFlow name LayerNorm parameters gamma and beta."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key
