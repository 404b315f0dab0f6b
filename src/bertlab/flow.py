"""The skeleton every training run follows, from a composed config to a finished run folder.

    kind.resolve()               read and check every input (nothing written): a frozen value of what the
                                 run learned from them (its recorded config, learning rate, tokenizer, data,
                                 architecture, pretrained start)
    plan_run(...)                claim the run folder and decide the resume once (training/resume.py),
                                 optimizer factories at the resolved rate, devices, precision: a RunPlan
    kind.build(inputs, plan)     tokenizer, data and model: what is different about the kind of run
    make_trainer, fit_and_test   restore, loggers, Trainer, run info, baseline validation, fit, test
    kind.after_test(...)         outputs of a finished run (finetuning: results, predictions)

pretraining.py and finetuning.py are the two `RunKind`s. This module and the run kinds are the only library
code that reads the composed config; they hand plain values to everything they build (training/, data/,
model/, reporting/). Config sections are instantiated through config/instantiate.py.
"""

from __future__ import annotations

import logging
import math
import platform
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import torch
from omegaconf import DictConfig

from bertlab.config.instantiate import instantiate_section, plain_config
from bertlab.config.schema import resume_may_change
from bertlab.data.loader_workers import resolve_num_workers
from bertlab.errors import BertlabError
from bertlab.reporting.plots import write_run_plots
from bertlab.run_folder import (
    BEST_CHECKPOINT,
    COMPLETED,
    INTERRUPTED,
    LAST_CHECKPOINT,
    RUN_INFO_FILE,
    RUNNING,
    TOKENIZER_FILE,
    check_run_name,
    hold_run_folder,
    release_run_folder,
    write_json,
    write_run_status,
)
from bertlab.training.budget import Budget, TrainingBudget, token_budget_steps
from bertlab.training.cpu_threads import (
    apply_cpu_threads,
    check_cpu_threads,
    warn_if_resumed_at_other_count,
)
from bertlab.training.distributed import (
    device_count,
    is_main_process,
    refuse_relaunch_in_sweep,
    wait_for_file,
)
from bertlab.training.finetuning_lr import AUTO
from bertlab.training.interruption import StepBoundaryCheckpoint, TrainingInterrupted
from bertlab.training.loggers import finish_wandb, wandb_logger, wandb_run_info
from bertlab.training.metric_files import RunFolderCSVLogger
from bertlab.training.mfu import resolve_peak_flops
from bertlab.training.precision import resolve_accelerator, resolve_precision
from bertlab.training.resume import ResumePlan, ResumeRequest, RNGStateCallback, plan_resume, restore_model
from bertlab.training.trainer import TrainerSettings, create_trainer

log = logging.getLogger(__name__)

# Warnings that do not apply to bertlab's runs, silenced for the fit only (see fit_and_test).
IRRELEVANT_WARNINGS = (
    # The training sampler itself skips to the position inside the epoch (training/resume.py), so
    # Lightning's warning that the loader cannot resume mid-epoch does not apply.
    "You're resuming from a checkpoint that ended before the epoch",
    # Evaluation metrics are torchmetrics objects, which synchronise across DDP processes themselves.
    r"It is recommended to use `self.log\('.*sync_dist=True",
)


MONITOR_MODES = ("min", "max")
PROGRESS_BAR = ("auto", "true", "false")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def _positive(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if value is None or value < (0 if allow_zero else 1):
        raise BertlabError(
            f"must be a {'non-negative' if allow_zero else 'positive'} integer, got {value}", key
        )


def check_run_config(cfg: DictConfig) -> None:
    """Checks Hydra cannot do, shared by every kind of training run: value ranges and relations between
    sections, each naming the key to fix."""
    check_run_name(cfg.experiment.name)
    if cfg.training.resume.resume_pretraining_name is not None:
        check_run_name(cfg.training.resume.resume_pretraining_name, "training.resume.resume_pretraining_name")
    if cfg.training.max_steps != -1:
        _positive(cfg, "training.max_steps")
    for key in (
        "training.batch_size",
        "training.accumulate_grad_batches",
        "training.devices",
        "training.checkpoint.every_n_steps",
        "logging.log_every_n_steps",
    ):
        if key == "training.devices" and not isinstance(cfg.training.devices, int):
            continue
        _positive(cfg, key)
    try:
        resolve_num_workers(cfg.training.num_workers, "cpu")  # validates auto | a non-negative int
    except BertlabError as error:
        raise error.in_section("training") from None
    if cfg.training.val_check_interval is not None:
        _positive(cfg, "training.val_check_interval")
    check_cpu_threads(cfg.training.get("cpu_threads"))
    kept = [step for step in cfg.training.checkpoint.get("keep_steps") or [] if step < 1]
    if kept:
        raise BertlabError(
            f"must list positive optimizer steps, got {kept[0]}", "training.checkpoint.keep_steps"
        )
    if cfg.training.max_epochs is not None:
        _positive(cfg, "training.max_epochs")
    if cfg.training.get("min_steps") is not None:
        _positive(cfg, "training.min_steps")
    clip = cfg.training.gradient_clip_val
    if clip is not None and clip <= 0:
        raise BertlabError(
            f"must be positive or null (no clipping), got {clip}", "training.gradient_clip_val"
        )
    if cfg.training.checkpoint.mode not in MONITOR_MODES:
        raise BertlabError(
            f"must be one of {list(MONITOR_MODES)}, got {cfg.training.checkpoint.mode!r}",
            "training.checkpoint.mode",
        )
    if str(cfg.logging.progress_bar).lower() not in PROGRESS_BAR:
        raise BertlabError(
            f"must be auto, true or false, got {cfg.logging.progress_bar!r}", "logging.progress_bar"
        )
    if cfg.logging.wandb.mode not in WANDB_MODES:
        raise BertlabError(
            f"must be one of {list(WANDB_MODES)}, got {cfg.logging.wandb.mode!r}", "logging.wandb.mode"
        )
    if not isinstance(cfg.training.scheduler, DictConfig):
        raise BertlabError(
            f"got {cfg.training.scheduler!r}; a schedule is a config group, chosen with "
            f"training/scheduler=<name> (warmup_then_decay, wsd, one_cycle, triangle)",
            "training.scheduler",
        )
    lr = cfg.training.optimizer.get("lr")
    if lr != AUTO and lr is not None and not (isinstance(lr, int | float) and lr > 0):
        raise BertlabError(
            f"must be positive or auto (training/pretraining_lr.py, training/finetuning_lr.py), got {lr}",
            "training.optimizer.lr",
        )
    resume = cfg.training.resume
    if resume.resume_pretraining_name is not None and not resume.is_resume:
        raise BertlabError(
            "is set but training.resume.is_resume is false; add training.resume.is_resume=true to resume from it",
            "training.resume.resume_pretraining_name",
        )


LOWER_IS_BETTER = ("loss", "perplexity", "rmse", "mae")  # validation metrics whose best is their lowest


def check_run_kind(cfg: DictConfig, kind: str, runs: str, monitors: tuple[str, ...]) -> None:
    """The common checks, the experiment kind and the metrics a kind of run can pick its best checkpoint by."""
    check_run_config(cfg)
    if cfg.experiment.kind != kind:
        raise BertlabError(
            f"must be {kind!r} for {runs} runs, got {cfg.experiment.kind!r}", "experiment.kind"
        )
    monitor = cfg.training.checkpoint.monitor
    if monitor not in monitors:
        raise BertlabError(f"must be one of {list(monitors)}, got {monitor!r}", "training.checkpoint.monitor")
    better = "min" if monitor.removeprefix("val/") in LOWER_IS_BETTER else "max"
    if cfg.training.checkpoint.mode != better:
        raise BertlabError(
            f"is {cfg.training.checkpoint.mode!r} but {monitor} is better when "
            f"{'lower' if better == 'min' else 'higher'}; set training.checkpoint.mode={better}",
            "training.checkpoint.mode",
        )


@dataclass(frozen=True)
class RunPlan:
    """What a run resolved before building anything; read-only afterwards."""

    run_dir: Path
    accelerator: str
    precision: str
    optimizer: Callable[..., torch.optim.Optimizer]  # factories: parameters and steps are bound later
    scheduler: Callable[..., Any]
    resume: ResumePlan
    sweep: str | None = None  # the multirun sweep this run is a job of (groups its jobs in W&B)
    peak_flops: float | None = None  # the device's peak at this precision, for run kinds that report MFU


class ResolvedInputs(Protocol):
    """What every run kind's `resolve` returns (a frozen dataclass), besides its own fields."""

    config: dict[str, Any]  # the run's config as it records it (checkpoints, resume check, W&B)
    lr: float  # the optimizer's learning rate, resolved (a finetune's `auto`)


@dataclass
class BuiltRun:
    """What a run kind built for the shared tail: the model, its data, what it logs and records."""

    model: L.LightningModule
    datamodule: Any
    train_columns: list[str]
    eval_columns: list[str]
    info: dict[str, Any]  # kind-specific entries of the run-info file
    callbacks: list[L.Callback] = field(default_factory=list)


class RunKind(Protocol):
    """What is different about a kind of training run (experiment.kind); `run_training` does the rest."""

    reports_mfu: bool  # plan_run resolves the device's peak FLOP/s (training.peak_tflops)
    default_epochs: int | None  # the epochs when training.max_epochs and max_steps are unset (None: no bound)

    def resolve(self) -> ResolvedInputs: ...

    def build(self, inputs: Any, plan: RunPlan) -> BuiltRun: ...

    def after_test(self, inputs: Any, trainer: L.Trainer, built: BuiltRun) -> None: ...


def run_training(cfg: DictConfig, run_dir: Path, sweep: str | None, kind: RunKind) -> float | None:
    """Run `kind` per `cfg` into `run_dir`; returns the best monitored validation value (for sweepers)."""
    inputs = kind.resolve()
    if is_main_process():
        hold_run_folder(run_dir)  # one launch per run folder (launch.py's guard holds it already)
    threads_before = torch.get_num_threads()
    try:
        plan = plan_run(cfg, run_dir, inputs, sweep, kind.reports_mfu)
        if plan.resume.completed:
            log.info("Run %s already completed (%s); nothing to do", run_dir, RUN_INFO_FILE)
            return None
        threads = apply_cpu_threads(cfg.training.get("cpu_threads"))
        if plan.resume.fit_checkpoint and plan.resume.source_dir is not None:
            warn_if_resumed_at_other_count(plan.resume.source_dir / RUN_INFO_FILE, threads)
        L.seed_everything(cfg.experiment.seed, workers=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        built = kind.build(inputs, plan)
        trainer = make_trainer(cfg, plan, built, inputs.config, kind.default_epochs)
        write_run_info(plan, trainer, cfg.training, built.info)
        try:
            best = fit_and_test(
                trainer, built, plan, validate=cfg.logging.log_eval, use_wandb=cfg.logging.use_wandb
            )
        except (TrainingInterrupted, SystemExit, KeyboardInterrupt):  # SystemExit: submitit's requeue
            if is_main_process():
                write_run_status(run_dir, INTERRUPTED, **budget_entries(trainer, "interrupted"))
            raise
        if cfg.logging.log_eval and trainer.is_global_zero:
            kind.after_test(inputs, trainer, built)
        if is_main_process():
            write_run_status(run_dir, COMPLETED, **budget_entries(trainer))
        return best
    finally:
        apply_cpu_threads(threads_before)
        if is_main_process():
            release_run_folder(run_dir)


def plan_run(
    cfg: DictConfig,
    run_dir: Path,
    inputs: ResolvedInputs,
    sweep: str | None = None,
    peak_flops: bool = False,
) -> RunPlan:
    """Checks that need no data: run folder and resume, optimizer and schedule, devices, precision."""
    training, experiment = cfg.training, cfg.experiment
    if sweep is not None:
        refuse_relaunch_in_sweep(
            training.strategy, training.devices, training.num_nodes, training.accelerator
        )
    optimizer = instantiate_section(cfg, "training.optimizer", lr=inputs.lr)
    scheduler = instantiate_section(cfg, "training.scheduler")
    try:
        accelerator = resolve_accelerator(training.accelerator)
        precision = resolve_precision(training.precision, accelerator)
        peak = resolve_peak_flops(training.peak_tflops, accelerator, precision) if peak_flops else None
    except BertlabError as error:
        raise error.in_section("training") from None
    world_size = device_count(training.devices, accelerator) * training.num_nodes
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        scheduler(probe, total_steps=scheduled_steps(cfg, world_size))
    except BertlabError as error:
        raise error.in_section("training.scheduler") from None
    resume = plan_resume(
        run_dir,
        Path(experiment.output_dir) / experiment.kind,
        experiment.name,
        resume_request(cfg),
        run_config=inputs.config,
        may_change=resume_may_change(),
        world_size=world_size,
        accumulate_grad_batches=training.accumulate_grad_batches,
        main_process=is_main_process(),
    )
    log.info("Run folder %s; accelerator %s, precision %s", run_dir, accelerator, precision)
    return RunPlan(run_dir, accelerator, precision, optimizer, scheduler, resume, sweep, peak)


def scheduled_steps(cfg: DictConfig, world_size: int) -> int:
    """The schedule's length as far as it is known before training (checked then): a token budget's steps
    (its floor on the last one), else training.max_steps, else a long run."""
    training = cfg.training
    tokens = training.budget.tokens if "budget" in training else None
    if tokens is not None:
        tokens_per_step = training.batch_size * training.accumulate_grad_batches * world_size
        return max(1, token_budget_steps(tokens, tokens_per_step * cfg.tokenizer.max_length) - 1)
    return training.max_steps if training.max_steps > 0 else 10**6


def training_budget(cfg: DictConfig) -> TrainingBudget | None:
    """The callback that turns `training.budget` (pretraining) into steps; None without a budget."""
    training = cfg.training
    if "budget" not in training:
        return None
    budget = Budget(**plain_config(training.budget))
    if not budget.active:
        return None
    return TrainingBudget(
        budget,
        sequences_per_step=training.batch_size * training.accumulate_grad_batches,
        block_length=cfg.tokenizer.max_length,
        val_check_interval=training.val_check_interval,
        validates=cfg.logging.log_eval,
        first_guess=training.max_steps,
    )


def budget_entries(trainer: L.Trainer, stop_reason: str | None = None) -> dict[str, Any]:
    """run.json's `budget` entry of a budgeted run: what it asked, the steps it became, why it stopped."""
    budget = next((c for c in trainer.callbacks if isinstance(c, TrainingBudget)), None)
    if budget is None:
        return {}
    summary = budget.summary(trainer)
    if stop_reason is not None:
        summary["stop_reason"] = stop_reason
    return {"budget": summary}


def resume_request(cfg: DictConfig) -> ResumeRequest:
    return ResumeRequest(**plain_config(cfg.training.resume))


def resumes(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether this run continues from a checkpoint (then it needs no initial weights)."""
    experiment = cfg.experiment
    return resume_request(cfg).resumes(
        run_dir, Path(experiment.output_dir) / experiment.kind, experiment.name
    )


def configured_lr(optimizer: DictConfig) -> float:
    """The configured learning rate: every optimizer factory is bound to it (flow.plan_run)."""
    lr = optimizer.get("lr")
    if not isinstance(lr, int | float):
        raise BertlabError(f"must be a positive number, got {lr!r}", "training.optimizer.lr")
    return float(lr)


def run_tokenizer(
    tokenizer: Any,
    run_dir: Path,
    source_dir: Path | None,
    fit: Callable[[Any], None],
    source_key: str = "experiment.name",
) -> Any:
    """The run's tokenizer, saved into its folder.

    The main process takes the one of `source_dir` (the run it resumes or finetunes from) or fits it with
    `fit`; processes started beside it load the main process's file, because `tokenizers` trainers are not
    deterministic across processes and their own fit could give another vocabulary. `source_key` is the
    setting that names `source_dir`, for the error a damaged tokenizer file there gives.
    """
    if not is_main_process() and source_dir is None:  # the main process trains it (on a bounded sample)
        source_dir = wait_for_file(run_dir / TOKENIZER_FILE, timeout_s=None, what="its tokenizer").parent
    if source_dir is not None:
        tokenizer = type(tokenizer).from_file(
            source_dir / TOKENIZER_FILE,
            tokenizer.max_length,
            tokenizer.truncation,
            source_key,
            tail_tokens=tokenizer.tail_tokens,
        )
    else:
        fit(tokenizer)
    if is_main_process():
        tokenizer.save(run_dir / TOKENIZER_FILE)
    return tokenizer


def resume_source_key(cfg: DictConfig) -> str:
    """The setting that names the run a resume continues from (its files' errors name it)."""
    if cfg.training.resume.resume_pretraining_name is not None:
        return "training.resume.resume_pretraining_name"
    return "experiment.name"


def progress_bar_enabled(setting: str | bool) -> bool:
    """`auto`: only on a terminal (not in CI logs); the schema may hand a bool over as 'True'/'False'."""
    setting = str(setting).lower()
    if setting == "auto":
        return sys.stderr.isatty()
    return setting == "true"


def make_loggers(cfg: DictConfig, plan: RunPlan, built: BuiltRun, run_config: dict[str, Any]) -> list:
    """The run folder's metric CSVs (continued without duplicate rows on resume), and W&B when asked."""
    logging_cfg, run_dir = cfg.logging, plan.run_dir
    csv_logger = RunFolderCSVLogger(
        run_dir,
        built.train_columns,
        built.eval_columns,
        write_train=logging_cfg.csv.train,
        write_eval=logging_cfg.csv.eval,
        train_every_n_steps=logging_cfg.log_every_n_steps,
    )
    if plan.resume.truncate_metrics:
        csv_logger.truncate_after(plan.resume.step)
    loggers: list = [csv_logger]
    if logging_cfg.use_wandb and is_main_process():
        wandb_cfg = logging_cfg.wandb
        loggers.append(
            wandb_logger(
                run_dir,
                name=run_dir.name if plan.sweep else cfg.experiment.name,  # sweep jobs: job<N>_...
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                mode=wandb_cfg.mode,
                group=wandb_cfg.group or plan.sweep,
                tags=list(wandb_cfg.tags),
                config=run_config,
            )
        )
    return loggers


def make_trainer(
    cfg: DictConfig,
    plan: RunPlan,
    built: BuiltRun,
    run_config: dict[str, Any],
    default_epochs: int | None = None,
) -> L.Trainer:
    """The Trainer with the run kind's callbacks; the model restored or checked for the resume.

    `default_epochs` is the run kind's length when the config sets neither training.max_epochs nor
    training.max_steps (raised to training.min_steps, see epochs_to_train)."""
    training, run_dir = cfg.training, plan.run_dir
    restore_model(built.model, plan.resume)
    loggers = make_loggers(cfg, plan, built, run_config)
    if training.compile:  # in place: state_dict keys stay the same (no `_orig_mod.`)
        for module in (built.model.backbone, built.model.head):
            module.compile(dynamic=False)
    trainer = create_trainer(
        run_dir,
        TrainerSettings.pick(training),
        loggers=loggers,
        accelerator=plan.accelerator,
        precision=plan.precision,
        validate=cfg.logging.log_eval,
        log_every_n_steps=cfg.logging.log_every_n_steps,
        checkpoint_every_n_steps=training.checkpoint.every_n_steps,
        monitor=training.checkpoint.monitor,
        monitor_mode=training.checkpoint.mode,
        progress_bar=progress_bar_enabled(cfg.logging.progress_bar),
        keep_steps=list(training.checkpoint.get("keep_steps") or []),
    )
    budget = training_budget(cfg)
    trainer.callbacks.extend(
        [
            RNGStateCallback(),
            StepBoundaryCheckpoint(run_dir / LAST_CHECKPOINT),
            *([budget] if budget else []),
            *built.callbacks,
        ]
    )
    datamodule = built.datamodule
    batches_per_epoch = datamodule.batches_per_epoch(trainer.world_size)
    if batches_per_epoch < 1:
        raise BertlabError(
            f"the training split has {len(datamodule.datasets['train'])} examples, fewer than one batch of "
            f"{training.batch_size} for each of {trainer.world_size} processes; lower training.batch_size "
            f"or training.devices, or add data",
            "training.batch_size",
        )
    datamodule.skip_train_batches = plan.resume.skip_batches(batches_per_epoch)
    steps_per_epoch = -(-batches_per_epoch // training.accumulate_grad_batches)
    min_steps = training.get("min_steps")
    epochs = epochs_to_train(
        training.max_epochs, training.max_steps, min_steps, default_epochs, steps_per_epoch
    )
    if epochs is not None and training.max_epochs is None:
        trainer.fit_loop.max_epochs = epochs
        if epochs > (default_epochs or 0):
            log.info(
                "training.min_steps=%d raises the default %d epochs to %d (%d optimizer steps each); set "
                "training.max_epochs or training.max_steps to train exactly that long",
                min_steps,
                default_epochs,
                epochs,
                steps_per_epoch,
            )
    return trainer


def epochs_to_train(
    max_epochs: int | None,
    max_steps: int,
    min_steps: int | None,
    default_epochs: int | None,
    steps_per_epoch: int,
) -> int | None:
    """How many epochs a run trains (None: as many as max_steps takes).

    An explicit `max_epochs`, or `max_steps` (then the epochs are unbounded), is never overruled. With
    neither, `default_epochs`, raised so that a small labelled set still trains for `min_steps` optimizer
    steps.
    """
    if max_epochs is not None or max_steps != -1 or default_epochs is None:
        return max_epochs
    if min_steps is None:
        return default_epochs
    return max(default_epochs, math.ceil(min_steps / max(1, steps_per_epoch)))


def write_run_info(plan: RunPlan, trainer: L.Trainer, training: DictConfig, info: dict[str, Any]) -> None:
    """The run-info file: what `auto` settings resolved to, and where the data and the start came from."""
    if not is_main_process():
        return
    resume = plan.resume
    info = {
        "accelerator": plan.accelerator,
        "precision": plan.precision,
        "cpu_threads": torch.get_num_threads(),  # figures differ in the last bits between thread counts
        **info,
        "resumed_from": str(resume.checkpoint) if resume.checkpoint else None,
        "resumed_at_step": resume.step if resume.fit_checkpoint else None,
        "world_size": trainer.world_size,
        # training.batch_size is per process; an optimizer step sees this many sequences:
        "global_batch_size": training.batch_size * trainer.world_size * training.accumulate_grad_batches,
        "max_epochs": trainer.max_epochs,  # as trained: a default raised by training.min_steps; -1: max_steps
        "wandb": wandb_run_info(trainer.loggers),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "command": sys.argv,
        "status": RUNNING,  # then completed or interrupted (run_folder.write_run_status)
    }
    write_json(plan.run_dir / RUN_INFO_FILE, info)


def fit_and_test(
    trainer: L.Trainer, built: BuiltRun, plan: RunPlan, validate: bool, use_wandb: bool
) -> float | None:
    """Baseline validation, fit, then the test split with the best checkpoint; returns the best monitored
    value. A signal ends it with TrainingInterrupted once the checkpoint is saved."""
    model, datamodule, run_dir = built.model, built.datamodule, plan.run_dir
    try:
        with warnings.catch_warnings():
            for message in IRRELEVANT_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            return _fit_and_test(trainer, model, datamodule, plan, validate)
    finally:
        write_run_plots(run_dir)  # also after an interruption: the curves so far
        if use_wandb:
            finish_wandb()


def _fit_and_test(
    trainer: L.Trainer, model: L.LightningModule, datamodule: Any, plan: RunPlan, validate: bool
) -> float | None:
    fit_checkpoint = plan.resume.fit_checkpoint
    if validate and fit_checkpoint is None:
        trainer.validate(model, datamodule=datamodule, verbose=False)  # the step-0 baseline row
    trainer.fit(model, datamodule=datamodule, ckpt_path=fit_checkpoint, weights_only=True)
    best = plan.run_dir / BEST_CHECKPOINT
    if not best.exists():  # no validation ran: the last weights are the best known
        trainer.save_checkpoint(best, weights_only=False)
    best_score = next((c.best_model_score for c in trainer.checkpoint_callbacks if c.monitor), None)
    if validate:
        trainer.test(model, datamodule=datamodule, ckpt_path=str(best), weights_only=True)
    return float(best_score) if best_score is not None else None
