"""Checkpoint files: written atomically, under the names run_folder.py gives them (LAST_CHECKPOINT and
BEST_CHECKPOINT, the names the tool bertlab replaced used, which its users know; and the checkpoints kept
at chosen steps, KEPT_CHECKPOINT, which nothing overwrites)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bertlab.atomic_write import replacing
from bertlab.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, kept_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes to a temporary file, syncs it, then renames it over the target.

    A crash at any moment leaves either the previous complete checkpoint or the new complete one. The time
    the latest write took is kept (`last_save_seconds`): a time budget reserves it for the checkpoints that
    follow the last step (training/budget.py).
    """

    last_save_seconds: float | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        started = time.perf_counter()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path, fsync=True) as handle:
            torch.save(checkpoint, handle)
        self.last_save_seconds = time.perf_counter() - started


class KeepCheckpointsAtSteps(L.Callback):
    """Keeps a checkpoint at each of `steps` (`checkpoints/step-<N>.ckpt`), so that downstream quality can be
    measured along a run (a suite takes them as starts). model.ckpt moves on; these stay.

    Saved at the step boundary like model.ckpt; a file that exists already (a resumed run passing the step
    again) is left as it is.
    """

    def __init__(self, run_dir: Path, steps: list[int]) -> None:
        self.run_dir = Path(run_dir)
        self.steps = frozenset(int(step) for step in steps)
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        step = trainer.global_step
        if step == self._last_step or step not in self.steps:
            return  # the batches of one step under gradient accumulation see the same global step
        self._last_step = step
        path = self.run_dir / kept_checkpoint(step)
        if not trainer.strategy.broadcast(path.is_file()):  # the main process's answer: all save or none
            trainer.save_checkpoint(path)  # every process calls it; the strategy writes once


def checkpoint_callbacks(
    directory: Path, every_n_steps: int, monitor: str | None, mode: str
) -> list[ModelCheckpoint]:
    """The last checkpoint every `every_n_steps` steps, and the best one by `monitor` after validations."""
    callbacks = [
        ModelCheckpoint(
            dirpath=directory,
            filename=LAST_CHECKPOINT.stem,
            every_n_train_steps=every_n_steps,
            save_top_k=1,
            enable_version_counter=False,
        )
    ]
    if monitor:
        callbacks.append(
            ModelCheckpoint(
                dirpath=directory,
                filename=BEST_CHECKPOINT.stem,
                monitor=monitor,
                mode=mode,
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    return callbacks
