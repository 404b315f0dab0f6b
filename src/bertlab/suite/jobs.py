"""A suite's jobs: one finetuning run per task x seed x start, each in a folder named by what it is.

    <experiment.output_dir>/suites/<suite>/<start>/<task>/seed<N>/     a complete finetuning run folder

The names are deterministic, so the same command finds its jobs again: a finished job (run.json says
completed, results.json is there) is skipped and its folder left untouched; any other is launched with
training.resume.is_resume=auto, which continues an interrupted run and starts a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bertlab.errors import BertlabError
from bertlab.run_folder import COMPLETED, RESULTS_FILE, read_run_status
from bertlab.suite.spec import Suite, Task, override
from bertlab.suite.starts import SCRATCH, Start

FINISHED, STARTED, NEW = "finished", "started", "new"
JOB_OVERRIDES = Path(".hydra", "overrides.yaml")  # what Hydra records of the overrides a job ran with
# Overrides that choose which jobs a launch runs, or where, without changing what a job does.
NOT_THE_JOB = ("suite.", "+suite.", "++suite.", "~suite.", "experiment.output_dir=")


@dataclass(frozen=True)
class Job:
    """One finetune of a suite; `number` is its place in the suite's order (Hydra's job number)."""

    number: int
    task: Task
    start: Start
    seed: int

    @property
    def folder(self) -> Path:
        """Relative to the suite folder."""
        return Path(self.start.label, self.task.name, f"seed{self.seed}")

    def overrides(self, suite: Suite) -> list[str]:
        """What makes the job this task, seed and start (the command's own overrides go after these)."""
        overrides = [
            override("suite.job", str(self.folder)),
            f"experiment.seed={self.seed}",  # initialisation and, through data.seed, the batch order
            f"++data.split_seed={suite.split_seed}",  # val/test carved off by ratio: one split for every job
            *self.start.overrides,
        ]
        if self.start.kind == SCRATCH:
            overrides += suite.scratch_overrides
        return [*overrides, *suite.overrides, *self.task.launch_overrides()]


def suite_jobs(suite: Suite, starts: list[Start]) -> list[Job]:
    """Every job, seed by seed: the first seed of every task and start comes first, so a suite stopped
    halfway has already measured each of them once."""
    combinations = [(seed, start, task) for seed in suite.seeds for start in starts for task in suite.tasks]
    return [Job(number, task, start, seed) for number, (seed, start, task) in enumerate(combinations)]


def job_state(suite_dir: Path, job: Job) -> str:
    """finished (nothing to do), started (a folder from an earlier attempt: continue it) or new."""
    run_dir = Path(suite_dir) / job.folder
    if read_run_status(run_dir) == COMPLETED and (run_dir / RESULTS_FILE).is_file():
        return FINISHED
    return STARTED if run_dir.exists() else NEW


def job_settings(overrides: Sequence[str]) -> list[str]:
    """The overrides that make a job what it is (not which jobs a launch runs, nor where)."""
    return [item for item in overrides if not item.startswith(NOT_THE_JOB)]


def check_finished_job(suite_dir: Path, job: Job, overrides: Sequence[str]) -> None:
    """A finished job is skipped, so it must be the job this launch asks for: refuse one that ran with other
    settings (the suite or the command changed since), rather than put its figures in this table."""
    recorded_file = Path(suite_dir) / job.folder / JOB_OVERRIDES
    try:
        recorded = job_settings(yaml.safe_load(recorded_file.read_text()) or [])
    except (OSError, yaml.YAMLError):
        return  # not written by a suite launch (no record): nothing to compare
    asked = job_settings(overrides)
    if recorded == asked:
        return
    added = [item for item in asked if item not in recorded]
    dropped = [item for item in recorded if item not in asked]
    change = "; ".join(
        part
        for part in (f"this launch adds {added}" if added else "", f"drops {dropped}" if dropped else "")
        if part
    )
    raise BertlabError(
        f"job {str(job.folder)!r} finished with other settings ({change or 'its overrides in another order'}); "
        f"nothing was changed. Keep its results under another suite name (a copy of the suite file) or "
        f"experiment.output_dir, or delete {str(Path(suite_dir) / job.folder)!r} to run it again",
        "suite",
    )
