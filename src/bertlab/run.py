"""The one function that turns a composed config into a finished run in its folder.

Hydra stays here and in launch.py: this module instantiates the config sections; everything it builds
takes plain arguments. Order matters: every check that can fail runs before anything is written or
trained.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from bertlab.config.checks import check_pretraining
from bertlab.errors import BertlabError
from bertlab.run_folder import refuse_existing_run, refuse_missing_run
from bertlab.tasks.mlm import EVAL_COLUMNS, TRAIN_COLUMNS, MaskedLanguageModel
from bertlab.training.checkpointing import BEST_NAME, LAST_NAME
from bertlab.training.interruption import StepBoundaryCheckpoint, TrainingInterrupted
from bertlab.training.loggers import finish_wandb, wandb_logger
from bertlab.training.metric_files import RunFolderCSVLogger
from bertlab.training.precision import resolve_accelerator, resolve_precision
from bertlab.training.resume import RNGStateCallback, batches_into_epoch, compare_state, load_checkpoint
from bertlab.training.trainer import build_trainer

log = logging.getLogger(__name__)
RUN_INFO = "run.json"


def build(cfg: DictConfig, section: str, **runtime: Any) -> Any:
    """`instantiate` one config section; errors name the section's keys (`architecture.num_heads`)."""
    node = OmegaConf.select(cfg, section)
    try:
        return instantiate(node, **runtime)
    except InstantiationException as error:
        if isinstance(error.__cause__, BertlabError):
            nested = str(error).rpartition("\nfull_key: ")[2] if "\nfull_key: " in str(error) else ""
            raise error.__cause__.in_section(f"{section}.{nested}" if nested else section) from None
        raise BertlabError(str(error), key=section) from error
    except BertlabError as error:
        raise error.in_section(section) from None


def progress_bar_enabled(setting: str | bool) -> bool:
    if setting in ("auto", None):
        return sys.stderr.isatty()
    return setting in (True, "true")


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuses what cannot work."""
    resume = cfg.training.resume
    if not resume.is_resume:
        refuse_existing_run(run_dir, markers=("checkpoints", "metrics", "tokenizer.json"))
        return None
    source_name = resume.resume_pretraining_name or cfg.experiment.name
    source_dir = Path(cfg.experiment.output_dir) / cfg.experiment.kind / source_name
    checkpoint = source_dir / resume.checkpoint_path
    refuse_missing_run(source_dir, checkpoint)
    if source_dir.resolve() != run_dir.resolve():
        refuse_existing_run(run_dir, markers=("checkpoints", "metrics", "tokenizer.json"))
    return checkpoint


def run(cfg: DictConfig, run_dir: str | Path) -> float | None:
    """Pretrain per `cfg` into `run_dir`; returns the best monitored validation value (for sweepers)."""
    run_dir = Path(run_dir)
    check_pretraining(cfg)
    checkpoint_path = resume_checkpoint(cfg, run_dir)
    training = cfg.training

    # Build everything that validates input before any file is written.
    tokenizer = build(cfg, "tokenizer")
    masking = build(cfg, "mlm_head.masking")
    datamodule = build(
        cfg, "data", masking=masking, batch_size=training.batch_size, num_workers=training.num_workers
    )
    with torch.device("meta"):
        build(cfg, "architecture", vocab_size=tokenizer.vocab_size_limit)
    optimizer = build(cfg, "training.optimizer")
    scheduler = build(cfg, "training.scheduler")
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    try:
        scheduler(probe, total_steps=training.max_steps)
    except BertlabError as error:
        raise error.in_section("training.scheduler") from None
    try:
        accelerator = resolve_accelerator(training.accelerator)
        precision = resolve_precision(training.precision, accelerator)
    except BertlabError as error:
        raise error.in_section("training") from None
    source_checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path else None
    log.info("Run folder %s; accelerator %s, precision %s", run_dir, accelerator, precision)

    try:
        documents = datamodule.documents()
    except BertlabError as error:
        raise error.in_section("data.source") from None

    L.seed_everything(cfg.experiment.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_path is not None:
        source_tokenizer = checkpoint_path.parent.parent / "tokenizer.json"
        tokenizer = type(tokenizer).from_file(source_tokenizer, tokenizer.max_length, tokenizer.truncation)
    else:
        tokenizer.fit(documents["train"], cache_file=datamodule.tokenizer_cache_file(tokenizer))
    tokenizer.save(run_dir / "tokenizer.json")
    prepared_dir = datamodule.prepare(tokenizer)
    datamodule.setup("fit")
    if datamodule.batches_per_epoch() < 1:
        raise BertlabError(
            f"the training split has {len(datamodule.datasets['train'])} blocks, fewer than one batch of "
            f"{training.batch_size}; lower training.batch_size or add text",
            "training.batch_size",
        )

    backbone = build(cfg, "architecture", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    head = build(cfg, "mlm_head.module", hidden_size=backbone.hidden_size, vocab_size=tokenizer.vocab_size)
    model = MaskedLanguageModel(
        backbone, head, optimizer, scheduler, run_config=OmegaConf.to_container(cfg, resolve=True)
    )

    fit_checkpoint = None
    resumed_step = 0
    if source_checkpoint is not None:
        compare_state(model, source_checkpoint, cfg.training.resume.strict, checkpoint_path)
        if cfg.training.resume.load_only_model_state:
            model.load_state_dict(source_checkpoint["state_dict"], strict=cfg.training.resume.strict)
            log.info("Loaded weights only from %s: fresh optimizer, schedule and step count", checkpoint_path)
        else:
            fit_checkpoint = str(checkpoint_path)
            model.strict_loading = cfg.training.resume.strict
            resumed_step = int(source_checkpoint["global_step"])
            datamodule.skip_train_batches = batches_into_epoch(
                resumed_step, training.accumulate_grad_batches, datamodule.batches_per_epoch()
            )
            log.info("Resuming from %s at step %d", checkpoint_path, resumed_step)
        del source_checkpoint

    csv_logger = RunFolderCSVLogger(
        run_dir,
        TRAIN_COLUMNS,
        EVAL_COLUMNS,
        write_train=cfg.logging.csv.train,
        write_eval=cfg.logging.csv.eval,
        train_every_n_steps=cfg.logging.log_every_n_steps,
    )
    if checkpoint_path is not None and checkpoint_path.parent.parent.resolve() == run_dir.resolve():
        csv_logger.truncate_after(resumed_step)
    loggers: list = [csv_logger]
    if cfg.logging.use_wandb:
        wandb_cfg = cfg.logging.wandb
        loggers.append(
            wandb_logger(
                run_dir,
                name=cfg.experiment.name,
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                mode=wandb_cfg.mode,
                group=wandb_cfg.group,
                tags=list(wandb_cfg.tags),
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    write_run_info(
        run_dir,
        {
            "task": "mlm",
            "accelerator": accelerator,
            "precision": precision,
            "prepared_data": str(prepared_dir),
            "vocab_size": tokenizer.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "resumed_from": str(checkpoint_path) if checkpoint_path else None,
            "resumed_at_step": resumed_step if fit_checkpoint else None,
        },
    )

    trainer = build_trainer(
        run_dir,
        loggers=loggers,
        max_steps=training.max_steps,
        max_epochs=training.max_epochs,
        accelerator=accelerator,
        devices=training.devices,
        strategy=training.strategy,
        precision=precision,
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
    checkpoints = run_dir / "checkpoints"
    stopper = StepBoundaryCheckpoint(checkpoints / f"{LAST_NAME}.ckpt")
    trainer.callbacks.extend([RNGStateCallback(), stopper])
    try:
        if cfg.logging.log_eval and fit_checkpoint is None:
            trainer.validate(model, datamodule=datamodule, verbose=False)  # the step-0 baseline row
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=fit_checkpoint, weights_only=True)
        except TrainingInterrupted as stop:
            log.warning(
                "Training interrupted at step %d; resume with training.resume.is_resume=true", stop.step
            )
            return None
        best = checkpoints / f"{BEST_NAME}.ckpt"
        if not best.exists():  # no validation ran: the last weights are the best known
            trainer.save_checkpoint(best)
        best_score = next((c.best_model_score for c in trainer.checkpoint_callbacks if c.monitor), None)
        if cfg.logging.log_eval:
            trainer.test(model, datamodule=datamodule, ckpt_path=str(best), weights_only=True)
    finally:
        if cfg.logging.use_wandb:
            finish_wandb()
    return float(best_score) if best_score is not None else None


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """run.json: what `auto` settings resolved to, and where the data and the start came from."""
    info = {
        **info,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "command": sys.argv,
    }
    (run_dir / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
