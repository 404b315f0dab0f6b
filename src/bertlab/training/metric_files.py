"""The run folder's metric files: run_folder.TRAIN_METRICS and run_folder.EVAL_METRICS.

A Lightning logger that routes each logged metric by its prefix (train/, val/, test/) to a CSV with a
fixed header, appending one row per logging step and flushing it at once, so a crash loses at most the
row being written. On resume, rows after the checkpoint's step are dropped first (they were never part of
the state being resumed), so every step appears once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from bertlab.atomic_write import replacing
from bertlab.run_folder import EVAL_METRICS, TRAIN_METRICS


class MetricTable:
    """One CSV file with a fixed set of columns, written row by row."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({key: _format(value) for key, value in row.items()})

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (atomically rewrites the file)."""
        if not self.path.exists():
            return
        with self.path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if int(row["step"]) <= step]
        if len(kept) == len(rows):
            return
        with replacing(self.path, text=True) as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


class RunFolderCSVLogger(Logger):
    """Writes `train/*` metrics to the train table and `val/*`, `test/*` metrics to the eval table."""

    def __init__(
        self,
        run_dir: Path,
        train_columns: list[str],
        eval_columns: list[str],
        write_train: bool = True,
        write_eval: bool = True,
        train_every_n_steps: int = 1,
    ) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.train_every_n_steps = train_every_n_steps
        self.tables = {}
        if write_train:
            self.tables["train"] = MetricTable(
                self.run_dir / TRAIN_METRICS, ["step", "epoch", *train_columns]
            )
        if write_eval:
            self.tables["eval"] = MetricTable(
                self.run_dir / EVAL_METRICS, ["step", "epoch", "stage", *eval_columns]
            )

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @property
    @rank_zero_experiment
    def experiment(self) -> None:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The composed config is already in the run folder (run_folder.HYDRA_CONFIG)."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        by_stage: dict[str, dict[str, Any]] = {}
        for key, value in metrics.items():
            if "/" in key:
                stage, name = key.split("/", 1)
                by_stage.setdefault(stage, {})[name] = value
        for stage, values in by_stage.items():
            table = self.tables.get("train" if stage == "train" else "eval")
            if table is None:
                continue
            if stage == "train" and step is not None and int(step) % self.train_every_n_steps:
                continue  # Lightning also logs the step a run stops at; keep rows on one grid across resumes
            row = {
                "step": None if step is None else int(step),
                "epoch": None if epoch is None else int(epoch),
                **values,
            }
            if stage != "train":
                row["stage"] = stage
            table.append(row)

    def truncate_after(self, step: int) -> None:
        for table in self.tables.values():
            table.truncate_after(step)
