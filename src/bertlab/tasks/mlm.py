"""Masked-language-model pretraining: backbone + MLM head, loss on the masked positions only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from bertlab.data.masking import IGNORE_INDEX
from bertlab.tasks.base import BackboneWithHead
from bertlab.tasks.throughput import TokenRate

TRAIN_COLUMNS = ["loss", "lr", "tokens_per_s"]
EVAL_COLUMNS = ["loss", "perplexity", "accuracy"]


class MaskedLanguageModel(BackboneWithHead):
    """Trains `backbone` and `head` (tied to the word embeddings) to recover masked tokens."""

    task = "mlm"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        run_config: dict[str, Any] | None = None,
        *,
        lr: float | None = None,
    ) -> None:
        super().__init__(backbone, head, optimizer, scheduler, run_config, lr=lr)
        self.head.tie_to(backbone.word_embeddings)
        self.token_rate = TokenRate()
        self.val_loss, self.val_accuracy = MeanMetric(), MeanMetric()
        self.test_loss, self.test_accuracy = MeanMetric(), MeanMetric()

    def forward(
        self,
        input_ids: torch.Tensor,
        masked_positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MLM logits at `masked_positions`; `document_ids` (document packing) keep a block's documents apart."""
        return self.head(self.backbone(input_ids, attention_mask, document_ids), masked_positions)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(
            batch["input_ids"],
            batch["masked_positions"],
            batch.get("attention_mask"),
            batch.get("document_ids"),
        )
        labels = batch["masked_labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self._log_training(loss, lr_group=0)
        rate = self.token_rate.update(batch["input_ids"].numel() * self.trainer.world_size)
        self.log("train/tokens_per_s", rate, on_step=True, on_epoch=False, rank_zero_only=True)
        return loss

    def _evaluate(
        self, batch: dict[str, torch.Tensor], loss_metric: MeanMetric, accuracy: MeanMetric
    ) -> None:
        loss, logits = self._loss(batch)
        labels = batch["masked_labels"]
        counted = labels != IGNORE_INDEX
        loss_metric.update(loss, weight=counted.sum())
        accuracy.update((logits.argmax(-1) == labels)[counted].float())

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_accuracy)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_accuracy)

    def _log_evaluation(self, stage: str) -> None:
        loss_metric, accuracy = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_accuracy")
        loss = loss_metric.compute()
        self._log_evaluation_position()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/perplexity", torch.exp(loss.clamp(max=math.log(1e9))))
        self.log(f"{stage}/accuracy", accuracy.compute())
        loss_metric.reset()
        accuracy.reset()
