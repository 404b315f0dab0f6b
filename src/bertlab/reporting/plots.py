"""A run's learning curves as PNGs in `<run folder>/plots/`, drawn from its metric CSVs.

Plots are a by-product: a missing or header-only CSV (the CSV loggers can be off) means fewer plots,
and `write_run_plots` turns any other failure into a warning, so plotting can never fail a training run.
Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so nothing
global (backend, current figure) changes in the calling process. matplotlib is imported on first use:
importing this module stays cheap for the Hydra callback that shares its CSV reading.
"""

from __future__ import annotations

import csv
import logging
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from bertlab.atomic_write import replacing
from bertlab.run_folder import EVAL_METRICS, TRAIN_METRICS
from bertlab.training.distributed import is_main_process

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
STEP_LABEL = "optimizer step"
KEY_COLUMNS = ("step", "epoch", "stage")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metric CSV; [] when the file is missing or holds only a header."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def metric_columns(path: Path) -> list[str]:
    """The metric columns of a metric CSV's header, in file order (step, epoch and stage left out)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    return [name for name in header if name not in KEY_COLUMNS]


def to_float(text: str | None) -> float:
    """A CSV cell as a number; an empty or unreadable cell is NaN, as the metric files mean it."""
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def curve(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where both the step and `column` are numbers."""
    points = [(to_float(row.get("step")), to_float(row.get(column))) for row in rows]
    points = [(step, value) for step, value in points if math.isfinite(step) and not math.isnan(value)]
    return [step for step, _ in points], [value for _, value in points]


def stage_rows(rows: list[dict[str, str]], stage: str) -> list[dict[str, str]]:
    return [row for row in rows if row.get("stage") == stage]


def run_figures(run_dir: Path) -> dict[str, Figure]:
    """One figure per quantity with data, keyed by file stem: loss, learning_rate, then each val metric."""
    run_dir = Path(run_dir)
    train = read_rows(run_dir / TRAIN_METRICS)
    evaluation = read_rows(run_dir / EVAL_METRICS)
    val, test = stage_rows(evaluation, "val"), stage_rows(evaluation, "test")
    figures = {}

    loss_lines = {"train": curve(train, "loss"), "val": curve(val, "loss")}
    test_loss = curve(test, "loss")
    if any(steps for steps, _ in loss_lines.values()) or test_loss[0]:
        figures["loss"] = _figure(run_dir, "loss", loss_lines, test_loss)

    learning_rate = curve(train, "lr")
    if learning_rate[0]:
        figures["learning_rate"] = _figure(run_dir, "learning rate", {"train": learning_rate}, legend=False)

    for column in metric_columns(run_dir / EVAL_METRICS):
        if column == "loss":
            continue
        line, test_point = curve(val, column), curve(test, column)
        if line[0] or test_point[0]:
            figures[column] = _figure(run_dir, column.replace("_", " "), {"val": line}, test_point)
    return figures


def _figure(
    run_dir: Path,
    quantity: str,
    lines: dict[str, tuple[list[float], list[float]]],
    test: tuple[list[float], list[float]] | None = None,
    legend: bool = True,
) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, (steps, values) in lines.items():
        if steps:
            axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=label)
    if test and test[0]:
        axes.scatter(test[0], test[1], marker="*", s=120, color="black", zorder=3, label="test (best model)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(STEP_LABEL)
    axes.set_ylabel(quantity)
    axes.set_title(textwrap.fill(f"{run_dir.name}: {quantity}", 70), fontsize=10)
    axes.grid(alpha=0.3)
    if legend:
        axes.legend()
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as a PNG, atomically."""
    with replacing(path) as handle:
        figure.savefig(handle, format="png", dpi=100)
    return path


def plot_run(run_dir: Path) -> list[Path]:
    """Write every figure of `run_figures` to `<run_dir>/plots/<name>.png`; raises on any failure."""
    figures = run_figures(run_dir)
    if not figures:
        return []
    folder = Path(run_dir) / PLOTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return [save_figure(figure, folder / f"{name}.png") for name, figure in figures.items()]


def write_run_plots(run_dir: Path) -> list[Path]:
    """`plot_run` for the end of a training run: on the main process only, and never raising."""
    if not is_main_process():
        return []
    try:
        return plot_run(run_dir)
    except Exception as error:
        log.warning("could not plot the metrics of %s: %s: %s", run_dir, type(error).__name__, error)
        return []
