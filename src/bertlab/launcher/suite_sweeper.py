"""The suite's Hydra sweeper (hydra/sweeper=suite, which +experiment=suite selects): a suite's jobs, task x
seed x start, launched as one multirun by whichever launcher is chosen (basic, joblib, slurm, submitit).

Hydra's side only: the suite's logic is bertlab/suite/ (plain Python). Before any job starts the sweeper
reads and checks the suite, its starts and its tasks' files, composes one job of every task and start (a
config error is Hydra's), and checks that each finished job ran with the settings this launch gives it; a
problem ends the launch with one `Error:` line, exit status 2, nothing created. Then it launches the jobs that have not finished (a finished one's folder is not touched; an
interrupted one continues, is_resume=auto), writes suite.csv, suite.md and the plots, and prints the table.
A failed job leaves its cells empty and the command exits 1: run it again to retry.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bertlab.errors import BertlabError
from bertlab.finetuning import check_finetuning
from bertlab.launcher.hydra_errors import one_line
from bertlab.launcher.run_folder_guard import refuse_sweep
from bertlab.reporting.sweep_summary import error_text
from bertlab.suite.jobs import FINISHED, NEW, Job, check_finished_job, job_state, suite_jobs
from bertlab.suite.spec import Suite, check_task_data, parse_suite
from bertlab.suite.starts import KEY as STARTS_KEY
from bertlab.suite.starts import Start, check_start, parse_starts
from bertlab.suite.table import read_table, table_markdown, write_suite_table

log = logging.getLogger(__name__)


class SuiteSweeper(Sweeper):
    """Launches a suite's unfinished jobs, then writes and prints its table (Hydra finds it through
    hydra_plugins/bertlab_suite, which delegates here)."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.launcher is not None
        suite_dir = Path(os.path.abspath(self.config.hydra.sweep.dir))
        try:
            suite, starts, command = self._read(arguments)
            suite = self._composed(suite, starts, command)
        except BertlabError as error:
            refuse_sweep(error, suite_dir)
        jobs = suite_jobs(suite, starts)
        states = {job.number: job_state(suite_dir, job) for job in jobs}
        try:
            for job in jobs:
                if states[job.number] == FINISHED:
                    check_finished_job(suite_dir, job, [*job.overrides(suite), *command])
        except BertlabError as error:
            refuse_sweep(error, suite_dir)
        pending = [job for job in jobs if states[job.number] != FINISHED]
        print(
            f"Suite {suite.name}: {len(suite.tasks)} task(s) x {len(suite.seeds)} seed(s) x {len(starts)} "
            f"start(s) = {len(jobs)} jobs in {suite_dir}; {len(jobs) - len(pending)} finished already, "
            f"{sum(states[job.number] == NEW for job in pending)} to start, "
            f"{sum(states[job.number] != NEW for job in pending)} to continue",
            flush=True,
        )
        returns: list[JobReturn] = []
        for group in consecutive(pending):
            batch = [[*job.overrides(suite), *command] for job in group]
            returns += self.launcher.launch(batch, initial_job_idx=group[0].number)
        failed = [
            (job, ret) for job, ret in zip(pending, returns, strict=True) if ret.status != JobStatus.COMPLETED
        ]
        table = read_table(suite_dir, suite, starts, jobs)
        written = write_suite_table(suite_dir, table)
        print(
            f"\n{table_markdown(table)}\nWritten: {', '.join(path.name for path in written)} in {suite_dir}"
        )
        if failed:
            for job, ret in failed:
                reason = error_text(ret._return_value or "the job did not complete")  # return_value re-raises
                print(f"Failed: {job.folder}: {reason}", file=sys.stderr)
            print(
                f"{len(failed)} of {len(pending)} jobs failed (their folders say why: run.log); run the same "
                f"command again to retry them",
                file=sys.stderr,
            )
            raise SystemExit(1)
        return returns

    def _read(self, arguments: list[str]) -> tuple[Suite, list[Start], list[str]]:
        """The suite, its starts (a sweep of suite.starts is its list) and the command's other overrides,
        each checked: the starts exist, the tasks' files exist and hold their fields."""
        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        command, swept_starts = [], None
        for item in parser.parse_overrides(arguments):
            key = item.key_or_group
            if item.is_sweep_override():
                if key != STARTS_KEY or not item.is_discrete_sweep():
                    raise BertlabError(
                        "a suite sweeps its own tasks, seeds and starts; give this key one value (a suite "
                        "per value), or list starts as suite.starts=[a,b]",
                        key,
                    )
                swept_starts = [str(value) for value in item.sweep_iterator()]
                continue
            command.append(str(item.input_line))
        values = OmegaConf.to_container(self.config.suite, resolve=True)
        assert isinstance(values, dict)
        values.pop("job", None)
        if swept_starts is not None:
            values["starts"] = swept_starts
            command.append(f"{STARTS_KEY}=[{','.join(repr(text) for text in swept_starts)}]")
        suite = parse_suite(str(self.config.hydra.runtime.choices.get("suite")), values)
        starts = parse_starts(list(suite.starts), suite.scratch_architecture)
        architectures = set(self.hydra_context.config_loader.get_group_options("architecture"))
        for start in starts:
            check_start(start, Path(str(self.config.experiment.output_dir)), architectures)
        for task in suite.tasks:
            check_task_data(task)
        return suite, starts, command

    def _composed(self, suite: Suite, starts: list[Start], command: list[str]) -> Suite:
        """Compose (and check) one job of every task and start as its launcher will; the suite with each
        task's text pairs read from its composed data."""
        assert self.config is not None and self.hydra_context is not None
        tasks = []
        for task in suite.tasks:
            for start in starts:
                job = Job(0, task, start, suite.seeds[0])
                cfg = self._compose(job, [*job.overrides(suite), *command])
            tasks.append(replace(task, pairs=bool(cfg.data.get("text_pair_field"))))
        return replace(suite, tasks=tuple(tasks))

    def _compose(self, job: Job, overrides: list[str]) -> DictConfig:
        assert self.config is not None and self.hydra_context is not None
        where = f"(job {job.folder} of suite {self.config.hydra.runtime.choices.get('suite')})"
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            check_finetuning(cfg)
        except (HydraException, OmegaConfBaseException) as error:
            raise BertlabError(f"{one_line(error)} {where}") from None
        except BertlabError as error:
            raise BertlabError(f"{error.message} {where}", error.key) from None
        return cfg


def consecutive(jobs: Sequence[Job]) -> Iterator[list[Job]]:
    """The jobs in runs of consecutive numbers: each run is launched as one batch numbered from its first,
    so a job keeps its Hydra job number whichever jobs a relaunch skips."""
    group: list[Job] = []
    for job in jobs:
        if group and job.number != group[-1].number + 1:
            yield group
            group = []
        group.append(job)
    if group:
        yield group
