"""The finetuning learning rate that `training.optimizer.lr: auto` stands for.

A pretrained encoder wants a rate small enough to keep what pretraining learned, and wider encoders want
smaller ones (BERT's own recipes: 2e-5 to 5e-5 at 768 wide; Turc et al. 2019: up to 3e-4 for the 128-wide
BERT-Tiny). One rule covers the presets: lr = 0.04 / hidden_size, so 3.1e-4 for bert_tiny (128), 1.6e-4 for
bert_mini (256), 7.8e-5 for bert_small/medium (512), 5.2e-5 for bert_base (768). An encoder trained from
random initialisation (pretrained_experiment=none) has nothing to keep and learns fastest at 1e-3, and so
does the classification head, which always starts random (`training.head_lr: auto`). benchmarks/README.md
has the measurements behind these; a number in the config always wins.
"""

from __future__ import annotations

AUTO = "auto"
PRETRAINED_LR_TIMES_WIDTH = 0.04
FROM_SCRATCH_LR = 1e-3


def finetuning_lr(hidden_size: int, pretrained: bool) -> float:
    """The rule above, for an encoder `hidden_size` wide that starts pretrained or not."""
    return PRETRAINED_LR_TIMES_WIDTH / hidden_size if pretrained else FROM_SCRATCH_LR


def head_lr(lr: float) -> float:
    """`training.head_lr: auto`: the classification head starts random, so the from-scratch rate, never
    below the backbone's."""
    return max(FROM_SCRATCH_LR, lr)
