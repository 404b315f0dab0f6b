"""Checkpoint files: written atomically, under the names run_folder.py gives them (LAST_CHECKPOINT and
BEST_CHECKPOINT, the names the tool bertlab replaced used, which its users know)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from bertlab.atomic_write import replacing
from bertlab.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT


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
