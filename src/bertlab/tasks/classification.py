"""Sequence classification: backbone + classification head, cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from bertlab.tasks.base import BackboneWithHead

TRAIN_COLUMNS = ["loss", "lr"]
EVAL_COLUMNS = ["loss", "accuracy", "macro_f1"]


class SequenceClassifier(BackboneWithHead):
    """Trains `backbone` + `head` on labelled sequences.

    Learning rates (see training/parameter_groups.py): the head at `head_lr` (default: the optimizer's lr),
    backbone parameters decayed by `layerwise_lr_decay` per layer below the head, embeddings the most.
    """

    task = "classification"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_labels: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        head_lr: float | None = None,
        layerwise_lr_decay: float = 1.0,
        run_config: dict[str, Any] | None = None,
        backbone_config: dict[str, Any] | None = None,
        *,
        lr: float | None = None,
    ) -> None:
        super().__init__(backbone, head, optimizer, scheduler, run_config, lr=lr)
        self.head_lr = head_lr
        self.layerwise_lr_decay = layerwise_lr_decay
        self.backbone_config = backbone_config or {}
        metrics = MetricCollection(
            {
                "accuracy": MulticlassAccuracy(num_labels, average="micro"),
                "macro_f1": MulticlassF1Score(num_labels, average="macro"),
            }
        )
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.predictions: list[dict[str, torch.Tensor]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.backbone(input_ids, attention_mask), attention_mask)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits.float(), batch["labels"])
        self._log_training(loss, lr_group=-1)  # the head's group: the last
        return loss

    def _evaluate(
        self, batch: dict[str, torch.Tensor], loss: MeanMetric, metrics: MetricCollection
    ) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"]).float()
        loss.update(F.cross_entropy(logits, batch["labels"]), weight=batch["labels"].numel())
        metrics.update(logits, batch["labels"])
        return logits

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, self.test_loss, self.test_metrics)
        probabilities = logits.softmax(-1)
        self.predictions.append(
            {
                "index": batch["index"].cpu(),
                "label": batch["labels"].cpu(),
                "prediction": probabilities.argmax(-1).cpu(),
                "probabilities": probabilities.cpu(),
            }
        )

    def on_test_epoch_start(self) -> None:
        self.predictions = []

    def _log_evaluation(self, stage: str) -> None:
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        self._log_evaluation_position()
        self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "val")
        self.log_dict(metrics.compute(), prog_bar=stage == "val")
        loss.reset()
        metrics.reset()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.trainer.world_size > 1:  # every process joins the gather, even with no test batches
            self.predictions = self._gather_predictions()

    def _gather_predictions(self) -> list[dict[str, torch.Tensor]]:
        """Every process's share of the test predictions, in dataset order (shares may differ in size)."""
        shares: list[list[dict[str, torch.Tensor]] | None] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(shares, self.predictions)
        batches = [batch for share in shares for batch in share or []]
        if not batches:
            return []
        merged = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
        order = merged["index"].argsort()
        return [{key: value[order] for key, value in merged.items()}]

    def parameter_group_options(self) -> dict[str, Any]:
        return {"layerwise_lr_decay": self.layerwise_lr_decay, "head_lr": self.head_lr}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone_config
        }  # the architecture actually built (inherited from pretraining)
