"""One table and one figure per sweep: `summary.csv` and `summary.png` in the sweep folder.

Hydra's sweeper raises after a batch that had a failed job, before `on_multirun_end`, and launchers may
run jobs in parallel processes or on other machines. So each job leaves its own record
(`<job folder>/job-result.json`), and the summary is rebuilt from every record found under the sweep
folder (under a file lock, written atomically) as each job starts and ends, and once more when the sweep
ends. A job's record says `running` from its start until Hydra's `on_job_end` replaces it; a job killed
outright (out of memory, SIGKILL, time limit) never gets there, so once the sweep has ended a `running`
record is shown as `died`. A summary problem is logged, never raised: it must not fail a job.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bertlab.atomic_write import replacing
from bertlab.reporting.plots import (
    STEP_LABEL,
    curve,
    read_rows,
    save_figure,
    to_float,
)
from bertlab.run_folder import EVAL_METRICS, RESULTS_FILE, TRAIN_METRICS

try:
    import fcntl
except ImportError:  # POSIX only; without it summaries are still atomic, only not serialised
    fcntl = None

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

RECORD_FILE = "job-result.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PNG = "summary.png"
LOCK_FILE = ".summary.lock"
ERROR_LIMIT = 500
# How a job ended; "running" until on_job_end, shown as "died" if the sweep ends without it.
COMPLETED, FAILED, INTERRUPTED, RUNNING, DIED = "completed", "failed", "interrupted", "running", "died"
DIED_ERROR = "the job ended without reporting (killed, out of memory or out of time?)"
# bertlab.training.interruption.TrainingInterrupted, matched by name: importing it would load Lightning.
INTERRUPTION = "TrainingInterrupted"
FIXED_COLUMNS = (
    "job",
    "status",
    "best",
    "overrides",
    "monitor",
    "best_value",
    "final_step",
    "final_train_loss",
    "error",
    "run_dir",
)


def error_text(error: BaseException | str) -> str:
    """`Type: message` on one line, cut to ERROR_LIMIT characters, for a table cell."""
    text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    text = " ".join(text.split())
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 3] + "..."


def final_metrics(run_dir: Path) -> dict[str, str]:
    """The last step, last train loss, last `val` row (`final_val_<col>`), `test` row (`test_<col>`) and, for
    a finetune, its linear baseline's test figures (`baseline_test_<col>`)."""
    train = read_rows(run_dir / TRAIN_METRICS)
    evaluation = read_rows(run_dir / EVAL_METRICS)
    steps = [to_float(row.get("step")) for row in train + evaluation]
    steps = [step for step in steps if math.isfinite(step)]
    losses = [row["loss"] for row in train if row.get("loss")]
    metrics = {
        "final_step": str(int(max(steps))) if steps else "",
        "final_train_loss": losses[-1] if losses else "",
    }
    for stage, prefix in (("val", "final_val_"), ("test", "test_")):
        rows = [row for row in evaluation if row.get("stage") == stage]
        if rows:
            metrics.update(
                {
                    f"{prefix}{name}": value
                    for name, value in rows[-1].items()
                    if name not in ("step", "epoch", "stage")
                }
            )
    results = run_dir / RESULTS_FILE
    baseline = json.loads(results.read_text()).get("baseline", {}) if results.is_file() else {}
    for name, value in baseline.items():  # a finetune's linear baseline, beside its test row
        if name.startswith("test/"):
            metrics[f"baseline_{name.replace('/', '_')}"] = repr(value)
    return metrics


def _number_text(value: Any) -> str:
    if value is None:
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return ""


def record_job(
    run_dir: Path,
    job: int,
    status: str,
    overrides: Sequence[str],
    monitor: str,
    mode: str,
    value: float | None = None,
    error: BaseException | str | None = None,
) -> Path:
    """Write `<run_dir>/job-result.json`: how the job ended and its final metrics; returns its path.

    `status` is `running` (written as the job starts, without metrics), `completed`, `failed` or
    `interrupted`; `value` is what the run returned (its best `monitor` value, better when lower for
    `mode=min`, higher for `mode=max`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "job": int(job),
        "status": status,
        "overrides": list(overrides),
        "monitor": monitor,
        "mode": mode,
        "best_value": _number_text(value),
        "error": "" if error is None else error_text(error),
        "metrics": {} if status == RUNNING else final_metrics(run_dir),
    }
    path = run_dir / RECORD_FILE
    with replacing(path, text=True) as handle:
        handle.write(json.dumps(record, indent=2) + "\n")
    return path


def read_records(sweep_dir: Path, sweep_ended: bool = False) -> list[dict[str, Any]]:
    """Every job record under `sweep_dir`, by job number, each with `run_dir` relative to `sweep_dir`.

    With `sweep_ended`, a job still `running` never reported its end: it is given as `died`.
    """
    records = []
    for path in sorted(Path(sweep_dir).rglob(RECORD_FILE)):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            log.warning("skipping unreadable job record %s: %s", path, error)
            continue
        record["run_dir"] = str(path.parent.relative_to(sweep_dir))
        if sweep_ended and record.get("status") == RUNNING:
            record.update(status=DIED, error=DIED_ERROR)
        records.append(record)
    return sorted(records, key=lambda record: record.get("job", -1))


def best_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed job with the best finite value; None if there is none or the jobs' monitors differ."""
    candidates = [
        record
        for record in records
        if record.get("status") == COMPLETED and math.isfinite(to_float(record.get("best_value")))
    ]
    if not candidates:
        return None
    if len({(record.get("monitor"), record.get("mode")) for record in candidates}) > 1:
        # A suite's tasks monitor their own metrics by design; no job is best there, and nothing is wrong.
        log.debug("sweep jobs monitor different metrics; no job is marked best")
        return None
    choose = max if candidates[0].get("mode") == "max" else min
    return choose(candidates, key=lambda record: to_float(record["best_value"]))


def summary_table(records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns (fixed ones first, then every metric column any job has) and one row per job."""
    best = best_record(records)
    rows, metric_names = [], []
    for record in records:
        metrics = record.get("metrics", {})
        metric_names += [name for name in metrics if name not in FIXED_COLUMNS and name not in metric_names]
        rows.append(
            {
                **metrics,
                "job": record.get("job"),
                "status": record.get("status"),
                "best": "true" if record is best else "",
                "overrides": " ".join(record.get("overrides", [])),
                "monitor": record.get("monitor"),
                "best_value": record.get("best_value"),
                "error": record.get("error"),
                "run_dir": record["run_dir"],
            }
        )
    metric_names.sort(key=lambda name: not name.startswith("final_val_"))
    return [*FIXED_COLUMNS, *metric_names], rows


def final_value(record: dict[str, Any]) -> float:
    """The job's last validation value of its monitored metric (`val/<name>`), else its best value."""
    monitor = str(record.get("monitor") or "")
    value = math.nan
    if monitor.startswith("val/"):
        value = to_float(record.get("metrics", {}).get(f"final_val_{monitor.removeprefix('val/')}"))
    return value if math.isfinite(value) else to_float(record.get("best_value"))


def summary_figure(sweep_dir: Path, records: list[dict[str, Any]]) -> Figure:
    """Left: every completed job's validation loss curve; right: each job's final monitored value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12.8, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    curves, bars = figure.subplots(1, 2)
    figure.suptitle(f"sweep {Path(sweep_dir).name}", fontsize=11)
    _draw_val_loss(curves, Path(sweep_dir), records)
    _draw_values(bars, records)
    return figure


def _draw_val_loss(axes: Any, sweep_dir: Path, records: list[dict[str, Any]]) -> None:
    from matplotlib.ticker import MaxNLocator

    for record in records:
        if record.get("status") != COMPLETED:
            continue
        rows = read_rows(sweep_dir / record["run_dir"] / EVAL_METRICS)
        steps, losses = curve([row for row in rows if row.get("stage") == "val"], "loss")
        if steps:
            axes.plot(steps, losses, marker="." if len(steps) < 50 else None, label=f"job{record['job']}")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(STEP_LABEL)
    axes.set_ylabel("validation loss")
    axes.set_title("validation loss per job", fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[1]:
        axes.legend(fontsize="small")


def _draw_values(axes: Any, records: list[dict[str, Any]]) -> None:
    """A bar per completed job at its final value, the best job (by best value) marked; every other job
    gets a note (its status, or `no value`) instead of a bar."""
    best = best_record(records)
    monitors = {record.get("monitor") for record in records if record.get("monitor")}
    monitor = monitors.pop() if len(monitors) == 1 else "monitored value"
    for position, record in enumerate(records):
        value = final_value(record)
        status = str(record.get("status"))
        if status != COMPLETED:
            value, note, colour = 0.0, status, "grey" if status == RUNNING else "tab:red"
        elif not math.isfinite(value):
            value, note, colour = 0.0, "no value", "grey"
        else:
            note, colour = ("best\n" if record is best else "") + f"{value:.4g}", "black"
        axes.bar(
            position,
            value,
            color="tab:orange" if record is best else "tab:blue",
            edgecolor="black" if record is best else "none",
        )
        axes.annotate(
            note,
            (position, max(value, 0.0)),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            color=colour,
            fontsize=8,
        )
    axes.set_xticks(range(len(records)), [f"job{record.get('job')}" for record in records])
    axes.set_xlabel("job")
    axes.set_ylabel(f"final {monitor}")
    title = f"final {monitor} per job" + (f" (best: job{best['job']})" if best else "")
    axes.set_title(textwrap.fill(title, 60), fontsize=10)
    axes.margins(y=0.15)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_sweep_summary(sweep_dir: Path, sweep_ended: bool = False) -> tuple[Path, Path]:
    """Rebuild `summary.csv` and `summary.png` in `sweep_dir` from the job records found under it."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _locked(sweep_dir / LOCK_FILE):
        records = read_records(sweep_dir, sweep_ended)
        columns, rows = summary_table(records)
        table = sweep_dir / SUMMARY_CSV
        with replacing(table, text=True) as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        figure = save_figure(summary_figure(sweep_dir, records), sweep_dir / SUMMARY_PNG)
    return table, figure
