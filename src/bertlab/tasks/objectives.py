"""What a classifier optimises and measures, per problem type (Hugging Face's names):

- single label: cross-entropy; accuracy and macro-F1;
- multi-label: binary cross-entropy per label; micro- and macro-F1 and exact-match accuracy at a decision
  threshold, which each validation chooses (the grid value with the best micro-F1) and the head keeps,
  so the test split and every later prediction use the threshold of the best checkpoint;
- regression: mean squared error on targets standardised by the training split; RMSE, MAE, Pearson,
  Spearman and R2 in the target's units.

Each objective gives the loss, the metric objects (registered by the LightningModule, so they sync across
processes) and the evaluation figures; tasks/classification.py drives them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score
from torchmetrics.regression import (
    MeanAbsoluteError,
    MeanSquaredError,
    PearsonCorrCoef,
    R2Score,
    SpearmanCorrCoef,
)

from bertlab.model.classification_head import MULTI_LABEL, REGRESSION, SINGLE_LABEL

THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))  # 0.05 .. 0.95
# The figures each problem type logs per evaluation (metric-file columns after the loss), the one that
# picks the best checkpoint by default, and the ones training.checkpoint.monitor may name (with direction).
EVAL_FIGURES = {
    SINGLE_LABEL: ["accuracy", "macro_f1"],
    MULTI_LABEL: ["micro_f1", "macro_f1", "exact_match", "threshold"],
    REGRESSION: ["rmse", "mae", "pearson", "spearman", "r2"],
}
MAIN_METRIC = {SINGLE_LABEL: "macro_f1", MULTI_LABEL: "micro_f1", REGRESSION: "spearman"}


def monitor_choices(problem_type: str) -> tuple[str, ...]:
    """The validation metrics a run of `problem_type` may pick its best checkpoint by."""
    figures = [f for f in EVAL_FIGURES[problem_type] if f != "threshold"]
    return tuple(f"val/{name}" for name in (*figures, "loss"))


class MultilabelThresholdSweep(Metric):
    """True/false positives and negatives per label, and exact matches, at every threshold of a grid:
    constant memory, summed across processes; `figures(i)` gives the metrics at threshold i."""

    full_state_update = False

    def __init__(self, num_labels: int, thresholds: tuple[float, ...] = THRESHOLDS) -> None:
        super().__init__()
        self.thresholds = thresholds
        grid = (len(thresholds), num_labels)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(grid, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("exact", default=torch.zeros(len(thresholds), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, probabilities: torch.Tensor, targets: torch.Tensor) -> None:
        grid = torch.tensor(self.thresholds, device=probabilities.device, dtype=probabilities.dtype)
        predicted = probabilities[None] >= grid[:, None, None]  # [thresholds, batch, labels]
        gold = targets.bool()[None]
        self.tp += (predicted & gold).sum(1)
        self.fp += (predicted & ~gold).sum(1)
        self.fn += (~predicted & gold).sum(1)
        self.exact += (predicted == gold).all(-1).sum(1)
        self.count += targets.size(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per threshold: micro-F1, macro-F1 (a label never present nor predicted scores 0, as
        scikit-learn's zero_division=0) and exact-match accuracy."""
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        micro = 2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)).clamp(min=1)
        macro = (2 * tp / (2 * tp + fp + fn).clamp(min=1)).mean(1)
        exact = self.exact.double() / self.count.clamp(min=1)
        return {"micro_f1": micro, "macro_f1": macro, "exact_match": exact}


class Objective:
    """Loss, metrics and figures of one problem type; `head` is the ClassificationHead."""

    problem_type: str

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels

    def loss(self, head: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self) -> Metric | MetricCollection:
        raise NotImplementedError

    def update(self, metrics: Any, head: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> None:
        raise NotImplementedError

    def figures(self, metrics: Any, head: nn.Module, stage: str) -> dict[str, torch.Tensor | float]:
        """The evaluation's figures by name (EVAL_FIGURES); validation may update the head (threshold)."""
        return dict(metrics.compute())

    def prediction(
        self, head: nn.Module, logits: torch.Tensor, targets: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """One test batch's record for predictions.csv: gold, predicted and the scores behind them."""
        raise NotImplementedError


class SingleLabel(Objective):
    problem_type = SINGLE_LABEL

    def loss(self, head, logits, targets):
        return F.cross_entropy(logits.float(), targets)

    def metrics(self):
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(self.num_labels, average="micro"),
                "macro_f1": MulticlassF1Score(self.num_labels, average="macro"),
            }
        )

    def update(self, metrics, head, logits, targets):
        metrics.update(logits.float(), targets)

    def prediction(self, head, logits, targets):
        probabilities = head.predict(logits)
        return {
            "label": targets.cpu(),
            "prediction": probabilities.argmax(-1).cpu(),
            "probabilities": probabilities.cpu(),
        }


class MultiLabel(Objective):
    problem_type = MULTI_LABEL

    def loss(self, head, logits, targets):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())

    def metrics(self):
        return MultilabelThresholdSweep(self.num_labels)

    def update(self, metrics, head, logits, targets):
        metrics.update(head.predict(logits), targets)

    def figures(self, metrics, head, stage):
        per_threshold = metrics.compute()
        if stage == "val":  # choose the threshold: the best micro-F1 (the lowest such threshold)
            index = int(per_threshold["micro_f1"].argmax())
            head.threshold.fill_(THRESHOLDS[index])
        else:
            index = min(range(len(THRESHOLDS)), key=lambda i: abs(THRESHOLDS[i] - float(head.threshold)))
        figures: dict[str, torch.Tensor | float] = {
            name: value[index] for name, value in per_threshold.items()
        }
        figures["threshold"] = round(float(head.threshold), 4)
        return figures

    def prediction(self, head, logits, targets):
        probabilities = head.predict(logits)
        return {
            "label": targets.bool().cpu(),
            "prediction": (probabilities >= head.threshold).cpu(),
            "probabilities": probabilities.cpu(),
        }


class Regression(Objective):
    problem_type = REGRESSION

    def loss(self, head, logits, targets):
        return F.mse_loss(logits.float().squeeze(-1), head.standardise(targets.float()))

    def metrics(self):
        return MetricCollection(
            {
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "pearson": PearsonCorrCoef(),
                "spearman": SpearmanCorrCoef(),
                "r2": R2Score(),
            }
        )

    def update(self, metrics, head, logits, targets):
        metrics.update(head.predict(logits), targets.float())

    def prediction(self, head, logits, targets):
        return {"label": targets.float().cpu(), "prediction": head.predict(logits).cpu()}


OBJECTIVES: dict[str, type[Objective]] = {o.problem_type: o for o in (SingleLabel, MultiLabel, Regression)}


def objective_for(head: nn.Module, num_labels: int) -> Objective:
    """The objective of the head's problem type."""
    return OBJECTIVES[getattr(head, "problem_type", SINGLE_LABEL)](num_labels)
