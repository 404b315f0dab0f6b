"""Hydra at the edge: everything that knows Hydra or OmegaConf besides launch.py and the flows.

- `register` (called by launch.py before composing): the structured-config schemas (config/schema.py)
  and the `${bertlab.*:...}` resolvers that conf/ uses.
- `build` / `build_node`: `instantiate` a config section, with errors that name its keys.
- The Hydra callbacks that conf/config.yaml lists: `RunFolderGuard` (never overwrite a run, checked
  before Hydra writes into the folder), `StopSweepOnCtrlC`, `SweepSummary` (reporting/sweep_summary.py).
- `record_launch` / `undo_launch`: what a launch wrote, so that a launch refused by a check leaves
  nothing behind.

The library below (model/, data/, training/, reporting/) takes plain arguments and imports no Hydra.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bertlab.config.schema import (
    FinetuneTrainingConfig,
    LoggingConfig,
    PretrainedExperimentConfig,
    PretrainTrainingConfig,
    RunConfig,
)
from bertlab.errors import BertlabError
from bertlab.reporting.sweep_summary import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    INTERRUPTION,
    RUNNING,
    record_job,
    write_sweep_summary,
)
from bertlab.run_folder import (
    RUN_LOG,
    check_run_name,
    check_writable,
    checkpoints_of,
    claim_run_folder,
    clear_unfinished_attempt,
    job_folder_name,
    resume_source,
)
from bertlab.training.distributed import is_main_process, refuse_relaunch_in_sweep

log = logging.getLogger(__name__)


# -- composition: schemas and resolvers -----------------------------------------------------------------
SWEEP_DIRECTIONS = {"min": "minimize", "max": "maximize"}


def sweep_direction(mode: str) -> str:
    """A sweeper's direction from training.checkpoint.mode, so the search optimises what "best" means."""
    if mode not in SWEEP_DIRECTIONS:
        raise BertlabError(f"must be min or max, got {mode!r}", "training.checkpoint.mode")
    return SWEEP_DIRECTIONS[mode]


RESOLVERS = {"bertlab.job_folder": job_folder_name, "bertlab.sweep_direction": sweep_direction}


def register() -> None:
    """Make the schemas and the resolvers available to conf/ (idempotent); call before composing."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="logging", name="logging_schema", node=LoggingConfig)
    store.store(group="training", name="training_schema", node=PretrainTrainingConfig)
    store.store(group="training", name="finetune_training_schema", node=FinetuneTrainingConfig)
    store.store(
        group="pretrained_experiment", name="pretrained_experiment_schema", node=PretrainedExperimentConfig
    )


# -- instantiate ----------------------------------------------------------------------------------------
def build(cfg: DictConfig, section: str, **runtime: Any) -> Any:
    """`instantiate` one config section; errors name the section's keys (`architecture.num_heads`)."""
    return build_node(OmegaConf.select(cfg, section), section, **runtime)


def build_node(node: Any, section: str, **runtime: Any) -> Any:
    """`instantiate` a node (or plain dict) that stands for config section `section`."""
    try:
        return instantiate(node, **runtime)
    except InstantiationException as error:
        if isinstance(error.__cause__, BertlabError):
            nested = str(error).rpartition("\nfull_key: ")[2] if "\nfull_key: " in str(error) else ""
            if nested == section or nested.startswith(f"{section}."):  # a node selected from the tree
                nested = nested[len(section) :].lstrip(".")
            raise error.__cause__.in_section(f"{section}.{nested}" if nested else section) from None
        raise BertlabError(str(error), key=section) from error
    except BertlabError as error:
        raise error.in_section(section) from None


def plain(node: Any) -> Any:
    """A config node as plain, resolved containers (for checkpoints, W&B and the run-info file)."""
    return OmegaConf.to_container(node, resolve=True)


# -- the run-folder guard and undoing a refused launch --------------------------------------------------
@dataclass
class LaunchFootprint:
    """What a launch through launch.py found before Hydra wrote into the run folder, to undo it on refusal."""

    run_dir: Path
    first_created: Path | None  # the highest folder this launch creates; None when the run folder existed
    log_size: int | None  # run.log's size before the launch; None when there was none
    config_subdir: str  # where Hydra writes this launch's composed config
    clear_outputs: bool = True  # False for a preparation, whose finished shards a relaunch continues from


_launch: LaunchFootprint | None = None  # set by RunFolderGuard; launch.py and its callbacks share a process


def record_launch(run_dir: Path, config_subdir: str, clear_outputs: bool = True) -> None:
    global _launch
    run_dir = Path(run_dir).absolute()
    first_created = None
    folder = run_dir
    while not folder.exists():
        first_created, folder = folder, folder.parent
    log_file = run_dir / RUN_LOG
    _launch = LaunchFootprint(
        run_dir,
        first_created,
        log_file.stat().st_size if log_file.is_file() else None,
        config_subdir,
        clear_outputs,
    )


def undo_launch(run_dir: Path) -> None:
    """Remove what a launch stopped by a check wrote, leaving every earlier file as it was.

    A folder the launch created goes entirely. In a folder that existed: this launch's config and log
    lines go, and, when no checkpoint exists, the attempt's outputs too (the run can be launched again).
    """
    footprint = _launch
    run_dir = Path(run_dir).absolute()
    if footprint is None or footprint.run_dir != run_dir or not run_dir.is_dir():
        return
    if footprint.first_created is not None:
        shutil.rmtree(run_dir)
        folder = run_dir.parent
        while folder != footprint.first_created.parent and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
        return
    config = run_dir / footprint.config_subdir
    if config.is_dir():
        shutil.rmtree(config)
    log_file = run_dir / RUN_LOG
    if footprint.log_size is None:
        log_file.unlink(missing_ok=True)
    elif log_file.is_file():
        with log_file.open("r+b") as handle:
            handle.truncate(footprint.log_size)
    if footprint.clear_outputs and not checkpoints_of(run_dir):
        clear_unfinished_attempt(run_dir)


def _stop(error: BertlabError) -> None:
    """Hydra turns exceptions raised in callbacks into warnings; SystemExit is not one of them."""
    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(2)


class RunFolderGuard(Callback):
    """Checks a launch's run folder (or sweep folder) before Hydra writes into it.

    A folder holding a checkpoint is never overwritten; one whose attempt never reached a checkpoint is
    cleared and started again; a resume's composed config goes beside the run's own (.hydra/resume-N).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_main_process():
            # A process started beside the main one (SLURM task, torchrun): the main one checks and creates
            # the folder and writes .hydra/ (a resume's into .hydra/resume-N); this one writes no config.
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None
            return
        experiment, resume = config.experiment, config.training.resume
        run_dir = Path(config.hydra.run.dir)
        if experiment.kind == "preparation":  # a partial folder is continued, a finished one kept
            from bertlab.preparing import refuse_finished_preparation

            try:
                check_run_name(experiment.name)
                check_writable(run_dir)
                refuse_finished_preparation(run_dir)
            except BertlabError as error:
                _stop(error)
            record_launch(run_dir, str(config.hydra.output_subdir), clear_outputs=False)
            return
        try:
            check_run_name(experiment.name)
            if resume.resume_pretraining_name is not None:
                check_run_name(resume.resume_pretraining_name, "training.resume.resume_pretraining_name")
            check_writable(run_dir)
            source_dir, checkpoint = resume_source(experiment, resume)
            resumes_in_place = claim_run_folder(run_dir, source_dir, checkpoint) is not None and (
                Path(source_dir or "").resolve() == run_dir.resolve()
            )
        except BertlabError as error:
            _stop(error)
        subdir = str(config.hydra.output_subdir)
        if resumes_in_place and (run_dir / ".hydra").is_dir():
            # Keep the run's original composed config; the resumed launch's goes beside it.
            number = len(list((run_dir / ".hydra").glob("resume-*"))) + 1
            subdir = f".hydra/resume-{number}"
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = subdir
        elif not resumes_in_place and run_dir.is_dir():
            # A new attempt in a folder without a checkpoint: the earlier attempt's config and log go too.
            shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
            (run_dir / RUN_LOG).unlink(missing_ok=True)
        record_launch(run_dir, subdir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        training = config.training
        try:
            check_run_name(config.experiment.name)
        except BertlabError as error:
            _stop(error)
        # Checked again in each job, for values swept per job. A SLURM launcher starts one task per device
        # itself: no re-launch happens there, though this submitting host sees no SLURM environment.
        if "SlurmLauncher" not in str(config.hydra.launcher.get("_target_", "")):
            try:
                refuse_relaunch_in_sweep(
                    training.strategy, training.devices, training.num_nodes, training.accelerator
                )
            except BertlabError as error:
                _stop(error)
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            _stop(
                BertlabError(
                    f"sweep folder {str(sweep_dir)!r} already exists; set experiment.name to a new name"
                )
            )


# -- sweeps ---------------------------------------------------------------------------------------------
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
