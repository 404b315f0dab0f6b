"""A new MLM head learns before the encoder under it moves: `training.head_warmup_steps`.

Continued pretraining of a released encoder that came without an MLM head (a base model such as
BertModel, or a sentence-transformers model) starts the head from random weights: at first its gradients
are noise, and at a pretraining rate they would rewrite the encoder the run means to build on. For the
first N optimizer steps only the head's own weights (transform, norm, decoder bias) learn: the encoder's
rate is 0, so its weights (and the word embeddings, which the decoder shares) stay bitwise as imported.
Over the next N steps the encoder's rate rises linearly to the schedule's, so its first updates, from
fresh optimizer moments, are small ones. The multiplier depends on the step alone, so a resume continues
it exactly; it scales the rate each step and restores it afterwards, so the schedule and the checkpoints
keep the unscaled rates. `auto` (the default) is AUTO_STEPS for such an import and 0 otherwise
(benchmarks/README.md, "Continued pretraining of a released model").
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

from bertlab.errors import BertlabError

AUTO = "auto"
AUTO_STEPS = 40  # measured: benchmarks/README.md, "Continued pretraining of a released model"


def resolve_head_warmup_steps(value: int | str | None, new_head_on_pretrained_encoder: bool) -> int:
    """The number of steps `training.head_warmup_steps` stands for."""
    if value == AUTO:
        return AUTO_STEPS if new_head_on_pretrained_encoder else 0
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BertlabError(f"must be auto or a non-negative integer, got {value!r}", "head_warmup_steps")
    return value


def encoder_rate_factor(step: int, steps: int) -> float:
    """The encoder's share of the scheduled rate at optimizer step `step` (0-based)."""
    if step < steps:
        return 0.0
    if step < 2 * steps:
        return (step - steps + 1) / steps
    return 1.0


class HeadWarmup(L.Callback):
    """Scales the rate of the optimizer groups that hold `backbone` parameters by `encoder_rate_factor`."""

    def __init__(self, backbone: nn.Module, steps: int) -> None:
        self.steps = steps
        self.backbone_ids = {id(parameter) for parameter in backbone.parameters()}
        self.scheduled: list[float] | None = None
        self.position: int | None = None

    @staticmethod
    def _schedule_position(trainer: L.Trainer) -> int | None:
        configs = trainer.lr_scheduler_configs
        return configs[0].scheduler.last_epoch if configs else None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        factor = encoder_rate_factor(trainer.global_step, self.steps)
        if factor == 1.0:
            return
        groups = trainer.optimizers[0].param_groups
        self.scheduled = [group["lr"] for group in groups]
        self.position = self._schedule_position(trainer)
        for group in groups:
            if any(id(parameter) in self.backbone_ids for parameter in group["params"]):
                group["lr"] *= factor

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        """Before any checkpoint is written: the unscaled rates. A schedule that stepped since (Lightning steps
        it before this hook) has set them from its own base rates already; otherwise they are put back."""
        if self.scheduled is not None and self._schedule_position(trainer) == self.position:
            for group, lr in zip(trainer.optimizers[0].param_groups, self.scheduled, strict=True):
                group["lr"] = lr
        self.scheduled = None
