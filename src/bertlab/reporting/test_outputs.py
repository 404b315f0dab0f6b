"""A classifier's test outputs: results.json (test figures of the best checkpoint, the linear baseline's beside
them) and predictions.csv (one row per test example). A finetuning run writes them into its folder,
evaluate.py into an evaluation folder."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bertlab.run_folder import BEST_CHECKPOINT, PREDICTIONS_FILE, RESULTS_FILE, write_json

log = logging.getLogger(__name__)


def write_test_outputs(
    run_dir: Path,
    model: Any,  # tasks.classification.SequenceClassifier after a test pass: its predictions
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
