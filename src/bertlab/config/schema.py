"""Structured-config schemas for the sections without `_target_`.

launcher.registration.register() stores them; they are merged under the YAML files, so a wrong type ("training.max_steps=many") fails at launch with
Hydra's message naming the key, and an unknown key fails as it does for any struct node. Sections with a
`_target_` (tokenizer, architecture, heads, data) are checked by instantiating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import MISSING

# Field metadata of the keys a resumed run may change: how long and where it trains, and what it reports.
# Every other key is part of the model or the data, which a resume must not change (training/resume.py).
RESUMABLE = {"resume_may_change": True}
# Resumable keys of sections that have no schema here (their _target_ checks them).
UNTYPED_RESUMABLE = (
    "data.cache_dir",  # where prepared data is kept, not what it is
    "data.eval_tokens",  # how much of val/test each evaluation reads, not what is trained on
    "training.scheduler.decay_start_step",  # WSD: decay a stable-phase checkpoint from where it stopped
    "hf_source.sentence_embedding",  # what an imported folder's embeddings recipe is, recorded for predict
)


@dataclass
class ExperimentConfig:
    name: str = field(default=MISSING, metadata=RESUMABLE)
    kind: str = MISSING
    output_dir: str = field(default="runs", metadata=RESUMABLE)
    seed: int = 42


@dataclass
class WandbConfig:
    project: str = "bertlab"
    entity: str | None = None
    mode: str = "auto"
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class CsvConfig:
    train: bool = True
    eval: bool = True


@dataclass
class LoggingConfig:
    use_wandb: bool = False
    csv: CsvConfig = field(default_factory=CsvConfig)
    log_eval: bool = True
    log_every_n_steps: int = 10
    progress_bar: str = "auto"
    wandb: WandbConfig = field(default_factory=WandbConfig)


# The training schemas type the keys; their values live only in conf/training/*.yaml (MISSING here).


@dataclass
class CheckpointConfig:
    every_n_steps: int = field(default=MISSING, metadata=RESUMABLE)
    # Steps whose checkpoints stay (checkpoints/step-<N>.ckpt): what is kept, not what is trained.
    keep_steps: list[int] = field(default_factory=list, metadata=RESUMABLE)
    monitor: str = MISSING
    mode: str = MISSING


@dataclass
class ResumeConfig:
    is_resume: Any = MISSING  # true | false | auto (training/resume.py)
    resume_pretraining_name: str | None = MISSING
    checkpoint_path: str = MISSING
    strict: bool = MISSING
    load_only_model_state: bool = MISSING
    allow_config_changes: bool = MISSING


@dataclass
class FreezeConfig:
    embeddings: bool = MISSING
    layers: int = MISSING
    backbone: bool = MISSING
    unfreeze_after_epochs: int | None = MISSING


@dataclass
class PretrainedExperimentConfig:
    name: str | None = None
    checkpoint: str | None = "best"
    hf_path: str | None = None  # a Hugging Face model folder instead of a bertlab run (see hf_import.py)


@dataclass
class TrainingConfig:
    """The keys both kinds of training run have (conf/training/common.yaml and each kind's file)."""

    max_steps: int = field(default=MISSING, metadata=RESUMABLE)
    max_epochs: int | None = field(default=MISSING, metadata=RESUMABLE)
    batch_size: int = field(default=MISSING, metadata=RESUMABLE)
    accumulate_grad_batches: int = MISSING
    gradient_clip_val: float | None = MISSING
    val_check_interval: int | None = field(default=MISSING, metadata=RESUMABLE)
    limit_val_batches: Any = field(default=MISSING, metadata=RESUMABLE)
    accelerator: str = field(default=MISSING, metadata=RESUMABLE)
    devices: Any = field(default=MISSING, metadata=RESUMABLE)
    num_nodes: int = field(default=MISSING, metadata=RESUMABLE)
    strategy: str = field(default=MISSING, metadata=RESUMABLE)
    precision: str = field(default=MISSING, metadata=RESUMABLE)
    cpu_threads: int | None = field(default=MISSING, metadata=RESUMABLE)  # training/cpu_threads.py
    num_workers: Any = field(
        default=MISSING, metadata=RESUMABLE
    )  # auto | a non-negative int (bertlab.data.loader_workers)
    deterministic: bool = MISSING
    compile: bool = field(default=MISSING, metadata=RESUMABLE)
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig, metadata=RESUMABLE)


@dataclass
class BudgetConfig:
    minutes: float | None = None  # wall clock of validations and steps (training/budget.py)
    tokens: int | None = None


@dataclass
class PretrainTrainingConfig(TrainingConfig):
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata=RESUMABLE)
    peak_tflops: float | None = field(
        default=MISSING, metadata=RESUMABLE
    )  # the device's peak for MFU; null: from a table of GPUs, else no MFU
    # auto | steps (training/head_warmup.py); it scales rates by step only, so a resume may change it
    head_warmup_steps: Any = field(default=MISSING, metadata=RESUMABLE)


@dataclass
class FinetuneTrainingConfig(TrainingConfig):
    min_steps: int | None = field(default=None, metadata=RESUMABLE)
    head_lr: float | None = MISSING
    baseline: bool = field(default=MISSING, metadata=RESUMABLE)
    layerwise_lr_decay: float = MISSING
    freeze: FreezeConfig = field(default_factory=FreezeConfig)


@dataclass
class SuiteConfig:
    """The keys a suite may set (conf/suite/*.yaml, merged onto this): a key it omits is null here, so that
    the command line can still set it (suite.starts=[...]); an unknown one is refused. bertlab/suite/spec.py
    checks the values, the tasks' entries and gives the defaults."""

    description: str | None = None
    seeds: Any = None  # a list of seeds or how many
    starts: list[str] | None = None
    split_seed: int | None = None
    devsets_dir: str | None = None
    scratch_architecture: str | None = None
    scratch_overrides: list[str] | None = None
    overrides: list[str] | None = None
    tasks: Any = None  # task name -> its entry
    job: str | None = None  # set by the suite's sweeper for each job: <start>/<task>/seed<N>


@dataclass
class RunConfig:
    """The root: typed experiment section; the other sections come from their groups."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    logging: Any = field(default=MISSING, metadata=RESUMABLE)
    tokenizer: Any = MISSING
    architecture: Any = MISSING
    mlm_head: Any = None
    classification_head: Any = None
    pretrained_experiment: Any = None
    training: Any = MISSING
    data: Any = MISSING
    # +experiment=suite: the suite a job belongs to (which tasks, seeds, starts; suite/spec.py checks it).
    # It chooses the job, it does not change it: a relaunch may add tasks or seeds and still resume a job.
    suite: Any = field(default=None, metadata=RESUMABLE)


def _marked(schema: type, prefix: str) -> list[str]:
    keys = []
    for item in fields(schema):
        if item.metadata.get("resume_may_change"):
            keys.append(f"{prefix}{item.name}")
        elif is_dataclass(item.default_factory if item.default_factory is not MISSING else None):
            keys += _marked(item.default_factory, f"{prefix}{item.name}.")
    return keys


def resume_may_change() -> tuple[str, ...]:
    """The keys (or whole sections) a resume may change: the fields whose metadata is RESUMABLE in these schemas."""
    keys = [*_marked(RunConfig, ""), *UNTYPED_RESUMABLE]
    for training in (PretrainTrainingConfig, FinetuneTrainingConfig):
        keys += _marked(training, "training.")
    return tuple(sorted(set(keys)))
