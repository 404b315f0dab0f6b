"""Learning-rate schedules: linear warmup, then linear, cosine or no decay."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from bertlab.errors import BertlabError

DECAYS = ("linear", "cosine", "constant")


class WarmupThenDecay:
    """Multiplier of the base learning rate at a step (a picklable object, so LambdaLR can save it)."""

    def __init__(self, total_steps: int, warmup_steps: int, decay: str, min_lr_ratio: float) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


class WarmupThenDecayLR(LambdaLR):
    """LambdaLR whose shape always comes from the current config; a checkpoint restores only the position.

    So a run resumed with a longer training.max_steps decays over the new length instead of the old one.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(self.lr_lambdas)})


def warmup_then_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.1,
    warmup_steps: int | None = None,
    decay: str = "linear",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A per-step scheduler; `total_steps` is known only at run time (training.max_steps).

    Warmup is `warmup_ratio` of the run unless `warmup_steps` is given, so shortening a run keeps its shape.
    """
    if decay not in DECAYS:
        raise BertlabError(f"unknown decay {decay!r}; choose one of {list(DECAYS)}", "decay")
    if not 0.0 <= warmup_ratio < 1.0:
        raise BertlabError(f"must be in [0, 1), got {warmup_ratio}", "warmup_ratio")
    if warmup_steps is None:
        warmup_steps = round(warmup_ratio * total_steps)
    elif not 0 <= warmup_steps <= total_steps:
        raise BertlabError(
            f"must be in [0, max_steps={total_steps}] or null, got {warmup_steps}", "warmup_steps"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise BertlabError(f"must be in [0, 1], got {min_lr_ratio}", "min_lr_ratio")
    return WarmupThenDecayLR(optimizer, WarmupThenDecay(total_steps, warmup_steps, decay, min_lr_ratio))
