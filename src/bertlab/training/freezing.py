"""Which backbone parameters train, per epoch: frozen embeddings, the first N layers, or the whole
backbone, optionally until an epoch. The frozen set is a function of the epoch alone, so it holds across
a resume without any saved state. Frozen parameters get no gradient, so AdamW leaves them bitwise as
loaded (no weight decay either).
"""

from __future__ import annotations

import logging

import lightning as L
from torch import nn

from bertlab.errors import BertlabError
from bertlab.training.parameter_groups import layer_of

log = logging.getLogger(__name__)


class FreezeSchedule(L.Callback):
    def __init__(
        self,
        backbone: nn.Module,
        num_layers: int,
        embeddings: bool = False,
        layers: int = 0,
        backbone_frozen: bool = False,
        unfreeze_after_epochs: int | None = None,
    ) -> None:
        if not 0 <= layers <= num_layers:
            raise BertlabError(
                f"must be in [0, {num_layers}] (the backbone's layers), got {layers}", "layers"
            )
        if unfreeze_after_epochs is not None and unfreeze_after_epochs < 0:
            raise BertlabError(
                f"must be non-negative or null, got {unfreeze_after_epochs}", "unfreeze_after_epochs"
            )
        self.backbone = backbone
        self.num_layers = num_layers
        self.embeddings = embeddings
        self.layers = layers
        self.backbone_frozen = backbone_frozen
        self.unfreeze_after_epochs = unfreeze_after_epochs

    def frozen(self, name: str, epoch: int) -> bool:
        if self.unfreeze_after_epochs is not None and epoch >= self.unfreeze_after_epochs:
            return False
        if self.backbone_frozen:
            return True
        depth = layer_of(name, self.num_layers)
        return (self.embeddings and depth == 0) or 1 <= depth <= self.layers

    def apply(self, epoch: int) -> int:
        """Set requires_grad for `epoch`; returns the number of frozen parameter tensors."""
        count = 0
        for name, parameter in self.backbone.named_parameters():
            frozen = self.frozen(name, epoch)
            parameter.requires_grad_(not frozen)
            count += frozen
        return count

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frozen = self.apply(trainer.current_epoch)
        if frozen:
            log.info("Epoch %d: %d backbone tensors frozen", trainer.current_epoch, frozen)
