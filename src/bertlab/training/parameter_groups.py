"""Optimizer parameter groups shared by both LightningModules (tasks/): weight decay off for biases and norms, and learning
rates by depth (layer-wise decay; the head at its own rate). Depth 0 is the embeddings, i + 1 encoder
layer i, num_layers + 1 anything above the layers (a final norm)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

LAYER = re.compile(r"^layers\.(\d+)\.")


def layer_of(name: str, num_layers: int) -> int:
    """Depth of a backbone parameter: 0 for embeddings, i + 1 for layer i, num_layers + 1 above the layers."""
    match = LAYER.match(name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embedding" in name else num_layers + 1


def no_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    """Biases, norms and other vectors are not decayed (also for Hugging Face names: `LayerNorm`)."""
    return parameter.ndim < 2 or "norm" in name.lower()


def parameter_groups(
    backbone: nn.Module,
    head: nn.Module,
    lr: float,
    layerwise_lr_decay: float = 1.0,
    head_lr: float | None = None,
) -> list[dict[str, Any]]:
    """One group per (scope, depth, decay or not). Backbone parameters at depth d get
    lr * layerwise_lr_decay ** (num_layers + 1 - d); the head gets head_lr (default lr). Every parameter is
    included (frozen ones simply get no gradient), and weights shared with the backbone (a tied MLM
    decoder) are listed once."""
    num_layers = backbone.num_layers
    groups: dict[tuple[str, int, bool], dict[str, Any]] = {}
    seen: set[int] = set()

    def add(parameter: nn.Parameter, name: str, scope: str, depth: int, group_lr: float) -> None:
        if id(parameter) in seen:
            return
        seen.add(id(parameter))
        no_decay = no_weight_decay(name, parameter)
        group = groups.setdefault((scope, depth, no_decay), {"params": [], "lr": group_lr})
        if no_decay:
            group["weight_decay"] = 0.0
        group["params"].append(parameter)

    for name, parameter in backbone.named_parameters():
        depth = layer_of(name, num_layers)
        add(parameter, name, "backbone", depth, lr * layerwise_lr_decay ** (num_layers + 1 - depth))
    for name, parameter in head.named_parameters():
        add(parameter, name, "head", num_layers + 2, head_lr or lr)
    return [groups[key] for key in sorted(groups)]


def optimizer_and_schedule(
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., Any] | None,
    backbone: nn.Module,
    head: nn.Module,
    lr: float,
    total_steps: Callable[[], int],
    layerwise_lr_decay: float = 1.0,
    head_lr: float | None = None,
) -> Any:
    """What a LightningModule's configure_optimizers returns: the optimizer and a per-step schedule.

    `lr` is the optimizer's rate (the factory's own); `total_steps` is asked only when there is a schedule
    (it needs the Trainer's data).
    """
    groups = parameter_groups(backbone, head, lr, layerwise_lr_decay, head_lr)
    optimizer = optimizer_factory(groups)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer, total_steps=total_steps())
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }
