"""Training to a budget: wall-clock minutes or tokens instead of a guessed `training.max_steps`.

A budget becomes steps, and the learning-rate schedule is stretched over exactly those steps, so it reaches
its floor at the last one (cramming's "BERT in a day"; the trapezoids of ModernBERT and Ettin):

- tokens: `ceil(tokens / tokens per optimizer step)` steps, known before the first step, so a resume is
  exact to the bit.
- minutes: the steps that fit are estimated from the measured cost of a step (its own time, plus the
  validations it brings every `val_check_interval` steps) and re-estimated before every step, robustly:
  the mean of the last steps, or the median of the latest few when steps have become slower (a machine
  that got busy), and the last step is the one that ends nearest the budget. What follows the last step is
  reserved, measured: its validation and the test pass (each the latest validation's time, scaled by how
  much slower or faster steps run now than then; a process's first validation, slowed by warm-up, bounded
  by a training forward pass per batch), the test call's set-up, the checkpoints written after it and the
  best one read back (the latest checkpoint write's time). The clock counts from the run's first validation or step
  (tokenizer and data preparation are not in it) to the end of the test pass (plots and run.json come
  after it); a resumed run carries the time it already spent (the callback's state is in every
  checkpoint).

Both bounds may be given: the run stops at the first one reached. The current estimate is the Trainer's
`max_steps` (so the last-step validation, checkpoints and the masking-rate schedule follow it), and the
schedule is rebuilt from its factory for `max_steps - 1` whenever the estimate changes.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from bertlab.errors import BertlabError

log = logging.getLogger(__name__)

STOP_TIME = "time budget"
STOP_TOKENS = "token budget"
STEP_WINDOW = 50  # steps whose mean duration is the cost of the next ones
RECENT_STEPS = 9  # the latest steps, whose median says how fast the machine runs now
SAVES_AFTER_LAST_STEP = 2  # model.ckpt at the last step and best-model.ckpt after its validation
LOAD_FACTOR_BOUNDS = (0.25, 4.0)  # how far a validation's measured time is scaled by the current step speed
UNPLANNED = (
    2**40
)  # max_steps of a resumed run until its restored step is known (finite: the schedule is built)
MEASURED_STEPS = 3  # steps measured before the estimate replaces the first guess (or a checkpoint's)


@dataclass(frozen=True)
class Budget:
    """The `training.budget` section as values: at least one bound for the budget to apply."""

    minutes: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.minutes is not None and not self.minutes > 0:
            raise BertlabError(
                f"must be a positive number of minutes or null, got {self.minutes}", "training.budget.minutes"
            )
        if self.tokens is not None and not (isinstance(self.tokens, int) and self.tokens > 0):
            raise BertlabError(
                f"must be a positive number of tokens or null, got {self.tokens}", "training.budget.tokens"
            )

    @property
    def active(self) -> bool:
        return self.minutes is not None or self.tokens is not None


def token_budget_steps(tokens: int, tokens_per_step: int) -> int:
    """The optimizer steps a token budget becomes."""
    return math.ceil(tokens / tokens_per_step)


def retarget_schedule(scheduler: Any, factory: Callable[..., Any], total_steps: int) -> None:
    """Give `scheduler` the shape `factory` builds for `total_steps`, keeping its position.

    The factory runs on a stand-in optimizer with as many parameter groups (building a LambdaLR sets the
    rates of the optimizer it is given); the real groups' rates are then set for the current step.
    """
    groups = scheduler.optimizer.param_groups
    stand_in = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in groups], lr=1.0)
    scheduler.lr_lambdas = factory(stand_in, total_steps=total_steps).lr_lambdas
    step = scheduler.last_epoch
    for group, base_lr, multiplier in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base_lr * multiplier(step)
    scheduler._last_lr = [group["lr"] for group in groups]


class TrainingBudget(L.Callback):
    """Turns a `Budget` into the Trainer's `max_steps` and the schedule's length (see the module docstring).

    `sequences_per_step` is the batch size times accumulation (per process), `block_length` the tokens of a
    sequence; `first_guess` (training.max_steps) is the step count a time budget assumes until it has
    measured a step.
    """

    def __init__(
        self,
        budget: Budget,
        sequences_per_step: int,
        block_length: int,
        val_check_interval: int | None,
        validates: bool,
        first_guess: int,
    ) -> None:
        self.budget = budget
        self.sequences_per_step = sequences_per_step
        self.block_length = block_length
        self.val_check_interval = val_check_interval
        self.validates = validates
        self.first_guess = max(1, first_guess)
        self.token_steps: int | None = None
        self.tokens_per_step = 0
        self.spent_before = 0.0  # seconds of earlier attempts (from the checkpoint)
        self.clock_start: float | None = None
        self.clock_stop: float | None = None  # the end of the test pass (or of fit, without evaluation)
        self.step_seconds: deque[float] = deque(maxlen=STEP_WINDOW)
        self.saved_step_seconds: float | None = None
        self.validation_seconds: float | None = None
        self.validation_step_cost: float | None = None  # the steps' speed when it was measured
        self.validation_batches = 0  # batches of the latest validation
        self.validations_this_attempt = 0  # the first one in a process pays one-off warm-up (kernels, caches)
        self.forward_seconds: deque[float] = deque(maxlen=STEP_WINDOW)  # a step's first forward pass
        self.forward_pending = False
        self.evaluation_call_start: float | None = None
        self.evaluation_overhead = 0.0  # a validate()/test() call beyond its loop: set-up, loaders, teardown
        self.validation_start: float | None = None
        self.validation_in_step = 0.0
        self.last_boundary: float | None = None
        self.first_step_of_attempt = True  # its time holds one-off set-up work: not a step's cost
        self.scheduled_total: int | None = None
        self.stop_reason: str | None = None
        self.stage: str | None = None
        self.shape_kept = False  # the schedule could not be stretched to an estimate (warned once)
        self.trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "TrainingBudget"

    def spent_seconds(self) -> float:
        if self.clock_start is None:
            return self.spent_before
        return self.spent_before + (self.clock_stop or time.perf_counter()) - self.clock_start

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stage, self.trainer = stage, trainer
        if self.clock_start is None:
            self.clock_start = time.perf_counter()
        if stage == "validate":  # the step-0 validation: a call like the test's, measured whole
            self.evaluation_call_start = time.perf_counter()
        self.tokens_per_step = self.sequences_per_step * trainer.world_size * self.block_length
        if self.budget.tokens is not None:
            self.token_steps = token_budget_steps(self.budget.tokens, self.tokens_per_step)
        if stage == "fit":
            trainer.fit_loop.epoch_loop.max_steps = self._steps_for(trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {
            "spent_seconds": self.spent_seconds(),
            "step_seconds": self._step_cost(),
            "validation_seconds": self.validation_seconds,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.stage != "fit":  # the test pass loads the best checkpoint: not a resume
            return
        self.spent_before = float(state_dict["spent_seconds"])
        self.saved_step_seconds = state_dict.get("step_seconds")
        self.validation_seconds = state_dict.get("validation_seconds")
        if self.clock_start is not None:  # restored after setup: the time before the restore is not spent
            self.clock_start = time.perf_counter()
        if self.trainer is not None:  # the step is restored later: on_train_start plans from it
            self.trainer.fit_loop.epoch_loop.max_steps = UNPLANNED

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last_boundary, self.first_step_of_attempt = None, True
        self._plan(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % trainer.accumulate_grad_batches:
            return  # only where an optimizer step begins
        now = time.perf_counter()
        if self.last_boundary is not None and not self.first_step_of_attempt:
            self.step_seconds.append(now - self.last_boundary - self.validation_in_step)
            if self.validation_step_cost is None and self.validation_seconds is not None:
                self.validation_step_cost = self._recent_step_cost()  # the first steps after it
        self.first_step_of_attempt = self.last_boundary is None
        self.last_boundary, self.validation_in_step = now, 0.0
        self.forward_pending = True
        self._plan(trainer, pl_module)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Any) -> None:
        if self.forward_pending and self.last_boundary is not None:  # the step's first micro-batch
            self.forward_seconds.append(time.perf_counter() - self.last_boundary)
        self.forward_pending = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validation_start, self.validation_batches = time.perf_counter(), 0

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.validation_batches += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validation_start is not None:
            seconds = time.perf_counter() - self.validation_start
            self.validation_seconds = seconds
            self.validation_step_cost = self._recent_step_cost()  # None before the first steps: set later
            self.validations_this_attempt += 1
            self.validation_in_step += seconds
            self.validation_start = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step >= trainer.max_steps:
            time_bound = self.token_steps is None or trainer.global_step < self.token_steps
            self.stop_reason = STOP_TIME if self.budget.minutes is not None and time_bound else STOP_TOKENS

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "validate" and self.evaluation_call_start is not None:
            whole = time.perf_counter() - self.evaluation_call_start
            self.evaluation_overhead = max(0.0, whole - (self.validation_seconds or 0.0))
            self.evaluation_call_start = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.validates:  # no test pass follows: the budget ends with training
            self.clock_stop = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock_stop = time.perf_counter()  # what comes after the test (plots, run.json) is not training

    def _recent_step_cost(self) -> float | None:
        """The median of the latest steps: how fast the machine runs now, unmoved by one slow step."""
        if len(self.step_seconds) < RECENT_STEPS:
            return None
        return statistics.median(list(self.step_seconds)[-RECENT_STEPS:])

    def _load_factor(self) -> float:
        """How much slower (above 1) or faster steps run now than when the latest validation was measured:
        an evaluation slows down as much as training does on a machine that got busy."""
        recent, then = self._recent_step_cost(), self.validation_step_cost
        if recent is None or not then:
            return 1.0
        low, high = LOAD_FACTOR_BOUNDS
        return min(high, max(low, recent / then))

    def _validation_cost(self) -> float:
        """Seconds a validation (or the test pass, which reads as much) takes now.

        The latest validation, scaled by the load factor. The first one of a process also paid one-off
        warm-up (kernels compiled on first use, caches), several times a warm one's cost on a busy machine:
        it counts for no more than its batches each as long as a training step's forward pass now (an
        evaluation batch is that forward without the autograd bookkeeping).
        """
        if not self.validates or self.validation_seconds is None:
            return 0.0
        cost = self.validation_seconds * self._load_factor()
        first = self.validations_this_attempt == 1 and self.validation_batches > 0  # else warm, or restored
        if first and len(self.forward_seconds) >= RECENT_STEPS:
            forward = statistics.median(list(self.forward_seconds)[-RECENT_STEPS:])
            cost = min(cost, self.validation_batches * forward)
        return cost

    def _save_seconds(self) -> float:
        """The latest checkpoint write, measured by the Trainer's checkpoint IO (0 before the first)."""
        checkpoint_io = getattr(getattr(self.trainer, "strategy", None), "checkpoint_io", None)
        return getattr(checkpoint_io, "last_save_seconds", None) or 0.0

    def reserve_seconds(self) -> float:
        """What follows the last step, measured: its validation, the test call (its loop as long as a
        validation's, its set-up as the step-0 validate call's), the checkpoints written after the last
        step and the best one read back for the test (about as long as a write)."""
        if not self.validates:
            return SAVES_AFTER_LAST_STEP * self._save_seconds()
        test = self._validation_cost() + self.evaluation_overhead
        return self._validation_cost() + test + (SAVES_AFTER_LAST_STEP + 1) * self._save_seconds()

    def _step_cost(self) -> float | None:
        """Seconds per optimizer step, validations included in proportion.

        The mean of the last STEP_WINDOW steps, unless the median of the latest few is higher: when steps
        become several times slower (another process takes the cores) the estimate follows within a few
        steps instead of lagging behind the whole window.
        """
        if len(self.step_seconds) >= MEASURED_STEPS:
            train = sum(self.step_seconds) / len(self.step_seconds)
            train = max(train, self._recent_step_cost() or 0.0)
        else:
            return self.saved_step_seconds  # None in a fresh run: the first guess stands
        if self.validates and self.val_check_interval and self.validation_seconds is not None:
            train += self._validation_cost() / self.val_check_interval
        return train

    def _steps_for(self, step: int) -> int:
        """The step count the run should end at, seen from `step` (the steps done)."""
        steps = []
        if self.token_steps is not None:
            steps.append(self.token_steps)
        if self.budget.minutes is not None:
            cost = self._step_cost()
            if cost is None:  # enough steps to measure some before the estimate replaces the guess
                steps.append(max(step + 1, self.first_guess, MEASURED_STEPS + 2))
            else:
                left = self.budget.minutes * 60 - self.spent_seconds() - self.reserve_seconds()
                if left <= 0 and step > 0:
                    steps.append(step)  # spent (a resume after the last step): no further step
                else:  # the step count that ends nearest the budget, half a step either side
                    steps.append(step + max(1, round(left / cost)))
        return min(steps)

    def _plan(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        steps = self._steps_for(trainer.global_step)
        if self.budget.minutes is not None and trainer.world_size > 1:
            steps = trainer.strategy.broadcast(steps, src=0)  # clocks differ: every process ends together
        trainer.fit_loop.epoch_loop.max_steps = steps
        total = max(1, steps - 1)  # the schedule's floor falls on the last step
        if total != self.scheduled_total and trainer.lr_scheduler_configs:
            factory = getattr(pl_module, "scheduler_factory", None)
            if factory is not None:
                try:
                    retarget_schedule(trainer.lr_scheduler_configs[0].scheduler, factory, total)
                except BertlabError as error:  # a fixed warmup_steps/decay_start_step past the estimate
                    if self.budget.minutes is None:
                        raise error.in_section("training.scheduler") from None
                    if not self.shape_kept:
                        log.warning(
                            "The schedule cannot be stretched over %d steps (%s); it keeps its last shape",
                            total,
                            error,
                        )
                    self.shape_kept = True
                    return
            self.scheduled_total = total

    def summary(self, trainer: L.Trainer) -> dict[str, Any]:
        """What run.json records: the budget, the steps it became, the time and tokens spent, why it ended."""
        return {
            "minutes": self.budget.minutes,
            "tokens": self.budget.tokens,
            "tokens_per_step": self.tokens_per_step,
            "steps": trainer.global_step,
            "tokens_seen": trainer.global_step * self.tokens_per_step,
            "minutes_spent": round(self.spent_seconds() / 60, 4),
            "stop_reason": self.stop_reason,
        }
