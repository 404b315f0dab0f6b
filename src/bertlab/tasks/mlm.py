"""Masked-language-model pretraining: backbone + MLM head, loss on the masked positions only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from bertlab.data.masking import IGNORE_INDEX
from bertlab.tasks.throughput import TokenRate
from bertlab.training.parameter_groups import optimizer_and_schedule

TRAIN_COLUMNS = ["loss", "lr", "tokens_per_s"]
EVAL_COLUMNS = ["loss", "perplexity", "accuracy"]


class MaskedLanguageModel(L.LightningModule):
    """Trains `backbone` and `head` to recover masked tokens.

    `optimizer` and `scheduler` are factories (Hydra `_partial_` objects): parameters and the step count
    are bound here. `run_config` (the resolved, plain config) is stored in checkpoints so that a checkpoint
    says how to rebuild its model; nothing else from the config is pickled.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.head.tie_to(backbone.word_embeddings)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = run_config or {}
        self.token_rate = TokenRate()
        self.val_loss, self.val_accuracy = MeanMetric(), MeanMetric()
        self.test_loss, self.test_accuracy = MeanMetric(), MeanMetric()

    def forward(
        self,
        input_ids: torch.Tensor,
        masked_positions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.head(self.backbone(input_ids, attention_mask), masked_positions)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["input_ids"], batch["masked_positions"], batch.get("attention_mask"))
        labels = batch["masked_labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("step", float(self.global_step + 1), on_step=True, on_epoch=False)
        self.log("epoch", float(self.current_epoch), on_step=True, on_epoch=False)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
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

    def _log_evaluation(self, stage: str, loss_metric: MeanMetric, accuracy: MeanMetric) -> None:
        loss = loss_metric.compute()
        self.log("step", float(self.global_step))
        self.log("epoch", float(self.current_epoch))
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/perplexity", torch.exp(loss.clamp(max=math.log(1e9))))
        self.log(f"{stage}/accuracy", accuracy.compute())
        loss_metric.reset()
        accuracy.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val", self.val_loss, self.val_accuracy)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test", self.test_loss, self.test_accuracy)

    def configure_optimizers(self) -> Any:
        return optimizer_and_schedule(
            self.optimizer_factory,
            self.scheduler_factory,
            self.backbone,
            self.head,
            lambda: int(self.trainer.estimated_stepping_batches),
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bertlab"] = {
            "task": "mlm",
            "config": self.run_config,
            "world_size": self.trainer.world_size,  # a resume's data position depends on it
        }
