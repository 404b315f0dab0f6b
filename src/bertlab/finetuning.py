"""Sequence-classification finetuning: from a composed config to a finished run folder.

The backbone's architecture and tokenizer come from the pretraining run named by pretrained_experiment
(its saved config and folder), and its weights load strictly; pretrained_experiment=none trains the
same kind of model from random initialisation instead.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from bertlab.baseline import linear_baseline
from bertlab.building import (
    apply_resume,
    build,
    build_node,
    fit_and_test,
    make_loggers,
    make_trainer,
    maybe_compile,
    run_tokenizer,
    setup_run,
    write_run_info,
)
from bertlab.config.checks import check_finetuning
from bertlab.errors import BertlabError
from bertlab.hf_import import finetuning_source
from bertlab.pretrained import inherit_architecture, load_backbone, pretrained_checkpoint
from bertlab.run_folder import LABELS_FILE, PREDICTIONS_FILE, RESULTS_FILE
from bertlab.tasks.classification import EVAL_COLUMNS, TRAIN_COLUMNS, SequenceClassifier
from bertlab.training.distributed import is_main_process
from bertlab.training.freezing import FreezeSchedule
from bertlab.training.resume import load_checkpoint

log = logging.getLogger(__name__)


def architecture_config(
    cfg: DictConfig, pretrained: dict[str, Any] | None
) -> tuple[DictConfig, dict[str, dict[str, Any]]]:
    """The backbone's config and the weight-neutral overrides of the pretrained one.

    With a pretrained run, the architecture is that run's; only keys set on the command line (non-null in
    conf/architecture/from_pretrained.yaml) override it. Without one, the config's own values.
    """
    requested = OmegaConf.to_container(cfg.architecture, resolve=True)
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
    check_finetuning(cfg)
    training = cfg.training

    # Everything that validates input runs before any file is written.
    source = cfg.pretrained_experiment
    pretrained_path = pretrained_config = None
    hf = finetuning_source(cfg)  # pretrained_experiment.hf_path: a Hugging Face folder instead of a run
    if hf is not None:
        pretrained_config = {"architecture": hf.model.architecture}
        pretrained_state = {"state_dict": hf.state_dict}
    elif source.name is not None:
        pretrained_path = pretrained_checkpoint(cfg.experiment.output_dir, source.name, source.checkpoint)
        pretrained_state = load_checkpoint(pretrained_path, "pretrained_experiment.checkpoint")
        pretrained_config = pretrained_state.get("bertlab", {}).get("config")
        if not pretrained_config or "architecture" not in pretrained_config:
            raise BertlabError(
                f"checkpoint {str(pretrained_path)!r} holds no bertlab config; it was not written by a bertlab "
                f"pretraining run",
                "pretrained_experiment.checkpoint",
            )
    architecture, architecture_overrides = architecture_config(
        cfg, pretrained_config["architecture"] if pretrained_config else None
    )
    tokenizer = build(cfg, "tokenizer")
    max_positions = architecture.get("max_position_embeddings", 512)
    if tokenizer.max_length > max_positions:
        raise BertlabError(
            f"{tokenizer.max_length} exceeds the backbone's max_position_embeddings={max_positions}",
            "tokenizer.max_length",
        )
    datamodule = build(cfg, "data", batch_size=training.batch_size, num_workers=training.num_workers)
    with torch.device("meta"):
        build_node(architecture, "architecture", vocab_size=tokenizer.vocab_size_limit)
    setup = setup_run(cfg, run_dir, sweep)
    try:
        examples = datamodule.examples()
    except BertlabError as error:
        raise error.in_section("data.source") if error.key in ("train", "val", "test") else error from None

    L.seed_everything(cfg.experiment.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    source_run = pretrained_path or setup.checkpoint_path  # .../<run>/checkpoints/<name>.ckpt
    tokenizer = run_tokenizer(
        tokenizer,
        run_dir,
        source_run.parent.parent if source_run else None,
        fit=lambda fresh: fresh.fit([text for text, _ in examples["train"]]),
    )
    if is_main_process():
        (run_dir / LABELS_FILE).write_text(json.dumps(datamodule.labels, indent=2) + "\n")
    prepared_dir = datamodule.prepare(tokenizer)
    datamodule.setup("fit")

    backbone = build_node(
        architecture, "architecture", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id
    )
    if pretrained_config is not None and setup.checkpoint_path is None:
        load_backbone(backbone, pretrained_state["state_dict"], pretrained_path or hf.model.folder)
        log.info("Backbone loaded from %s", pretrained_path or hf.model.folder)
    head = build(
        cfg, "classification_head", hidden_size=backbone.hidden_size, num_labels=datamodule.num_labels
    )
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
    run_config = OmegaConf.to_container(cfg, resolve=True)
    model = SequenceClassifier(
        backbone,
        head,
        datamodule.num_labels,
        setup.optimizer,
        setup.scheduler,
        head_lr=training.head_lr,
        layerwise_lr_decay=training.layerwise_lr_decay,
        run_config=run_config,
        backbone_config=OmegaConf.to_container(architecture),
    )
    resumed_from = str(setup.checkpoint_path) if setup.checkpoint_path else None
    fit_checkpoint, step = apply_resume(cfg, setup, model, datamodule)
    loggers = make_loggers(cfg, run_dir, TRAIN_COLUMNS, EVAL_COLUMNS, setup, step)
    maybe_compile(model, training.compile)
    trainer, _ = make_trainer(cfg, run_dir, setup, loggers, datamodule, step)
    write_run_info(
        run_dir,
        trainer,
        cfg,
        {
            "task": "classification",
            "accelerator": setup.accelerator,
            "precision": setup.precision,
            "pretrained_from": {"run": str(pretrained_path.parent.parent), "checkpoint": str(pretrained_path)}
            if pretrained_path
            else {"hf_source": hf.model.record()}
            if hf
            else None,
            "architecture": OmegaConf.to_container(architecture),
            "architecture_overrides": architecture_overrides,
            "prepared_data": str(prepared_dir),
            "labels": datamodule.labels,
            "examples": {split: len(dataset) for split, dataset in datamodule.datasets.items()},
            "parameters": sum(p.numel() for p in model.parameters()),
            "resumed_from": resumed_from,
            "resumed_at_step": step if fit_checkpoint else None,
        },
    )
    trainer.callbacks.append(freezing)
    best, finished = fit_and_test(cfg, run_dir, trainer, model, datamodule, fit_checkpoint, setup.sweep)
    if finished and cfg.logging.log_eval and trainer.is_global_zero:
        baseline = None
        if training.baseline:
            baseline = linear_baseline(
                examples["train"], examples["val"], examples["test"], datamodule.labels, cfg.experiment.seed
            )
        write_test_outputs(run_dir, model, trainer, datamodule.labels, baseline)
    return best


def write_test_outputs(
    run_dir: Path,
    model: SequenceClassifier,
    trainer: L.Trainer,
    labels: list,
    baseline: dict[str, float] | None = None,
) -> None:
    """results.json (test figures of the best checkpoint, and the linear baseline's beside them) and
    predictions.csv (one row per test example)."""
    results: dict[str, Any] = {
        key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")
    }
    results.setdefault("checkpoint", "checkpoints/best-model.ckpt")
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
    (run_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
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
