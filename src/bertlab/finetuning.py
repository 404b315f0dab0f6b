"""Sequence-classification finetuning: from a composed config to a finished run folder.

The backbone's architecture and tokenizer come from the pretraining run named by pretrained_experiment
(its saved config and folder), and its weights load strictly; pretrained_experiment=none trains the
same kind of model from random initialisation instead.
"""

from __future__ import annotations

import csv
import functools
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from bertlab.baseline import linear_baseline
from bertlab.config.checks import check_finetuning
from bertlab.errors import BertlabError
from bertlab.flow import RunPlan, TaskRun, run_tokenizer, run_training
from bertlab.hf_import import finetuning_source
from bertlab.hydra_glue import build, build_node, plain
from bertlab.pretrained import inherit_architecture, load_backbone, pretrained_checkpoint
from bertlab.run_folder import (
    BEST_CHECKPOINT,
    LABELS_FILE,
    PREDICTIONS_FILE,
    RESULTS_FILE,
    SavedRun,
    read_saved_run,
    write_json,
)
from bertlab.tasks.classification import EVAL_COLUMNS, TRAIN_COLUMNS, SequenceClassifier
from bertlab.training.distributed import is_main_process
from bertlab.training.finetuning_lr import AUTO, finetuning_lr
from bertlab.training.freezing import FreezeSchedule

log = logging.getLogger(__name__)


def architecture_config(
    cfg: DictConfig, pretrained: dict[str, Any] | None
) -> tuple[DictConfig, dict[str, dict[str, Any]]]:
    """The backbone's config and the weight-neutral overrides of the pretrained one.

    With a pretrained run, the architecture is that run's; only keys set on the command line (non-null in
    conf/architecture/from_pretrained.yaml) override it. Without one, the config's own values.
    """
    requested = plain(cfg.architecture)
    if pretrained is None:
        return OmegaConf.create({key: value for key, value in requested.items() if value is not None}), {}
    merged, overrides = inherit_architecture(pretrained, requested)
    for key, change in overrides.items():
        log.info(
            "architecture.%s: %r instead of the pretrained %r (the weights allow it)",
            key,
            change["used"],
            change["pretrained"],
        )
    return OmegaConf.create(merged), overrides


def finetune(cfg: DictConfig, run_dir: Path, sweep: str | None = None) -> float | None:
    """Finetune per `cfg` into `run_dir`; returns the best monitored validation value (for sweepers)."""
    return run_training(cfg, run_dir, sweep, Finetuning(cfg, run_dir))


class Finetuning:
    """Backbone (architecture, tokenizer and weights) from a pretraining run or a Hugging Face folder, a
    classification head, labelled data; writes the label vocabulary and the test results and predictions."""

    reports_mfu = False

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def check(self) -> None:
        cfg, training = self.cfg, self.cfg.training
        check_finetuning(cfg)
        source = cfg.pretrained_experiment
        self.pretrained: SavedRun | None = None
        self.hf = finetuning_source(cfg)  # pretrained_experiment.hf_path: a Hugging Face folder instead
        if self.hf is not None:
            pretrained_architecture = self.hf.model.architecture
        elif source.name is not None:
            path = pretrained_checkpoint(cfg.experiment.output_dir, source.name, source.checkpoint)
            self.pretrained = read_saved_run(path, "pretrained_experiment.checkpoint")
            pretrained_architecture = self.pretrained.config["architecture"]
        else:
            pretrained_architecture = None
        self.architecture, self.architecture_overrides = architecture_config(cfg, pretrained_architecture)
        self.starts_pretrained = pretrained_architecture is not None
        self.tokenizer = build(cfg, "tokenizer")
        max_positions = self.architecture.get("max_position_embeddings", 512)
        if self.tokenizer.max_length > max_positions:
            raise BertlabError(
                f"{self.tokenizer.max_length} exceeds the backbone's max_position_embeddings={max_positions}",
                "tokenizer.max_length",
            )
        self.datamodule = build(cfg, "data", batch_size=training.batch_size, num_workers=training.num_workers)
        with torch.device("meta"):
            build_node(self.architecture, "architecture", vocab_size=self.tokenizer.vocab_size_limit)
        try:
            self.examples = self.datamodule.examples()
        except BertlabError as error:
            raise (
                error.in_section("data.source") if error.key in ("train", "val", "test") else error
            ) from None

    def build(self, plan: RunPlan) -> TaskRun:
        cfg, run_dir, datamodule, training = self.cfg, self.run_dir, self.datamodule, self.cfg.training
        pretrained_path = self.pretrained.checkpoint if self.pretrained else None
        source_run = pretrained_path.parent.parent if pretrained_path else plan.resume.source_dir
        tokenizer = run_tokenizer(
            self.tokenizer,
            run_dir,
            source_run,
            fit=lambda fresh: fresh.fit([text for text, _ in self.examples["train"]]),
        )
        if is_main_process():
            write_json(run_dir / LABELS_FILE, datamodule.labels)
        prepared_dir = datamodule.prepare(tokenizer)
        datamodule.setup("fit")

        backbone = build_node(
            self.architecture, "architecture", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id
        )
        if plan.resume.checkpoint is None and (self.pretrained or self.hf):
            weights, origin = (
                (self.pretrained.state_dict, pretrained_path)
                if self.pretrained
                else (self.hf.state_dict, self.hf.model.folder)
            )
            load_backbone(backbone, weights, origin)
            log.info("Backbone loaded from %s", origin)
        head = build(
            cfg, "classification_head", hidden_size=backbone.hidden_size, num_labels=datamodule.num_labels
        )
        lr = training.optimizer.lr
        if lr == AUTO:
            lr = finetuning_lr(backbone.hidden_size, self.starts_pretrained)
            log.info(
                "training.optimizer.lr: auto is %.2g (%s encoder, hidden_size %d)",
                lr,
                "pretrained" if self.starts_pretrained else "randomly initialised",
                backbone.hidden_size,
            )
        classifier_lr = training.head_lr or lr
        freeze = training.freeze
        try:
            freezing = FreezeSchedule(
                backbone,
                backbone.num_layers,
                embeddings=freeze.embeddings,
                layers=freeze.layers,
                backbone_frozen=freeze.backbone,
                unfreeze_after_epochs=freeze.unfreeze_after_epochs,
            )
        except BertlabError as error:
            raise error.in_section("training.freeze") from None
        model = SequenceClassifier(
            backbone,
            head,
            datamodule.num_labels,
            functools.partial(plan.optimizer, lr=lr),
            plan.scheduler,
            head_lr=classifier_lr,
            layerwise_lr_decay=training.layerwise_lr_decay,
            run_config=plain(cfg),
            backbone_config=plain(self.architecture),
        )
        if pretrained_path:
            pretrained_from = {"run": str(pretrained_path.parent.parent), "checkpoint": str(pretrained_path)}
        else:
            pretrained_from = {"hf_source": self.hf.model.record()} if self.hf else None
        return TaskRun(
            model,
            datamodule,
            train_columns=TRAIN_COLUMNS,
            eval_columns=EVAL_COLUMNS,
            info={
                "task": "classification",
                "pretrained_from": pretrained_from,
                "architecture": plain(self.architecture),
                "architecture_overrides": self.architecture_overrides,
                "learning_rate": {"lr": lr, "head_lr": classifier_lr},
                "prepared_data": str(prepared_dir),
                "labels": datamodule.labels,
                "examples": {split: len(dataset) for split, dataset in datamodule.datasets.items()},
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            callbacks=[freezing],
        )

    def after_test(self, trainer: L.Trainer, built: TaskRun) -> None:
        """The test results and predictions, with the linear baseline's figures beside the model's."""
        baseline = None
        if self.cfg.training.baseline:
            examples = self.examples
            baseline = linear_baseline(
                examples["train"],
                examples["val"],
                examples["test"],
                self.datamodule.labels,
                self.cfg.experiment.seed,
            )
        write_test_outputs(self.run_dir, built.model, trainer, self.datamodule.labels, baseline)


def write_test_outputs(
    run_dir: Path,
    model: SequenceClassifier,
    trainer: L.Trainer,
    labels: list,
    baseline: dict[str, float] | None = None,
) -> None:
    """RESULTS_FILE (test figures of the best checkpoint, and the linear baseline's beside them) and
    PREDICTIONS_FILE (one row per test example)."""
    results: dict[str, Any] = {
        key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")
    }
    results.setdefault("checkpoint", str(BEST_CHECKPOINT))
    if baseline is not None:
        results["baseline"] = {"model": "tfidf_1-2gram_logistic_regression", **baseline}
        log.info(
            "Test accuracy %.4f, macro-F1 %.4f; TF-IDF + logistic regression baseline: accuracy %.4f, "
            "macro-F1 %.4f (C=%g, %.1f s)",
            results.get("test/accuracy", float("nan")),
            results.get("test/macro_f1", float("nan")),
            baseline["test/accuracy"],
            baseline["test/macro_f1"],
            baseline["C"],
            baseline["seconds"],
        )
    write_json(run_dir / RESULTS_FILE, results)
    write_predictions(run_dir / PREDICTIONS_FILE, model.predictions, labels)


def write_predictions(path: Path, predictions: list[dict[str, torch.Tensor]], labels: list) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "prediction", *[f"p_{label}" for label in labels]])
        for batch in predictions:
            for index, gold, predicted, probabilities in zip(
                batch["index"].tolist(),
                batch["label"].tolist(),
                batch["prediction"].tolist(),
                batch["probabilities"].tolist(),
                strict=True,
            ):
                writer.writerow(
                    [index, labels[gold], labels[predicted], *[f"{p:.6f}" for p in probabilities]]
                )
