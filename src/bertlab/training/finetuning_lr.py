"""The finetuning learning rate that `training.optimizer.lr: auto` stands for.

A pretrained encoder wants a rate small enough to keep what pretraining learned, and wider encoders want
smaller ones. One rule covers the presets: lr = 1.2 / hidden_size^1.5, so 8.3e-4 for bert_tiny (128),
2.9e-4 for bert_mini (256), 1.0e-4 for bert_small/medium (512), 5.6e-5 for bert_base (768). It is pinned at
bert_mini by the quality benchmark (benchmarks/README.md: 3e-4 beat 1.6e-4 there) and at bert_base by
BERT's published range (2e-5 to 5e-5 at 768 wide). An encoder trained from random initialisation
(pretrained_experiment=none) has nothing to keep and learns fastest at 1e-3. A number in the config always
wins; the head trains at the same rate unless `training.head_lr` is set.
"""

from __future__ import annotations

AUTO = "auto"
PRETRAINED_LR_SCALE = 1.2
WIDTH_EXPONENT = 1.5
FROM_SCRATCH_LR = 1e-3


def finetuning_lr(hidden_size: int, pretrained: bool) -> float:
    """`training.optimizer.lr: auto` for an encoder `hidden_size` wide that starts pretrained or not."""
    return PRETRAINED_LR_SCALE / hidden_size**WIDTH_EXPONENT if pretrained else FROM_SCRATCH_LR
