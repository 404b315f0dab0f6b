"""The steps every run shares, from a composed config to a finished fit: instantiate sections, check,
resolve devices and the resume source, assemble loggers and the Trainer, fit and test.

This module and the task flows (pretraining.py, finetuning.py) are the only library code that reads the
config; what they build takes plain arguments.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bertlab.errors import BertlabError
from bertlab.reporting.plots import write_run_plots
from bertlab.run_folder import claim_run_folder, resume_source
from bertlab.training.checkpointing import BEST_NAME, LAST_NAME
from bertlab.training.distributed import (
    device_count,
    is_main_process,
    refuse_relaunch_in_sweep,
    wait_for_file,
)
from bertlab.training.interruption import StepBoundaryCheckpoint, TrainingInterrupted
from bertlab.training.loggers import finish_wandb, wandb_logger
from bertlab.training.metric_files import RunFolderCSVLogger
from bertlab.training.precision import resolve_accelerator, resolve_precision
from bertlab.training.resume import (
    RNGStateCallback,
    batches_into_epoch,
    check_resume_config,
    check_resume_world,
    compare_state,
    load_checkpoint,
)
from bertlab.training.trainer import build_trainer

log = logging.getLogger(__name__)
RUN_INFO = "run.json"
TOKENIZER_FILE = "tokenizer.json"


def build(cfg: DictConfig, section: str, **runtime: Any) -> Any:
    """`instantiate` one config section; errors name the section's keys (`architecture.num_heads`)."""
    return build_node(OmegaConf.select(cfg, section), section, **runtime)


def build_node(node: DictConfig, section: str, **runtime: Any) -> Any:
    """`instantiate` a node that stands for config section `section` (it may have been derived from it)."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as error:
        if isinstance(error.__cause__, BertlabError):
            nested = str(error).rpartition("\nfull_key: ")[2] if "\nfull_key: " in str(error) else ""
            if nested == section or nested.startswith(f"{section}."):  # a node selected from the tree
                nested = nested[len(section) :].lstrip(".")
            raise error.__cause__.in_section(f"{section}.{nested}" if nested else section) from None
        raise BertlabError(str(error), key=section) from error
    except BertlabError as error:
        raise error.in_section(section) from None


def progress_bar_enabled(setting: str | bool) -> bool:
    """`auto`: only on a terminal (not in CI logs); the schema may hand a bool over as 'True'/'False'."""
    setting = str(setting).lower()
    if setting == "auto":
        return sys.stderr.isatty()
    return setting == "true"


@dataclass
class RunSetup:
    """What a run resolved before building its model: devices, optimizer factories, where it resumes from."""

    accelerator: str
    precision: str
    optimizer: Any
    scheduler: Any
    checkpoint_path: Path | None
    checkpoint: dict[str, Any] | None
    sweep: str | None = None


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses what cannot work (run_folder.py)."""
    experiment, resume = cfg.experiment, cfg.training.resume
    source_dir, checkpoint = resume_source(experiment, resume)
    if not is_main_process():  # other DDP processes start after the main one has claimed the folder
        return checkpoint if checkpoint is not None and checkpoint.is_file() else None
    return claim_run_folder(run_dir, source_dir, checkpoint)


def setup_run(cfg: DictConfig, run_dir: Path, sweep: str | None = None) -> RunSetup:
    """Checks that need no data: resume source, optimizer and schedule, devices and precision.

    `sweep` names the multirun sweep this run is a job of (None for a single run).
    """
    training = cfg.training
    if sweep is not None:
        refuse_relaunch_in_sweep(
            training.strategy, training.devices, training.num_nodes, training.accelerator
        )
    checkpoint_path = resume_checkpoint(cfg, run_dir)
    optimizer = build(cfg, "training.optimizer")
    scheduler = build(cfg, "training.scheduler")
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        scheduler(probe, total_steps=training.max_steps if training.max_steps > 0 else 10**6)
    except BertlabError as error:
        raise error.in_section("training.scheduler") from None
    try:
        accelerator = resolve_accelerator(training.accelerator)
        precision = resolve_precision(training.precision, accelerator)
    except BertlabError as error:
        raise error.in_section("training") from None
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    if checkpoint is not None:
        saved = checkpoint.get("bertlab", {}).get("config")
        if saved is None:
            raise BertlabError(
                f"checkpoint {str(checkpoint_path)!r} holds no bertlab config; it was not written by bertlab",
                "training.resume.checkpoint_path",
            )
        check_resume_world(
            checkpoint.get("bertlab", {}).get("world_size", 1),
            device_count(training.devices, accelerator) * training.num_nodes,
            weights_only=bool(training.resume.load_only_model_state),
            allow=bool(training.resume.allow_config_changes),
        )
        check_resume_config(
            saved,
            OmegaConf.to_container(cfg, resolve=True),
            weights_only=bool(training.resume.load_only_model_state),
            allow=bool(training.resume.allow_config_changes),
            strict=bool(training.resume.strict),
        )
    log.info("Run folder %s; accelerator %s, precision %s", run_dir, accelerator, precision)
    return RunSetup(
        accelerator=accelerator,
        precision=precision,
        optimizer=optimizer,
        scheduler=scheduler,
        checkpoint_path=checkpoint_path,
        checkpoint=checkpoint,
        sweep=sweep,
    )


def apply_resume(
    cfg: DictConfig, setup: RunSetup, model: L.LightningModule, datamodule: Any
) -> tuple[str | None, int]:
    """Loads weights (weights-only resume) or prepares a full resume; returns (ckpt_path for fit, step)."""
    if setup.checkpoint is None:
        return None, 0
    resume = cfg.training.resume
    compare_state(model, setup.checkpoint, resume.strict, setup.checkpoint_path)
    if resume.load_only_model_state:
        model.load_state_dict(setup.checkpoint["state_dict"], strict=resume.strict)
        log.info(
            "Loaded weights only from %s: fresh optimizer, schedule and step count", setup.checkpoint_path
        )
        setup.checkpoint = None
        return None, 0
    model.strict_loading = resume.strict
    step = int(setup.checkpoint["global_step"])
    log.info("Resuming from %s at step %d", setup.checkpoint_path, step)
    setup.checkpoint = None
    return str(setup.checkpoint_path), step


def maybe_compile(model: L.LightningModule, enabled: bool) -> None:
    """torch.compile the model's modules in place (state_dict keys stay the same: no `_orig_mod.`)."""
    if enabled:
        for module in (model.backbone, model.head):
            module.compile(dynamic=False)


def make_loggers(
    cfg: DictConfig,
    run_dir: Path,
    train_columns: list[str],
    eval_columns: list[str],
    setup: RunSetup,
    step: int,
) -> list:
    csv_logger = RunFolderCSVLogger(
        run_dir,
        train_columns,
        eval_columns,
        write_train=cfg.logging.csv.train,
        write_eval=cfg.logging.csv.eval,
        train_every_n_steps=cfg.logging.log_every_n_steps,
    )
    if (
        is_main_process()
        and setup.checkpoint_path is not None
        and setup.checkpoint_path.parent.parent.resolve() == run_dir.resolve()
    ):
        csv_logger.truncate_after(step)
    loggers: list = [csv_logger]
    if cfg.logging.use_wandb and is_main_process():
        wandb_cfg = cfg.logging.wandb
        loggers.append(
            wandb_logger(
                run_dir,
                name=run_dir.name if setup.sweep else cfg.experiment.name,  # sweep jobs: job<N>_...
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                mode=wandb_cfg.mode,
                group=wandb_cfg.group or setup.sweep,
                tags=list(wandb_cfg.tags),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def make_trainer(
    cfg: DictConfig, run_dir: Path, setup: RunSetup, loggers: list, datamodule: Any, resume_step: int
) -> tuple[L.Trainer, StepBoundaryCheckpoint]:
    """The Trainer; it also places the training sampler at `resume_step` within its epoch."""
    training = cfg.training
    trainer = build_trainer(
        run_dir,
        loggers=loggers,
        max_steps=training.max_steps,
        max_epochs=training.max_epochs,
        accelerator=setup.accelerator,
        devices=training.devices,
        num_nodes=training.num_nodes,
        strategy=training.strategy,
        precision=setup.precision,
        accumulate_grad_batches=training.accumulate_grad_batches,
        gradient_clip_val=training.gradient_clip_val,
        val_check_interval=training.val_check_interval,
        limit_val_batches=training.limit_val_batches,
        validate=cfg.logging.log_eval,
        log_every_n_steps=cfg.logging.log_every_n_steps,
        checkpoint_every_n_steps=training.checkpoint.every_n_steps,
        monitor=training.checkpoint.monitor,
        monitor_mode=training.checkpoint.mode,
        progress_bar=progress_bar_enabled(cfg.logging.progress_bar),
        deterministic=training.deterministic,
    )
    stopper = StepBoundaryCheckpoint(run_dir / "checkpoints" / f"{LAST_NAME}.ckpt")
    trainer.callbacks.extend([RNGStateCallback(), stopper])
    batches_per_epoch = datamodule.batches_per_epoch(trainer.world_size)
    if batches_per_epoch < 1:
        raise BertlabError(
            f"the training split has {len(datamodule.datasets['train'])} examples, fewer than one batch of "
            f"{training.batch_size} for each of {trainer.world_size} processes; lower training.batch_size "
            f"or training.devices, or add data",
            "training.batch_size",
        )
    datamodule.skip_train_batches = batches_into_epoch(
        resume_step, training.accumulate_grad_batches, batches_per_epoch
    )
    return trainer, stopper


def fit_and_test(
    cfg: DictConfig,
    run_dir: Path,
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: Any,
    fit_checkpoint: str | None,
    sweep: str | None = None,
) -> tuple[float | None, bool]:
    """Baseline validation, fit, then the test split with the best checkpoint.

    Returns (best monitored value, finished); finished is False when a signal interrupted training.
    """
    try:
        if cfg.logging.log_eval and fit_checkpoint is None:
            trainer.validate(model, datamodule=datamodule, verbose=False)  # the step-0 baseline row
        # The training sampler itself skips to the position inside the epoch (see training/resume.py), so
        # Lightning's warning that the loader cannot resume mid-epoch does not apply.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        # Evaluation metrics are torchmetrics objects, which synchronise across DDP processes themselves.
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('.*sync_dist=True")
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=fit_checkpoint, weights_only=True)
        except TrainingInterrupted as stop:
            log.warning(
                "Training interrupted at step %d; resume with training.resume.is_resume=true", stop.step
            )
            if sweep is not None:
                raise  # the sweep records the job as interrupted instead of as a result
            return None, False
        best = run_dir / "checkpoints" / f"{BEST_NAME}.ckpt"
        if not best.exists():  # no validation ran: the last weights are the best known
            trainer.save_checkpoint(best, weights_only=False)
        best_score = next((c.best_model_score for c in trainer.checkpoint_callbacks if c.monitor), None)
        if cfg.logging.log_eval:
            trainer.test(model, datamodule=datamodule, ckpt_path=str(best), weights_only=True)
        return (float(best_score) if best_score is not None else None), True
    finally:
        write_run_plots(run_dir)  # also after an interruption: the curves so far
        if cfg.logging.use_wandb:
            finish_wandb()


def run_tokenizer(tokenizer: Any, run_dir: Path, source_dir: Path | None, fit: Callable[[Any], None]) -> Any:
    """The run's tokenizer, saved into its folder as tokenizer.json.

    The main process takes the one of `source_dir` (the run it resumes or finetunes from) or fits it with
    `fit`; processes started beside it load the main process's file, because `tokenizers` trainers are not
    deterministic across processes and their own fit could give another vocabulary.
    """
    if not is_main_process() and source_dir is None:  # the main process trains it (on a bounded sample)
        source_dir = wait_for_file(run_dir / TOKENIZER_FILE, timeout_s=None, what="its tokenizer").parent
    if source_dir is not None:
        tokenizer = type(tokenizer).from_file(
            source_dir / TOKENIZER_FILE, tokenizer.max_length, tokenizer.truncation
        )
    else:
        fit(tokenizer)
    if is_main_process():
        tokenizer.save(run_dir / TOKENIZER_FILE)
    return tokenizer


def write_run_info(run_dir: Path, trainer: L.Trainer, cfg: DictConfig, info: dict[str, Any]) -> None:
    """run.json: what `auto` settings resolved to, and where the data and the start came from."""
    if not is_main_process():
        return
    training = cfg.training
    info = {
        **info,
        "world_size": trainer.world_size,
        # training.batch_size is per process; an optimizer step sees this many sequences:
        "global_batch_size": training.batch_size * trainer.world_size * training.accumulate_grad_batches,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "command": sys.argv,
    }
    (run_dir / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
