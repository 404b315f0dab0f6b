"""Stopping cleanly: SIGTERM (cluster preemption), SIGUSR2 (SLURM's warning before the time limit, as
submitit asks for it) and Ctrl-C save the last checkpoint at the next step boundary and end training; the final step saves it too.
A handler that was installed before training (submitit's, which requeues the job on SIGUSR2) runs after
the checkpoint is saved. launch.py then exits with INTERRUPTED_EXIT_STATUS. Both save from on_train_batch_end, the same point
as the periodic checkpoints, so every last checkpoint resumes the same way.

Under DDP every process installs the handler and, after each step, the processes agree whether any of them
was signalled (SLURM signals every task; `kill` may reach only one), so all of them save and stop together:
saving is a collective operation.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)
# Signals whose earlier handler runs once the checkpoint is saved: submitit's SIGUSR2 (time limit) requeues
# the job. Not SIGTERM or SIGINT: Lightning's own SIGTERM handler would kill the other DDP processes.
CHAINED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2",) if hasattr(signal, name))
# The exit status of a run a signal stopped after saving its checkpoint (EX_TEMPFAIL: relaunch to continue).
INTERRUPTED_EXIT_STATUS = 75
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, name)
)


class TrainingInterrupted(Exception):
    """Raised after the interruption checkpoint is written; ends fit() without an extra validation."""

    def __init__(self, step: int, checkpoint: Path, signal_name: str | None = None) -> None:
        by = f" by {signal_name}" if signal_name else ""
        super().__init__(f"stopped{by} at step {step}; checkpoint {checkpoint}")
        self.step = step
        self.signal_name = signal_name


class StepBoundaryCheckpoint(Checkpoint):
    """A Checkpoint callback, so Lightning runs its hooks after ModelCheckpoint's: a stop at a step that
    validates waits for that validation (and the best checkpoint it may give), and the checkpoint saved then
    resumes without repeating or losing it."""

    monitor = None  # not a ModelCheckpoint: it follows no metric

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.requested: int | None = None
        self.saved_step: int | None = None
        self.stop_after_validation = False
        self._previous: dict[int, Any] = {}

    def _request(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = signum
        log.warning(
            "Received %s: saving %s after this step, then stopping", signal.Signals(signum).name, self.path
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._request)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        stop = self.requested is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            if _validation_follows(trainer):
                self.stop_after_validation = True  # every process agreed above: all of them wait
                return
            # Lightning logs a step's metrics after this hook; log them now so the step's row is not lost.
            trainer._logger_connector.update_train_step_metrics()
            self._stop(trainer)
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_after_validation and not trainer.sanity_checking:
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        """Save the last checkpoint, hand the signal to a launcher's handler, end fit()."""
        self._save(trainer)
        trainer.should_stop = True
        log.warning(
            "Stopped at step %d; checkpoint %s. Continue with the same command and "
            "training.resume.is_resume=auto (or true)",
            trainer.global_step,
            self.path,
        )
        signum = self.requested
        signal_name = signal.Signals(signum).name if signum is not None else None
        previous = self._previous.get(signum) if signum in CHAINED_SIGNALS else None
        self._restore_handlers()
        if callable(previous) and type(previous).__module__.split(".")[0] != "lightning":
            # A launcher's own handler, now that the checkpoint is saved: submitit's on SIGUSR2
            # requeues the job (it runs the same command again, which continues from here).
            previous(signum, None)
        raise TrainingInterrupted(trainer.global_step, self.path, signal_name)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved_step != trainer.global_step:  # ended by max_epochs rather than max_steps
            self._save(trainer)
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _validation_follows(trainer: L.Trainer) -> bool:
    """Whether Lightning validates right after the current training batch (asked of its loop)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except (AttributeError, TypeError):  # another Lightning: stop at once, as before
        return False
