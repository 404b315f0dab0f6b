"""A suite's one table, read from its finished jobs' results.json: suite.csv, suite.md and the plots.

Per task and start, the median and the range over seeds of every test figure (the task's main metric first,
and named), the linear baseline beside it, and one overall score per start: the mean of the task medians
of the main metrics, as GLUE's average. The table is a function of the job folders only (no timings, no
paths): the same results give the same bytes whether the jobs ran in one go, in parallel, or across a
kill and a relaunch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertlab.atomic_write import replacing
from bertlab.reporting.plots import save_figure
from bertlab.reporting.suite_plots import steps_figure, suite_figure
from bertlab.run_folder import RESULTS_FILE, RUN_INFO_FILE
from bertlab.suite.jobs import FINISHED, Job, job_state
from bertlab.suite.spec import Suite, Task
from bertlab.suite.starts import Start

SUITE_CSV, SUITE_MD, SUITE_PNG, STEPS_PNG = "suite.csv", "suite.md", "suite.png", "steps.png"
CSV_COLUMNS = ("task", "shape", "metric", "main", "start", "step", "n", "median", "min", "max", "baseline")
OVERALL = "overall"
OVERALL_METRIC = "mean of the task medians"


@dataclass(frozen=True)
class Spread:
    """A figure over seeds (in seed order)."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass
class SuiteTable:
    """What the finished jobs measured: figures per (task, start label, metric), baselines per (task, metric)."""

    suite: Suite
    starts: list[Start]
    figures: dict[tuple[str, str, str], Spread] = field(default_factory=dict)
    baselines: dict[tuple[str, str], Spread] = field(default_factory=dict)
    finished: int = 0
    jobs: int = 0
    cpu_threads: set[int] = field(default_factory=set)  # of the finished jobs that trained on a CPU
    recorded_steps: dict[str, int] = field(default_factory=dict)  # a run's best/last start: its step

    def step(self, start: Start) -> int | None:
        """The pretraining step a start's checkpoint was at: a kept one's by name, best/last's as recorded."""
        return start.step if start.step is not None else self.recorded_steps.get(start.label)

    def cell(self, task: Task, start: Start, metric: str) -> Spread | None:
        return self.figures.get((task.name, start.label, metric))

    def baseline(self, task: Task, metric: str) -> float | None:
        spread = self.baselines.get((task.name, metric))
        return spread.median if spread else None

    def overall(self, start: Start) -> tuple[float | None, int]:
        """The mean of the task medians of the main metrics, and over how many tasks (all, once finished)."""
        medians = [
            spread.median
            for task in self.suite.tasks
            if (spread := self.cell(task, start, task.main_metric)) is not None
        ]
        return (statistics.fmean(medians) if medians else None), len(medians)

    def baseline_overall(self) -> tuple[float | None, int]:
        values = [
            value for task in self.suite.tasks if (value := self.baseline(task, task.main_metric)) is not None
        ]
        return (statistics.fmean(values) if values else None), len(values)


def read_table(suite_dir: Path, suite: Suite, starts: list[Start], jobs: Sequence[Job]) -> SuiteTable:
    """The figures of every finished job under `suite_dir` (run.json completed, results.json there)."""
    table = SuiteTable(suite, list(starts), jobs=len(jobs))
    values: dict[tuple[str, str, str], list[float]] = {}
    baselines: dict[tuple[str, str], list[float]] = {}
    for job in sorted(jobs, key=lambda job: (job.start.label, job.task.name, job.seed)):
        if job_state(suite_dir, job) != FINISHED:
            continue
        results = json.loads((Path(suite_dir) / job.folder / RESULTS_FILE).read_text())
        table.finished += 1
        info = _run_info(Path(suite_dir) / job.folder)
        threads = info.get("cpu_threads")
        if info.get("accelerator") == "cpu" and isinstance(threads, int):
            table.cpu_threads.add(threads)
        step = (info.get("pretrained_from") or {}).get("step")
        if job.start.run is not None and job.start.step is None and isinstance(step, int):
            table.recorded_steps[job.start.label] = step
        for metric in job.task.metrics:
            figure = results.get(f"test/{metric}")
            if figure is not None:
                values.setdefault((job.task.name, job.start.label, metric), []).append(float(figure))
            baseline = (results.get("baseline") or {}).get(f"test/{metric}")
            if baseline is not None:
                baselines.setdefault((job.task.name, metric), []).append(float(baseline))
    table.figures = {key: Spread(tuple(found)) for key, found in values.items()}
    table.baselines = {key: Spread(tuple(found)) for key, found in baselines.items()}
    return table


def _run_info(run_dir: Path) -> dict:
    try:
        info = json.loads((run_dir / RUN_INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def table_csv(table: SuiteTable) -> str:
    """suite.csv: one row per task, metric and start, then one overall row per start. `n` counts the seeds
    measured (the tasks measured, on an overall row); `step` is the pretraining step of a run's checkpoint."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for task in table.suite.tasks:
        for metric in task.metrics:
            for start in table.starts:
                spread = table.cell(task, start, metric)
                writer.writerow(
                    [
                        task.name,
                        task.shape,
                        metric,
                        str(metric == task.main_metric).lower(),
                        start.label,
                        "" if table.step(start) is None else table.step(start),
                        len(spread.values) if spread else 0,
                        *(
                            _number(getattr(spread, a) if spread else None, 4)
                            for a in ("median", "low", "high")
                        ),
                        _number(table.baseline(task, metric), 4),
                    ]
                )
    for start in table.starts:
        score, tasks = table.overall(start)
        writer.writerow(
            [
                OVERALL,
                "",
                OVERALL_METRIC,
                "true",
                start.label,
                "" if table.step(start) is None else table.step(start),
                tasks,
                _number(score, 4),
                "",
                "",
                _number(table.baseline_overall()[0], 4),
            ]
        )
    return buffer.getvalue()


def _spread_text(spread: Spread | None, seeds: int, bold: bool) -> str:
    if spread is None:
        return "-"
    median = f"**{_number(spread.median, 3)}**" if bold else _number(spread.median, 3)
    details = []
    if len(spread.values) > 1:
        details.append(f"{_number(spread.low, 3)}-{_number(spread.high, 3)}")
    if len(spread.values) < seeds:
        details.append(f"{len(spread.values)} of {seeds} seeds")
    return f"{median} ({'; '.join(details)})" if details else median


def _best(values: list[float | None]) -> float | None:
    """The value to set in bold: the highest of two or more that differ (None when all are equal)."""
    finite = [value for value in values if value is not None and not math.isnan(value)]
    return max(finite) if len(finite) > 1 and max(finite) > min(finite) else None


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def table_markdown(table: SuiteTable) -> str:
    """suite.md: the main metric of each task per start (the best start's median in bold), the overall score,
    then every figure."""
    suite, starts, seeds = table.suite, table.starts, len(table.suite.seeds)
    lines = [f"# Suite {suite.name}", ""]
    if suite.description:
        lines += [suite.description, ""]
    lines += [
        f"{_count(len(suite.tasks), 'task')} x {_count(seeds, 'seed')} x {_count(len(starts), 'start')}; jobs "
        f"finished: {table.finished} of "
        f"{table.jobs}. Test figures: the median over seeds (their range in brackets) of each task's main "
        f"metric; baseline: the linear baseline (TF-IDF) fitted on the same training split; overall: the mean "
        f"of the task medians, as GLUE's average.",
        "",
    ]
    if len(table.cpu_threads) > 1:
        counts = " and ".join(str(count) for count in sorted(table.cpu_threads))
        lines += [
            f"The jobs trained with {counts} CPU threads (a parallel launcher gives each worker a share of "
            f"the cores): a sum over more threads runs in another order, so these figures are not "
            f"bit-comparable with one another; `training.cpu_threads=<n>` on the command pins the count.",
            "",
        ]
    lines += [
        "| task | shape | main metric | baseline | " + " | ".join(start.label for start in starts) + " |",
        "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in starts) + " |",
    ]
    for task in suite.tasks:
        spreads = [table.cell(task, start, task.main_metric) for start in starts]
        best = _best([spread.median if spread else None for spread in spreads])
        cells = [_spread_text(s, seeds, s is not None and s.median == best) for s in spreads]
        baseline = _number(table.baseline(task, task.main_metric), 3) or "-"
        lines.append(
            f"| {task.name} | {task.shape} | {task.main_metric} | {baseline} | {' | '.join(cells)} |"
        )
    scores = [table.overall(start) for start in starts]
    best = _best([score for score, _ in scores])
    cells = []
    for score, tasks in scores:
        text = _number(score, 3) or "-"
        text = f"**{text}**" if score is not None and score == best else text
        cells.append(
            text
            + (
                f" ({tasks} of {len(suite.tasks)} tasks)"
                if score is not None and tasks < len(suite.tasks)
                else ""
            )
        )
    baseline = _number(table.baseline_overall()[0], 3) or "-"
    lines += [f"| {OVERALL} | | {OVERALL_METRIC} | {baseline} | {' | '.join(cells)} |", ""]
    lines += [
        "Every figure (median over seeds, range in brackets):",
        "",
        "| task | metric | baseline | " + " | ".join(start.label for start in starts) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in starts) + " |",
    ]
    for task in suite.tasks:
        for metric in task.metrics:
            cells = [_spread_text(table.cell(task, start, metric), seeds, False) for start in starts]
            baseline = _number(table.baseline(task, metric), 3) or "-"
            lines.append(f"| {task.name} | {metric} | {baseline} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def write_suite_table(suite_dir: Path, table: SuiteTable) -> list[Path]:
    """suite.csv, suite.md, suite.png (and steps.png when the starts include kept checkpoints of a run),
    each written whole (atomically); returns the paths."""
    suite_dir = Path(suite_dir)
    suite_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((SUITE_CSV, table_csv(table)), (SUITE_MD, table_markdown(table))):
        with replacing(suite_dir / name, text=True) as handle:
            handle.write(text)
        written.append(suite_dir / name)
    written.append(save_figure(suite_figure(**_plot_values(table)), suite_dir / SUITE_PNG))
    along = steps_along_runs(table.starts, table.step)
    if along:
        written.append(save_figure(steps_figure(**_steps_values(table, along)), suite_dir / STEPS_PNG))
    return written


def steps_along_runs(
    starts: list[Start], step_of: Callable[[Start], int | None] = lambda start: start.step
) -> dict[str, list[Start]]:
    """Per pretraining run with two or more kept checkpoints among the starts, those starts by step, with
    the run's best and last checkpoints where their step is known (`step_of`) and not a kept one's."""
    runs: dict[str, list[Start]] = {}
    for start in starts:
        if start.step is not None:
            runs.setdefault(str(start.run), []).append(start)
    runs = {run: found for run, found in runs.items() if len(found) > 1}
    for start in starts:
        step = step_of(start)
        known = start.run in runs and start.step is None and step is not None
        if known and step not in {step_of(other) for other in runs[str(start.run)]}:
            runs[str(start.run)].append(start)
    return {run: sorted(found, key=lambda s: step_of(s) or 0) for run, found in runs.items()}


def _plot_values(table: SuiteTable) -> dict:
    tasks = table.suite.tasks
    medians, ranges = {}, {}
    for task in tasks:
        for start in table.starts:
            spread = table.cell(task, start, task.main_metric)
            if spread is not None:
                medians[task.name, start.label] = spread.median
                ranges[task.name, start.label] = (spread.low, spread.high)
    return {
        "title": f"suite {table.suite.name}: test main metric, median and range over seeds",
        "groups": [f"{task.name}\n{task.main_metric}" for task in tasks],
        "tasks": [task.name for task in tasks],
        "starts": [start.label for start in table.starts],
        "medians": medians,
        "ranges": ranges,
        "baselines": {task.name: table.baseline(task, task.main_metric) for task in tasks},
        "overall": {start.label: table.overall(start)[0] for start in table.starts},
        "baseline_overall": table.baseline_overall()[0],
    }


def _steps_values(table: SuiteTable, along: dict[str, list[Start]]) -> dict:
    curves: dict[str, tuple[list[int], list[float | None]]] = {}
    for run, starts in along.items():
        steps = [int(table.step(start) or 0) for start in starts]
        curves[f"{run}: overall"] = (steps, [table.overall(start)[0] for start in starts])
        for task in table.suite.tasks:
            values = [table.cell(task, start, task.main_metric) for start in starts]
            curves[f"{run}: {task.name} ({task.main_metric})"] = (
                steps,
                [spread.median if spread else None for spread in values],
            )
    plotted = {start.label for starts in along.values() for start in starts}
    references = {
        f"{start.label}: overall": table.overall(start)[0]
        for start in table.starts
        if start.label not in plotted
    }
    references["baseline: overall"] = table.baseline_overall()[0]
    return {
        "title": f"suite {table.suite.name}: downstream quality along pretraining",
        "curves": curves,
        "references": {label: value for label, value in references.items() if value is not None},
    }
