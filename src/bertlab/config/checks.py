"""Checks Hydra cannot do: value ranges and relations between sections. Each names the key to fix."""

from __future__ import annotations

from omegaconf import DictConfig

from bertlab.config.instantiate import plain_config
from bertlab.data.loader_workers import resolve_num_workers
from bertlab.errors import BertlabError
from bertlab.run_folder import check_run_name
from bertlab.training.budget import Budget
from bertlab.training.finetuning_lr import AUTO

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


def check_common(cfg: DictConfig) -> None:
    """Checks shared by every kind of training run."""
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
    if lr == AUTO:
        if cfg.experiment.kind != "finetuning":
            raise BertlabError(
                "auto is the finetuning rule (bertlab.training.finetuning_lr); give a number here",
                "training.optimizer.lr",
            )
    elif lr is not None and not (isinstance(lr, int | float) and lr > 0):
        raise BertlabError(f"must be positive or auto (finetuning), got {lr}", "training.optimizer.lr")
    resume = cfg.training.resume
    if resume.resume_pretraining_name is not None and not resume.is_resume:
        raise BertlabError(
            "is set but training.resume.is_resume is false; add training.resume.is_resume=true to resume from it",
            "training.resume.resume_pretraining_name",
        )


def _check_run_kind(cfg: DictConfig, kind: str, runs: str, monitors: tuple[str, ...]) -> None:
    """The common checks, the experiment kind and the metrics a kind of run can pick its best checkpoint by."""
    check_common(cfg)
    if cfg.experiment.kind != kind:
        raise BertlabError(
            f"must be {kind!r} for {runs} runs, got {cfg.experiment.kind!r}", "experiment.kind"
        )
    monitor = cfg.training.checkpoint.monitor
    if monitor not in monitors:
        raise BertlabError(f"must be one of {list(monitors)}, got {monitor!r}", "training.checkpoint.monitor")


def check_pretraining(cfg: DictConfig) -> None:
    _check_run_kind(cfg, "pretraining", "MLM", ("val/loss", "val/perplexity", "val/accuracy"))
    if Budget(**plain_config(cfg.training.budget)).active and cfg.training.max_epochs is not None:
        raise BertlabError(
            "must be null with a training.budget: the budget decides where the run (and its schedule) ends",
            "training.max_epochs",
        )
    max_length, max_positions = cfg.tokenizer.max_length, cfg.architecture.max_position_embeddings
    if max_length > max_positions:
        source = cfg.get("hf_source")
        fix = (
            f"the model in {source.path!r} has no positions beyond {max_positions}: lower tokenizer.max_length "
            f"to at most {max_positions}"
            if source
            else "lower tokenizer.max_length or raise architecture.max_position_embeddings"
        )
        raise BertlabError(
            f"{max_length} exceeds architecture.max_position_embeddings={max_positions}; {fix}",
            "tokenizer.max_length",
        )
    window = cfg.architecture.get("local_window")
    if cfg.architecture.get("attention") == "local" and window is not None and window > max_length:
        raise BertlabError(
            f"{window} exceeds tokenizer.max_length={max_length}: a window wider than the sequence is full "
            f"attention; lower architecture.local_window or use architecture.attention=sdpa",
            "architecture.local_window",
        )


def check_finetuning(cfg: DictConfig) -> None:
    _check_run_kind(cfg, "finetuning", "classification", ("val/macro_f1", "val/accuracy", "val/loss"))
    decay = cfg.training.layerwise_lr_decay
    if not 0.0 < decay <= 1.0:
        raise BertlabError(f"must be in (0, 1], got {decay}", "training.layerwise_lr_decay")
    head_lr = cfg.training.head_lr
    if head_lr is not None and not head_lr > 0:
        raise BertlabError(f"must be positive or null, got {head_lr}", "training.head_lr")
    if cfg.training.max_steps == -1 and cfg.training.max_epochs is None:
        raise BertlabError(
            "is -1 (no step limit) but training.max_epochs is null; set one of them", "training.max_steps"
        )
    pretrained = cfg.pretrained_experiment
    if pretrained.name is not None:
        check_run_name(pretrained.name, "pretrained_experiment.name")
    if pretrained.name is not None and pretrained.checkpoint is None:
        raise BertlabError(
            "must be best, last or a path when pretrained_experiment.name is set",
            "pretrained_experiment.checkpoint",
        )
