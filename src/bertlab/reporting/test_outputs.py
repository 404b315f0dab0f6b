"""A classifier's test outputs: results.json (test figures of the best checkpoint, the linear baseline's beside
them) and predictions.csv (one row per test example). A finetuning run writes them into its folder,
evaluate.py into an evaluation folder.

predictions.csv has `id`, `label` (gold) and `prediction`, then per problem type: one `p_<label>`
probability column per label (single label; multi-label, whose `label` and `prediction` cells list the
labels joined by the run's label separator), or nothing more (regression: values in the target's units).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bertlab.model.classification_head import MULTI_LABEL, REGRESSION
from bertlab.run_folder import BEST_CHECKPOINT, PREDICTIONS_FILE, RESULTS_FILE, write_json

log = logging.getLogger(__name__)


def write_test_outputs(
    run_dir: Path,
    model: Any,  # tasks.classification.SequenceClassifier after a test pass: its predictions
    trainer: L.Trainer,
    labels: list,
    baseline: dict[str, Any] | None = None,
    label_separator: str = ",",
) -> None:
    """RESULTS_FILE (test figures of the best checkpoint, and the linear baseline's beside them) and
    PREDICTIONS_FILE (one row per test example)."""
    problem_type = model.problem_type
    results: dict[str, Any] = {
        key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("test/")
    }
    results.setdefault("checkpoint", str(BEST_CHECKPOINT))
    results["problem_type"] = problem_type
    head = model.head
    if problem_type == MULTI_LABEL:
        results["threshold"] = round(float(head.threshold), 4)
    if problem_type == REGRESSION:
        results["target_scale"] = {"mean": float(head.target_mean), "std": float(head.target_std)}
    if baseline is not None:
        results["baseline"] = baseline
        shown = [key for key in baseline if key.startswith("test/")]
        log.info(
            "Test %s; %s baseline: %s (%.1f s)",
            ", ".join(f"{key.removeprefix('test/')} {results.get(key, float('nan')):.4f}" for key in shown),
            baseline["model"],
            ", ".join(f"{key.removeprefix('test/')} {baseline[key]:.4f}" for key in shown),
            baseline["seconds"],
        )
    write_json(run_dir / RESULTS_FILE, results)
    write_predictions(run_dir / PREDICTIONS_FILE, model.predictions, labels, problem_type, label_separator)


def write_predictions(
    path: Path,
    predictions: list[dict[str, torch.Tensor]],
    labels: list,
    problem_type: str,
    label_separator: str = ",",
) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if problem_type == REGRESSION:
            writer.writerow(["id", "label", "prediction"])
            for batch in predictions:
                for index, gold, predicted in zip(
                    batch["index"].tolist(),
                    batch["label"].tolist(),
                    batch["prediction"].tolist(),
                    strict=True,
                ):
                    writer.writerow([index, f"{gold:.6g}", f"{predicted:.6f}"])
            return
        writer.writerow(["id", "label", "prediction", *[f"p_{label}" for label in labels]])
        for batch in predictions:
            for index, gold, predicted, probabilities in zip(
                batch["index"].tolist(),
                batch["label"].tolist(),
                batch["prediction"].tolist(),
                batch["probabilities"].tolist(),
                strict=True,
            ):
                if problem_type == MULTI_LABEL:
                    gold_text = label_separator.join(str(labels[i]) for i, on in enumerate(gold) if on)
                    predicted_text = label_separator.join(
                        str(labels[i]) for i, on in enumerate(predicted) if on
                    )
                else:
                    gold_text, predicted_text = labels[gold], labels[predicted]
                writer.writerow([index, gold_text, predicted_text, *[f"{p:.6f}" for p in probabilities]])
