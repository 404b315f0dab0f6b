"""Sequence-classification finetuning: from a composed config to a finished run folder.

The backbone's architecture and tokenizer come from the pretraining run named by pretrained_experiment
(its saved config and folder), and its weights load strictly; pretrained_experiment=none trains the
same kind of model from random initialisation instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from bertlab.baseline import linear_baseline
from bertlab.config.instantiate import edited_config, instantiate_node, instantiate_section, plain_config
from bertlab.errors import BertlabError
from bertlab.flow import (
    BuiltRun,
    RunPlan,
    check_run_kind,
    configured_lr,
    resume_source_key,
    resumes,
    run_tokenizer,
)
from bertlab.hf_import import HFStart, finetuning_source
from bertlab.model.classification_head import REGRESSION, check_problem_type
from bertlab.pretrained import inherit_architecture, load_backbone, open_pretrained_run
from bertlab.reporting.test_outputs import write_test_outputs
from bertlab.run_folder import LABELS_FILE, check_run_name, write_json
from bertlab.saved_run import SavedRun
from bertlab.tasks.classification import TRAIN_COLUMNS, SequenceClassifier, eval_columns
from bertlab.tasks.objectives import monitor_choices
from bertlab.tokenizer import TextTokenizer
from bertlab.training.distributed import is_main_process
from bertlab.training.finetuning_lr import AUTO, finetuning_lr
from bertlab.training.freezing import FreezeSchedule

log = logging.getLogger(__name__)


def architecture_config(
    requested: dict[str, Any], pretrained: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The backbone's config and the weight-neutral overrides of the pretrained one.

    With a pretrained run, the architecture is that run's; only keys set on the command line (non-null in
    conf/architecture/from_pretrained.yaml) override it. Without one, the config's own values.
    """
    if pretrained is None:
        return {key: value for key, value in requested.items() if value is not None}, {}
    merged, overrides = inherit_architecture(pretrained, requested)
    for key, change in overrides.items():
        log.info(
            "architecture.%s: %r instead of the pretrained %r (the weights allow it)",
            key,
            change["used"],
            change["pretrained"],
        )
    return merged, overrides


def freeze_schedule(backbone: Any, freeze: dict[str, Any]) -> FreezeSchedule:
    """The training.freeze section as a callback; errors name its keys."""
    try:
        return FreezeSchedule(
            backbone,
            backbone.num_layers,
            embeddings=freeze["embeddings"],
            layers=freeze["layers"],
            backbone_frozen=freeze["backbone"],
            unfreeze_after_epochs=freeze["unfreeze_after_epochs"],
        )
    except BertlabError as error:
        raise error.in_section("training.freeze") from None


def check_finetuning(cfg: DictConfig) -> None:
    """What a finetuning run's config must satisfy beyond the common checks (flow.check_run_config)."""
    problem_type = check_problem_type(
        cfg.classification_head.problem_type, "classification_head.problem_type"
    )
    check_run_kind(cfg, "finetuning", f"{problem_type} finetuning", monitor_choices(problem_type))
    decay = cfg.training.layerwise_lr_decay
    if not 0.0 < decay <= 1.0:
        raise BertlabError(f"must be in (0, 1], got {decay}", "training.layerwise_lr_decay")
    head_lr = cfg.training.head_lr
    if head_lr is not None and not head_lr > 0:
        raise BertlabError(f"must be positive or null, got {head_lr}", "training.head_lr")
    pretrained = cfg.pretrained_experiment
    if pretrained.name is not None:
        check_run_name(pretrained.name, "pretrained_experiment.name")
    if pretrained.name is not None and pretrained.checkpoint is None:
        raise BertlabError(
            "must be best, last or a path when pretrained_experiment.name is set",
            "pretrained_experiment.checkpoint",
        )


@dataclass(frozen=True)
class FinetuningInputs:
    """What a finetuning run resolved from its config and inputs, before anything is written."""

    config: dict[str, Any]  # as the run records it
    lr: float  # the backbone's rate (`auto` resolved by width and start)
    head_lr: float
    tokenizer: TextTokenizer  # not fitted yet: build() takes the pretrained run's or fits one
    datamodule: Any
    examples: dict[str, list]  # the labelled splits as read: (text, label) pairs
    architecture: dict[str, Any]  # the backbone built: the pretrained one with weight-neutral overrides
    architecture_overrides: dict[str, dict[str, Any]]
    pretrained: SavedRun | None  # the bertlab pretraining run the backbone starts from
    hf: HFStart | None  # or the Hugging Face model folder it starts from

    @property
    def start_record(self) -> dict[str, Any] | None:
        """Where the backbone's weights came from, for the run-info file."""
        if self.pretrained is not None:
            return {
                "run": str(self.pretrained.run_dir),
                "checkpoint": str(self.pretrained.checkpoint),
                "step": self.pretrained.step,  # its pretraining step: a suite plots best and last there
            }
        return {"hf_source": self.hf.model.record()} if self.hf is not None else None


class Finetuning:
    """Backbone (architecture, tokenizer and weights) from a pretraining run or a Hugging Face folder, a
    classification head, labelled data; writes the label vocabulary and the test results and predictions."""

    reports_mfu = False
    default_epochs = 3  # training.max_epochs: null and max_steps: -1, raised to training.min_steps

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def resolve(self) -> FinetuningInputs:
        cfg = self.cfg
        check_finetuning(cfg)
        source, is_resume = cfg.pretrained_experiment, resumes(cfg, self.run_dir)
        pretrained: SavedRun | None = None
        hf = finetuning_source(source.get("hf_path"), source.name, is_resume)
        if hf is not None:
            pretrained_architecture = hf.model.architecture
        elif source.name is not None:
            pretrained = open_pretrained_run(cfg.experiment.output_dir, source.name, source.checkpoint)
            pretrained.tokenizer()  # a damaged tokenizer file is refused before anything is written
            pretrained_architecture = pretrained.config["architecture"]
        else:
            pretrained_architecture = None
        architecture, overrides = architecture_config(plain_config(cfg.architecture), pretrained_architecture)
        run_cfg = edited_config(cfg, hf.finetuning_config) if hf is not None else cfg
        training = run_cfg.training
        tokenizer = instantiate_section(run_cfg, "tokenizer")
        max_positions = architecture.get("max_position_embeddings", 512)
        if tokenizer.max_length > max_positions:
            start = f" ({hf.model.folder})" if hf is not None else ""
            raise BertlabError(
                f"{tokenizer.max_length} exceeds the backbone's max_position_embeddings={max_positions}"
                f"{start}: it has no positions beyond; lower tokenizer.max_length to at most {max_positions}",
                "tokenizer.max_length",
            )
        datamodule = instantiate_section(
            run_cfg,
            "data",
            batch_size=training.batch_size,
            num_workers=training.num_workers,
            problem_type=run_cfg.classification_head.problem_type,
        )
        with torch.device("meta"):
            meta = instantiate_node(architecture, "architecture", vocab_size=tokenizer.vocab_size_limit)
        try:
            examples = datamodule.examples()
        except BertlabError as error:
            raise (
                error.in_section("data.source") if error.key in ("train", "val", "test") else error
            ) from None
        starts_pretrained = pretrained_architecture is not None
        lr = training.optimizer.get("lr")
        if lr == AUTO:
            lr = finetuning_lr(meta.hidden_size, starts_pretrained)
            log.info(
                "training.optimizer.lr: auto is %.2g (%s encoder, hidden_size %d)",
                lr,
                "pretrained" if starts_pretrained else "randomly initialised",
                meta.hidden_size,
            )
        else:
            lr = configured_lr(training.optimizer)
        return FinetuningInputs(
            plain_config(run_cfg),
            lr,
            training.head_lr or lr,
            tokenizer,
            datamodule,
            examples,
            architecture,
            overrides,
            pretrained,
            hf,
        )

    def build(self, inputs: FinetuningInputs, plan: RunPlan) -> BuiltRun:
        run_dir, datamodule, training = self.run_dir, inputs.datamodule, inputs.config["training"]
        source_run = inputs.pretrained.run_dir if inputs.pretrained else plan.resume.source_dir
        tokenizer = run_tokenizer(
            inputs.tokenizer,
            run_dir,
            source_run,
            fit=lambda fresh: fresh.fit([text for e in inputs.examples["train"] for text in e.texts()]),
            source_key="pretrained_experiment.name" if inputs.pretrained else resume_source_key(self.cfg),
        )
        if is_main_process():
            write_json(run_dir / LABELS_FILE, datamodule.labels)
        prepared_dir = datamodule.prepare(tokenizer)
        datamodule.setup("fit")

        backbone = self._backbone(inputs, plan, tokenizer)
        head = instantiate_node(
            inputs.config["classification_head"],
            "classification_head",
            hidden_size=backbone.hidden_size,
            num_labels=datamodule.num_labels,
        )
        if datamodule.target_scale is not None:
            head.set_target_scale(*datamodule.target_scale)
        freezing = freeze_schedule(backbone, training["freeze"])
        model = SequenceClassifier(
            backbone,
            head,
            datamodule.num_labels,
            plan.optimizer,
            plan.scheduler,
            head_lr=inputs.head_lr,
            layerwise_lr_decay=training["layerwise_lr_decay"],
            run_config=inputs.config,
            backbone_config=inputs.architecture,
            lr=inputs.lr,
        )
        return BuiltRun(
            model,
            datamodule,
            train_columns=TRAIN_COLUMNS,
            eval_columns=eval_columns(datamodule.problem_type),
            info={
                "task": SequenceClassifier.task,
                "pretrained_from": inputs.start_record,
                "architecture": inputs.architecture,
                "architecture_overrides": inputs.architecture_overrides,
                "learning_rate": {"lr": inputs.lr, "head_lr": inputs.head_lr},
                "prepared_data": str(prepared_dir),
                "problem_type": datamodule.problem_type,
                "labels": datamodule.labels,
                **(
                    {"target_scale": dict(zip(("mean", "std"), datamodule.target_scale, strict=True))}
                    if datamodule.problem_type == REGRESSION
                    else {}
                ),
                "text_pairs": datamodule.fields.text_pair_field is not None,
                "examples": {split: len(dataset) for split, dataset in datamodule.datasets.items()},
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            callbacks=[freezing],
        )

    @staticmethod
    def _backbone(inputs: FinetuningInputs, plan: RunPlan, tokenizer: TextTokenizer) -> Any:
        """The backbone, with the pretrained weights unless the run resumes (its checkpoint has them)."""
        backbone = instantiate_node(
            inputs.architecture,
            "architecture",
            vocab_size=tokenizer.vocab_size,
            pad_token_id=tokenizer.pad_id,
        )
        pretrained, hf = inputs.pretrained, inputs.hf
        if plan.resume.checkpoint is None and (pretrained or hf):
            weights, origin = (
                (pretrained.state_dict, pretrained.checkpoint)
                if pretrained
                else (hf.state_dict, hf.model.folder)
            )
            load_backbone(backbone, weights, origin)
            log.info("Backbone loaded from %s", origin)
        return backbone

    def after_test(self, inputs: FinetuningInputs, trainer: L.Trainer, built: BuiltRun) -> None:
        """The test results and predictions, with the linear baseline's figures beside the model's."""
        baseline = None
        datamodule = inputs.datamodule
        if inputs.config["training"]["baseline"]:
            examples = inputs.examples
            baseline = linear_baseline(
                examples["train"],
                examples["val"],
                examples["test"],
                datamodule.labels,
                datamodule.problem_type,
                inputs.config["experiment"]["seed"],
            )
        write_test_outputs(
            self.run_dir,
            built.model,
            trainer,
            datamodule.labels,
            baseline,
            label_separator=datamodule.fields.label_separator,
        )
