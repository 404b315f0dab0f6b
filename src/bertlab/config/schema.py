"""Structured-config schemas for the sections without `_target_`.

hydra_glue.register() stores them; they are merged under the YAML files, so a wrong type ("training.max_steps=many") fails at launch with
Hydra's message naming the key, and an unknown key fails as it does for any struct node. Sections with a
`_target_` (tokenizer, architecture, heads, data) are checked by instantiating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class ExperimentConfig:
    name: str = MISSING
    kind: str = MISSING
    output_dir: str = "runs"
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
    every_n_steps: int = MISSING
    monitor: str = MISSING
    mode: str = MISSING


@dataclass
class ResumeConfig:
    is_resume: bool = MISSING
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
    """The keys both tasks have (conf/training/common.yaml and each task's file)."""

    max_steps: int = MISSING
    max_epochs: int | None = MISSING
    batch_size: int = MISSING
    accumulate_grad_batches: int = MISSING
    gradient_clip_val: float | None = MISSING
    val_check_interval: int | None = MISSING
    limit_val_batches: Any = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    num_workers: Any = MISSING  # auto | a non-negative int (bertlab.data.loader_workers)
    deterministic: bool = MISSING
    compile: bool = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)


@dataclass
class PretrainTrainingConfig(TrainingConfig):
    peak_tflops: float | None = MISSING  # the device's peak for MFU; null: from a table of GPUs, else no MFU


@dataclass
class FinetuneTrainingConfig(TrainingConfig):
    head_lr: float | None = MISSING
    baseline: bool = MISSING
    layerwise_lr_decay: float = MISSING
    freeze: FreezeConfig = field(default_factory=FreezeConfig)


@dataclass
class RunConfig:
    """The root: typed experiment section; the other sections come from their groups."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    logging: Any = MISSING
    tokenizer: Any = MISSING
    architecture: Any = MISSING
    mlm_head: Any = None
    classification_head: Any = None
    pretrained_experiment: Any = None
    training: Any = MISSING
    data: Any = MISSING
