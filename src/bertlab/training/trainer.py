"""The Lightning Trainer of a run: devices, precision, validation cadence, checkpoints into the run folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

from bertlab.run_folder import CHECKPOINTS_DIR
from bertlab.training.checkpointing import AtomicCheckpointIO, KeepCheckpointsAtSteps, checkpoint_callbacks
from bertlab.training.precision import precision_plugin


class ValidateAtLastStep(L.Callback):
    """Validates after the last optimizer step too, so every run ends with a validation row and a best score.

    Lightning validates every `val_check_interval` batches only; asking the loop to stop at the last step
    makes it validate there (and lets checkpointing see that score).
    """

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True


@dataclass(frozen=True)
class TrainerSettings:
    """The Trainer settings that are `training.*` config keys of the same name (picked by field name)."""

    max_steps: int
    max_epochs: int | None
    devices: int | str | list[int]
    num_nodes: int
    strategy: str
    accumulate_grad_batches: int
    gradient_clip_val: float | None
    val_check_interval: int | None  # optimizer steps between validations; None: every epoch end
    limit_val_batches: int | float  # also bounds the end-of-run test pass
    deterministic: bool

    @classmethod
    def pick(cls, section: Mapping[str, Any]) -> TrainerSettings:
        return cls(**{field.name: section[field.name] for field in fields(cls)})


def create_trainer(
    run_dir: Path,
    settings: TrainerSettings,
    *,
    loggers: list[Logger],
    accelerator: str,
    precision: str,
    validate: bool,
    log_every_n_steps: int,
    checkpoint_every_n_steps: int,
    monitor: str | None,
    monitor_mode: str,
    progress_bar: bool,
    keep_steps: Sequence[int] = (),
) -> L.Trainer:
    """`val_check_interval` counts optimizer steps; Lightning counts batches, hence the accumulation factor.

    `validate` false (logging.log_eval=false) switches validation and the end-of-run test off; `keep_steps`
    are the steps whose checkpoints are kept (checkpoints/step-<N>.ckpt).
    """
    accumulate_grad_batches = settings.accumulate_grad_batches
    val_check_interval = settings.val_check_interval
    limit_val_batches = settings.limit_val_batches
    callbacks = [
        *checkpoint_callbacks(
            run_dir / CHECKPOINTS_DIR, checkpoint_every_n_steps, monitor if validate else None, monitor_mode
        ),
    ]
    if keep_steps:
        callbacks.append(KeepCheckpointsAtSteps(run_dir, list(keep_steps)))
    if validate:
        callbacks.append(ValidateAtLastStep())
    autocast = precision_plugin(precision, accelerator, settings.strategy)
    return L.Trainer(
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *([autocast] if autocast else [])],
        max_steps=settings.max_steps,
        max_epochs=settings.max_epochs if settings.max_epochs is not None else -1,
        accelerator=accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=settings.strategy,
        use_distributed_sampler=False,  # the datamodules shard their own epoch order (data/sampler.py)
        precision=None if autocast else precision,  # the plugin carries it
        accumulate_grad_batches=accumulate_grad_batches,
        gradient_clip_val=settings.gradient_clip_val,
        # Lightning counts batches; None validates at every epoch end.
        val_check_interval=None
        if val_check_interval is None
        else val_check_interval * accumulate_grad_batches,
        check_val_every_n_epoch=1 if val_check_interval is None else None,
        limit_val_batches=limit_val_batches if validate else 0,
        limit_test_batches=limit_val_batches,  # a prepared corpus's test split can be millions of blocks
        num_sanity_val_steps=0,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        deterministic=settings.deterministic,
        benchmark=False,
        inference_mode=False,  # no_grad instead: metric states then survive a validate() before fit()
    )
