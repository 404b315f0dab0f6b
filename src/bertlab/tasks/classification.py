"""Sequence classification (single label, multi-label, regression; one text or a pair): backbone +
classification head, with the loss and metrics of the head's problem type (tasks/objectives.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from bertlab.model.classification_head import SINGLE_LABEL
from bertlab.tasks.base import BackboneWithHead
from bertlab.tasks.objectives import EVAL_FIGURES, objective_for

TRAIN_COLUMNS = ["loss", "lr"]


def eval_columns(problem_type: str = SINGLE_LABEL) -> list[str]:
    """The evaluation metric file's columns for a problem type."""
    return ["loss", *EVAL_FIGURES[problem_type]]


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
        self.objective = objective_for(head, num_labels)
        self.val_metrics, self.test_metrics = self.objective.metrics(), self.objective.metrics()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.predictions: list[dict[str, torch.Tensor]] = []

    @property
    def problem_type(self) -> str:
        return self.objective.problem_type

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.backbone(input_ids, attention_mask, token_type_ids=token_type_ids)
        return self.head(hidden, attention_mask)

    def _logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.objective.loss(self.head, self._logits(batch), batch["labels"])
        self._log_training(loss, lr_group=-1)  # the head's group: the last
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], loss: MeanMetric, metrics: Any) -> torch.Tensor:
        logits = self._logits(batch).float()
        targets = batch["labels"]
        loss.update(self.objective.loss(self.head, logits, targets), weight=targets.size(0))
        self.objective.update(metrics, self.head, logits, targets)
        return logits

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, self.test_loss, self.test_metrics)
        record = self.objective.prediction(self.head, logits, batch["labels"])
        self.predictions.append({"index": batch["index"].cpu(), **record})

    def on_test_epoch_start(self) -> None:
        self.predictions = []

    def _log_evaluation(self, stage: str) -> None:
        loss, metrics = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_metrics")
        self._log_evaluation_position()
        self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "val")
        figures = self.objective.figures(metrics, self.head, stage)
        self.log_dict({f"{stage}/{name}": value for name, value in figures.items()}, prog_bar=stage == "val")
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
