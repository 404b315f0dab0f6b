"""The pretraining learning rate that `training.optimizer.lr: auto` stands for.

An encoder from random initialisation (bertlab's presets) has nothing to keep and learns fastest at 1e-3
(batch 32 x 128 tokens). A released model continued on one's own text (`architecture=from_hf`, domain- or
task-adaptive pretraining) has much to keep: at 1e-3 its first few hundred steps move the encoder away from
what finetunes best, so it continues at 1e-4, the rate BERT itself was trained at. Measured on
all-MiniLM-L6-v2 (benchmarks/README.md, issue 31): after 15 minutes of adaptation at 1e-4 its finetunes
beat the same 15 minutes at 1e-3 on both devsets tried (+0.6 and +3.0 points of macro-F1), and a linear
probe on its embeddings kept 0.715 of the released model's 0.711 against 0.690. A number in the config
always wins.
"""

from __future__ import annotations

from bertlab.errors import BertlabError
from bertlab.training.finetuning_lr import AUTO

FROM_SCRATCH_LR = 1e-3
CONTINUED_LR = 1e-4
KEY = "training.optimizer.lr"


def pretraining_lr(configured: object, continues_released_model: bool) -> float:
    """The rate a pretraining run trains at: `configured`, or by the rule above for `auto`."""
    if configured == AUTO:
        return CONTINUED_LR if continues_released_model else FROM_SCRATCH_LR
    if isinstance(configured, bool) or not isinstance(configured, int | float) or configured <= 0:
        raise BertlabError(f"must be a positive number or auto, got {configured!r}", KEY)
    return float(configured)
