"""Hydra callbacks for sweeps: Ctrl-C ends the whole sweep; the sweep's summary.csv and summary.png are kept
up to date as jobs start and end (reporting/sweep_summary.py writes them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bertlab.reporting.sweep_summary import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    INTERRUPTION,
    RUNNING,
    record_job,
    write_sweep_summary,
)
from bertlab.training.distributed import is_main_process

log = logging.getLogger(__name__)


class StopSweepOnCtrlC(Callback):
    """Ctrl-C during a sweep ends the sweep, not only the job it interrupted.

    The interrupted job saves its checkpoint and fails with TrainingInterrupted (training/interruption.py);
    Hydra would record that and go on with the next job. This callback runs after the sweep summary has
    recorded the job and stops the sweep instead. SIGTERM and SIGUSR2 (a cluster stopping one job) do not.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        error = job_return._return_value  # .return_value would re-raise it
        if job_return.status == JobStatus.FAILED and getattr(error, "signal_name", None) == "SIGINT":
            # Hydra turns exceptions raised in callbacks into warnings; KeyboardInterrupt is not one.
            raise KeyboardInterrupt(f"sweep stopped by Ctrl-C: {error}")


def _interrupted(outcome: Any) -> bool:
    return any(cls.__name__ == INTERRUPTION for cls in type(outcome).__mro__)


def _in_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def _record(config: DictConfig, status: str, **outcome: Any) -> None:
    """Write this job's record and rebuild the sweep's summary."""
    record_job(
        Path(config.hydra.runtime.output_dir),
        job=config.hydra.job.num,
        status=status,
        overrides=list(config.hydra.overrides.task),
        monitor=str(OmegaConf.select(config, "training.checkpoint.monitor", default="")),
        mode=str(OmegaConf.select(config, "training.checkpoint.mode", default="min")),
        **outcome,
    )
    write_sweep_summary(Path(config.hydra.sweep.dir))


class SweepSummary(Callback):
    """Records each sweep job as it starts and ends and keeps the sweep's summary.csv and summary.png
    up to date."""

    def on_job_start(self, config: DictConfig, *, task_function: Any, **kwargs: Any) -> None:
        # Hydra's run_job has set hydra.job.num and hydra.runtime.output_dir and created the folder.
        if not _in_multirun(config) or not is_main_process():
            return
        try:
            _record(config, RUNNING)
        except Exception as error:
            log.warning("could not update the sweep summary: %s: %s", type(error).__name__, error)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _in_multirun(config) or not is_main_process():
            return
        try:
            # job_return.return_value would re-raise a failed job's exception; _return_value holds it.
            outcome = job_return._return_value
            if job_return.status == JobStatus.COMPLETED:
                _record(config, COMPLETED, value=outcome)
            else:
                status = INTERRUPTED if _interrupted(outcome) else FAILED
                _record(config, status, error=outcome or "the job did not complete")
        except Exception as error:
            log.warning("could not update the sweep summary: %s: %s", type(error).__name__, error)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_main_process():
            return
        try:
            write_sweep_summary(Path(config.hydra.sweep.dir), sweep_ended=True)
        except Exception as error:
            log.warning("could not write the sweep summary: %s: %s", type(error).__name__, error)
