"""Learning-rate schedules, each a per-step multiplier of the base rate.

- `warmup_then_decay` (the default): linear warmup, then linear, cosine or no decay over the run.
- `warmup_stable_decay` (WSD, trapezoidal; ModernBERT, Ettin, mmBERT): warmup, a constant stable phase,
  then a decay (linear, cosine or 1-sqrt) to the floor. `decay_start_step` starts the decay at a given
  step, so a stable-phase checkpoint resumed with it decays into a finished model without rerunning the
  stable part, exactly as the same decay would run inside one run.
- `one_cycle` (one-cycle, and the triangle of cramming's budget schedule): up from `start_lr_ratio` to the
  peak at `peak_ratio` of the run, then down to the floor.

Every scheduler restores only its position from a checkpoint (`PositionOnlyLR`): the shape comes from the
current config, so a resume with a longer run or a new `decay_start_step` follows the new shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from bertlab.errors import BertlabError

DECAYS = ("linear", "cosine", "constant")
WSD_DECAYS = ("linear", "cosine", "1-sqrt")
ONE_CYCLE_SHAPES = ("linear", "cosine")


def decay_shape(shape: str, progress: float) -> float:
    """From 1 at progress 0 to 0 at progress 1 (`progress` in [0, 1])."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    return 1.0  # constant


@dataclass
class WarmupThenDecay:
    """Multiplier of the base learning rate at a step (a picklable object, so LambdaLR can save it)."""

    total_steps: int
    warmup_steps: int
    decay: str
    min_lr_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        shape = 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape


@dataclass
class WarmupStableDecay:
    """Trapezoid multiplier: warmup from `start_lr_ratio` to 1, 1 until `decay_start`, then `decay` down to
    `min_lr_ratio` at the end. WSD starts its warmup at 0; a one-cycle is the trapezoid without a stable
    phase (the decay starts at the peak).

    Its attributes are plain numbers and strings: a checkpoint stores them (and loads with weights_only).
    """

    total_steps: int
    warmup_steps: int
    decay_start: int
    decay: str
    min_lr_ratio: float
    start_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.start_lr_ratio + (1.0 - self.start_lr_ratio) * (step + 1) / self.warmup_steps
        if step < self.decay_start:
            return 1.0
        progress = min(1.0, (step - self.decay_start) / max(1, self.total_steps - self.decay_start))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay_shape(self.decay, progress)


class PositionOnlyLR(LambdaLR):
    """LambdaLR whose shape always comes from the current config; a checkpoint restores only the position.

    So a run resumed with a longer training.max_steps decays over the new length instead of the old one,
    and a WSD run resumed with a `decay_start_step` decays from there.
    """

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "lr_lambdas": [None] * len(self.lr_lambdas)})


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise BertlabError(f"unknown {key} {value!r}; choose one of {list(choices)}", key)


def _check_ratio(value: float, key: str, closed: bool = True) -> None:
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise BertlabError(f"must be in [0, 1{']' if closed else ')'}, got {value}", key)


def _warmup(total_steps: int, warmup_ratio: float, warmup_steps: int | None) -> int:
    _check_ratio(warmup_ratio, "warmup_ratio", closed=False)
    if warmup_steps is None:
        return round(warmup_ratio * total_steps)
    if not 0 <= warmup_steps <= total_steps:
        raise BertlabError(
            f"must be in [0, max_steps={total_steps}] or null, got {warmup_steps}", "warmup_steps"
        )
    return warmup_steps


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
    warmup_steps = _warmup(total_steps, warmup_ratio, warmup_steps)
    _check_ratio(min_lr_ratio, "min_lr_ratio")
    return PositionOnlyLR(optimizer, WarmupThenDecay(total_steps, warmup_steps, decay, min_lr_ratio))


def warmup_stable_decay(
    optimizer: Optimizer,
    total_steps: int,
    warmup_ratio: float = 0.0,
    warmup_steps: int | None = None,
    decay_ratio: float = 0.2,
    decay: str = "1-sqrt",
    min_lr_ratio: float = 0.0,
    decay_start_step: int | None = None,
) -> LambdaLR:
    """Warmup, stable, decay: the decay takes the last `decay_ratio` of the run (the stable phase is what
    warmup and decay leave), or runs from `decay_start_step` to the end when that is given.

    `decay_ratio=0` is a pure stable run (warmup, then constant) whose checkpoints can be decayed later:
    resume one with `decay_start_step=<its step>` and `max_steps=<its step + decay steps>`.
    """
    _check_choice(decay, WSD_DECAYS, "decay")
    _check_ratio(decay_ratio, "decay_ratio")
    _check_ratio(min_lr_ratio, "min_lr_ratio")
    warmup_key = "warmup_ratio" if warmup_steps is None else "warmup_steps"
    warmup_steps = _warmup(total_steps, warmup_ratio, warmup_steps)
    if decay_start_step is None:
        decay_start = total_steps - round(decay_ratio * total_steps)
    elif not 0 <= decay_start_step <= total_steps:
        raise BertlabError(
            f"must be in [0, max_steps={total_steps}] or null, got {decay_start_step}", "decay_start_step"
        )
    else:
        decay_start = decay_start_step
    if warmup_steps > decay_start:
        raise BertlabError(
            f"warmup ({warmup_steps} steps) would end after the decay starts (step {decay_start}); lower it "
            f"or give warmup_steps explicitly (a resumed decay recomputes warmup_ratio x the new max_steps)",
            warmup_key,
        )
    return PositionOnlyLR(
        optimizer, WarmupStableDecay(total_steps, warmup_steps, decay_start, decay, min_lr_ratio)
    )


def one_cycle(
    optimizer: Optimizer,
    total_steps: int,
    peak_ratio: float = 0.3,
    start_lr_ratio: float = 0.04,
    shape: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Up to the peak at `peak_ratio` of the run, then down to `min_lr_ratio` of it at the end.

    With `shape=linear`, `start_lr_ratio=0` it is a triangle (cramming's budget schedule at its peak share).
    """
    _check_choice(shape, ONE_CYCLE_SHAPES, "shape")
    _check_ratio(peak_ratio, "peak_ratio", closed=False)
    _check_ratio(start_lr_ratio, "start_lr_ratio")
    _check_ratio(min_lr_ratio, "min_lr_ratio")
    peak_steps = round(peak_ratio * total_steps)
    return PositionOnlyLR(
        optimizer,
        WarmupStableDecay(total_steps, peak_steps, peak_steps, shape, min_lr_ratio, start_lr_ratio),
    )
