"""What the two LightningModules share: a backbone and a head, optimizer factories bound to parameter groups
when training starts, the step/epoch columns of the metric files, and the checkpoint's `bertlab` payload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from bertlab.run_folder import checkpoint_payload
from bertlab.training.parameter_groups import optimizer_and_schedule


class BackboneWithHead(L.LightningModule):
    """`optimizer` and `scheduler` are factories (Hydra `_partial_` objects): parameters and the step count
    are bound in `configure_optimizers`, the parameter groups' rates derived from `lr` (the optimizer's
    rate, resolved before the model is built). `run_config` (the resolved, plain config) is stored in
    checkpoints so that a checkpoint says how to rebuild its model; nothing else from the config is pickled.
    A module built without an optimizer (evaluation only) cannot be trained.
    """

    task: str  # the checkpoint payload's task name (run_folder.TASK_KINDS)

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        run_config: dict[str, Any] | None = None,
        *,
        lr: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lr = lr
        self.run_config = run_config or {}

    def _log_training(self, loss: torch.Tensor, lr_group: int) -> None:
        """The training row's step (1-based, after this step's update), epoch, loss and learning rate."""
        self.log("step", float(self.global_step + 1), on_step=True, on_epoch=False)
        self.log("epoch", float(self.current_epoch), on_step=True, on_epoch=False)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/lr", self.optimizers().param_groups[lr_group]["lr"], on_step=True, on_epoch=False)

    def _log_evaluation_position(self) -> None:
        """The evaluation row's step and epoch."""
        self.log("step", float(self.global_step))
        self.log("epoch", float(self.current_epoch))

    def _log_evaluation(self, stage: str) -> None:
        """Log the `stage` ("val" or "test") metrics accumulated over the epoch, and reset them."""
        raise NotImplementedError

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def parameter_group_options(self) -> dict[str, Any]:
        """Keyword arguments of training.parameter_groups (learning rates per layer, for instance)."""
        return {}

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None or self.lr is None:
            raise RuntimeError(f"{type(self).__name__} was built without an optimizer and its rate")
        return optimizer_and_schedule(
            self.optimizer_factory,
            self.scheduler_factory,
            self.backbone,
            self.head,
            self.lr,
            lambda: int(self.trainer.estimated_stepping_batches),
            **self.parameter_group_options(),
        )

    def checkpoint_extras(self) -> dict[str, Any]:
        """Task-specific entries of the checkpoint payload."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["bertlab"] = checkpoint_payload(
            self.task,
            self.run_config,
            self.trainer.world_size,  # a resume's data position depends on it
            **self.checkpoint_extras(),
        )
