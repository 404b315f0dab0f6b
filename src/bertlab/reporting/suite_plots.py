"""A suite's figures (suite/table.py gives them plain values): the main metric per task and start, and
downstream quality against the pretraining step of kept checkpoints.

Built on an Agg canvas (never pyplot), like reporting/plots.py; matplotlib is imported on first use.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def suite_figure(
    title: str,
    groups: list[str],
    tasks: list[str],
    starts: list[str],
    medians: dict[tuple[str, str], float],
    ranges: dict[tuple[str, str], tuple[float, float]],
    baselines: dict[str, float | None],
    overall: dict[str, float | None],
    baseline_overall: float | None,
) -> Figure:
    """Grouped bars: per task (and overall), one bar per start at its median, the range over seeds as an
    error bar, the linear baseline as a black line across the group."""
    figure = _figure(max(6.4, 1.6 * (len(tasks) + 1) + 0.4 * len(starts)), 4.8)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(starts))
    positions = range(len(tasks) + 1)
    for index, start in enumerate(starts):
        xs, heights, low, high = [], [], [], []
        for position, task in enumerate(tasks):
            if (task, start) in medians:
                median = medians[task, start]
                xs.append(position + (index - (len(starts) - 1) / 2) * width)
                heights.append(median)
                lo, hi = ranges[task, start]
                low.append(median - lo)
                high.append(hi - median)
        if overall.get(start) is not None:
            xs.append(len(tasks) + (index - (len(starts) - 1) / 2) * width)
            heights.append(float(overall[start]))
            low.append(0.0)
            high.append(0.0)
        if xs:
            axes.bar(xs, heights, width * 0.95, yerr=[low, high], capsize=3, label=start)
    for position, value in enumerate([*(baselines.get(task) for task in tasks), baseline_overall]):
        if value is not None:
            axes.hlines(
                value,
                position - 0.42,
                position + 0.42,
                colors="black",
                linewidth=1.5,
                label="linear baseline" if position == 0 else None,
            )
    axes.set_xticks(list(positions), [*groups, "overall\nmean of medians"], fontsize=8)
    axes.set_ylabel("test figure (higher is better)")
    axes.set_title(textwrap.fill(title, 80), fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def steps_figure(
    title: str,
    curves: dict[str, tuple[list[int], list[float | None]]],
    references: dict[str, float],
) -> Figure:
    """Each curve (a run's overall score, and each task's main metric) against the pretraining step of the
    kept checkpoints it started from; horizontal lines for the other starts (scratch, baseline)."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(7.2, 4.8)
    axes = figure.add_subplot()
    for label, (steps, values) in curves.items():
        points = [(step, value) for step, value in zip(steps, values, strict=True) if value is not None]
        if points:
            overall = label.endswith(": overall")
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="o",
                linewidth=2.5 if overall else 1.0,
                alpha=1.0 if overall else 0.6,
                label=label,
            )
    styles = [("--", "dimgrey"), ("-.", "black"), ((0, (5, 1, 1, 1, 1, 1)), "tab:brown"), ("--", "tab:olive")]
    for index, (label, value) in enumerate(references.items()):
        style, colour = (":", "grey") if label.startswith("baseline") else styles[index % len(styles)]
        axes.axhline(value, linestyle=style, color=colour, label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("pretraining step of the checkpoint")
    axes.set_ylabel("test main metric, median over seeds")
    axes.set_title(textwrap.fill(title, 80), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure
