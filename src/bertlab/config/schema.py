"""Structured-config schemas for the sections without `_target_`.

hydra_glue.register() stores them; they are merged under the YAML files, so a wrong type ("training.max_steps=many") fails at launch with
Hydra's message naming the key, and an unknown key fails as it does for any struct node. Sections with a
`_target_` (tokenizer, architecture, heads, data) are checked by instantiating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from bertlab.run_folder import LAST_CHECKPOINT


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


@dataclass
class CheckpointConfig:
    every_n_steps: int = 100
    monitor: str = "val/loss"
    mode: str = "min"


@dataclass
class ResumeConfig:
    is_resume: bool = False
    resume_pretraining_name: str | None = None
    checkpoint_path: str = str(LAST_CHECKPOINT)
    strict: bool = True
    load_only_model_state: bool = False
    allow_config_changes: bool = False


@dataclass
class FreezeConfig:
    embeddings: bool = False
    layers: int = 0
    backbone: bool = False
    unfreeze_after_epochs: int | None = None


@dataclass
class PretrainedExperimentConfig:
    name: str | None = None
    checkpoint: str | None = "best"
    hf_path: str | None = None  # a Hugging Face model folder instead of a bertlab run (see hf_import.py)


@dataclass
class TrainingConfig:
    max_steps: int = 600
    max_epochs: int | None = None
    batch_size: int = 32
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    val_check_interval: int | None = 100
    limit_val_batches: Any = 1.0
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    num_workers: Any = "auto"  # auto | a non-negative int (bertlab.data.loader_workers)
    deterministic: bool = True
    compile: bool = False
    peak_tflops: float | None = None  # the device's peak for MFU; null: from a table of GPUs, else no MFU
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)


@dataclass
class FinetuneTrainingConfig(TrainingConfig):
    head_lr: float | None = None
    baseline: bool = True
    layerwise_lr_decay: float = 1.0
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
