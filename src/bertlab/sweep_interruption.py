"""Ctrl-C during a sweep ends the sweep, not only the job it interrupted.

The interrupted job saves its checkpoint and fails with TrainingInterrupted (training/interruption.py);
Hydra would record that and go on with the next job. This callback runs after the sweep summary has
recorded the job and stops the sweep instead. SIGTERM and SIGUSR2 (a cluster stopping one job) do not.
"""

from __future__ import annotations

from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class StopSweepOnCtrlC(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        error = job_return._return_value  # .return_value would re-raise it
        if job_return.status == JobStatus.FAILED and getattr(error, "signal_name", None) == "SIGINT":
            # Hydra turns exceptions raised in callbacks into warnings; KeyboardInterrupt is not one.
            raise KeyboardInterrupt(f"sweep stopped by Ctrl-C: {error}")
