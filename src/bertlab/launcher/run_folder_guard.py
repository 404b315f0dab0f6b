"""The run-folder guard (a Hydra callback) and undoing a refused launch.

The guard checks a launch's run folder (or sweep folder) before Hydra writes into it: it asks the resume
owner (training/resume.py) a question that changes nothing, and refuses with one `Error:` line. The
decision itself, claiming the folder, is made once, later, by the run (flow.plan_run). What a launch
finds here is recorded, so that launch.py can remove what a launch refused by a later check wrote.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bertlab.errors import BertlabError
from bertlab.run_folder import (
    PREPARATION,
    RUN_LOG,
    check_run_name,
    check_writable,
    checkpoints_of,
    clear_unfinished_attempt,
    hold_run_folder,
    refuse_finished_preparation,
    release_run_folder,
)
from bertlab.training.distributed import is_main_process, refuse_relaunch_in_sweep
from bertlab.training.resume import AUTO, ResumeRequest, already_completed, resumes_in_place

log = logging.getLogger(__name__)
# What a requeued SLURM job needs to continue in its own folder when it runs the same command again.
REQUEUE_OVERRIDE = f"training.resume.is_resume={AUTO}"


@dataclass
class LaunchFootprint:
    """What a launch through launch.py found before Hydra wrote into the run folder, to undo it on refusal."""

    run_dir: Path
    first_created: Path | None  # the highest folder this launch creates; None when the run folder existed
    log_size: int | None  # run.log's size before the launch; None when there was none
    config_subdir: str | None  # where Hydra writes this launch's composed config; None: nowhere
    clear_outputs: bool = True  # False for a preparation, whose finished shards a relaunch continues from
    completed: bool = (
        False  # is_resume=auto on a completed run: the run checks the command, then does nothing
    )


# Set by RunFolderGuard, read by undo_launch: Hydra's callbacks and launch.py's task function share one process.
_launch: LaunchFootprint | None = None
# The sweep folder a multirun holds, and whether it existed before (set by on_multirun_start).
_sweep: tuple[Path, bool] | None = None


def record_launch(
    run_dir: Path, config_subdir: str | None, clear_outputs: bool = True, completed: bool = False
) -> None:
    global _launch
    run_dir = Path(os.path.abspath(run_dir))
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
        completed,
    )


def undo_launch(run_dir: Path) -> None:
    """Remove what a launch stopped by a check wrote, leaving every earlier file as it was.

    A folder the launch created goes entirely. In a folder that existed: this launch's config and log
    lines go, and, when no checkpoint exists, the attempt's outputs too (the run can be launched again).
    """
    footprint = _launch
    run_dir = Path(os.path.abspath(run_dir))
    if footprint is None or footprint.run_dir != run_dir or not run_dir.is_dir():
        return
    if footprint.first_created is not None:
        shutil.rmtree(run_dir)
        folder = run_dir.parent
        while folder != footprint.first_created.parent and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
        return
    if footprint.config_subdir:
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


def end_completed_launch(run_dir: Path) -> bool:
    """After a launch with is_resume=auto found its run completed (and the run found the command fit it):
    remove its log lines, so the run stays byte for byte as it was; True when that was this launch."""
    footprint = _launch
    if footprint is None or not footprint.completed or footprint.run_dir != Path(os.path.abspath(run_dir)):
        return False
    undo_launch(run_dir)
    return True


def undo_refused_sweep() -> None:
    """Remove what a sweep refused before its first job (a Hydra error in a swept value) wrote: Hydra's
    multirun.yaml and the sweep folder this launch created; then release the folder's lock."""
    global _sweep
    if _sweep is None:
        return
    sweep_dir, existed = _sweep
    _sweep = None
    if existed:  # an empty folder the user made: only what this launch put in it goes
        for path in sweep_dir.iterdir():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    else:
        shutil.rmtree(sweep_dir, ignore_errors=True)
    release_run_folder(sweep_dir)  # also removes the folders made only for its lock


def release_launch(run_dir: Path) -> None:
    """End the launch's hold on its run folder (after undo_launch, if the launch was refused)."""
    release_run_folder(Path(os.path.abspath(run_dir)))


def _stop(error: BertlabError, held: Path | None = None) -> NoReturn:
    """Hydra turns exceptions raised in callbacks into warnings; SystemExit is not one of them."""
    if held is not None:
        release_run_folder(held)
    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(2)


def refuse_sweep(error: BertlabError, sweep_dir: Path) -> NoReturn:
    """Stop a multirun before its first job (a suite's bad input): one Error line, exit 2, the sweep folder's
    hold released (its lock file, and the folders made for it, go)."""
    _stop(error, held=Path(os.path.abspath(sweep_dir)))
    raise AssertionError("unreachable")  # _stop exits


class RunFolderGuard(Callback):
    """Checks a launch's run folder (or sweep folder) before Hydra writes into it.

    A folder holding a checkpoint is never overwritten; one whose attempt never reached a checkpoint is
    started again (the run clears it); a resume's composed config goes beside the run's own
    (.hydra/resume-N).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "suite") is not None and OmegaConf.select(config, "suite.job") is None:
            _stop(
                BertlabError(
                    "a suite is a multirun of finetunes: add -m (python launch.py -m +experiment=suite "
                    "suite=<name> ...)",
                    "suite",
                )
            )
        if not is_main_process():
            # A process started beside the main one (SLURM task, torchrun): the main one checks and creates
            # the folder and writes .hydra/ (a resume's into .hydra/resume-N); this one writes no config.
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None
            return
        experiment = config.experiment
        run_dir = Path(os.path.abspath(config.hydra.run.dir))  # as Hydra's runtime.output_dir spells it
        if experiment.kind == PREPARATION:  # a partial folder is continued, a finished one kept
            try:
                check_run_name(experiment.name)
                check_writable(run_dir)
            except BertlabError as error:
                _stop(error)
            try:
                hold_run_folder(run_dir)
                refuse_finished_preparation(run_dir)
            except BertlabError as error:
                _stop(error, held=run_dir)
            record_launch(run_dir, str(config.hydra.output_subdir), clear_outputs=False)
            return
        try:
            request = ResumeRequest(**OmegaConf.to_container(config.training.resume, resolve=True))
            check_run_name(experiment.name)
            if request.resume_pretraining_name is not None:
                check_run_name(request.resume_pretraining_name, "training.resume.resume_pretraining_name")
            check_writable(run_dir)
        except BertlabError as error:
            _stop(error)
        try:
            hold_run_folder(run_dir)  # one launch per run folder, before Hydra writes into it
            in_place = resumes_in_place(
                run_dir, Path(experiment.output_dir) / experiment.kind, experiment.name, request
            )
        except BertlabError as error:
            _stop(error, held=run_dir)
        if in_place and already_completed(run_dir, request):
            # Not ended here: the run first checks the command against the run's checkpoint, as it would
            # for an interrupted run (a changed model is refused, naming the key). Hydra writes no config.
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None
            record_launch(run_dir, None, completed=True)
            return
        subdir = str(config.hydra.output_subdir)
        if in_place and (run_dir / ".hydra").is_dir():
            # Keep the run's original composed config; the resumed launch's goes beside it.
            number = len(list((run_dir / ".hydra").glob("resume-*"))) + 1
            subdir = f".hydra/resume-{number}"
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = subdir
        elif not in_place and run_dir.is_dir():
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
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "hydra_submitit_launcher" in launcher:  # SLURM or submitit_local: jobs may be requeued
            self._continue_requeued_jobs(config)
        if "SlurmLauncher" not in launcher:
            try:
                refuse_relaunch_in_sweep(
                    training.strategy, training.devices, training.num_nodes, training.accelerator
                )
            except BertlabError as error:
                _stop(error)
        sweep_dir = Path(os.path.abspath(config.hydra.sweep.dir))
        try:
            hold_run_folder(sweep_dir)  # one launch per sweep folder; the OS releases it at exit
        except BertlabError as error:
            _stop(error)
        if OmegaConf.select(config, "suite") is not None:
            return  # a suite's folder is reused: its sweeper skips the finished jobs and continues the rest
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            _stop(
                BertlabError(
                    f"sweep folder {str(sweep_dir)!r} already exists; set experiment.name to a new name"
                ),
                held=sweep_dir,
            )
        global _sweep
        _sweep = (sweep_dir, sweep_dir.exists())

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if is_main_process():
            release_run_folder(Path(os.path.abspath(config.hydra.sweep.dir)))

    @staticmethod
    def _continue_requeued_jobs(config: DictConfig) -> None:
        """submitit requeues a preempted or timed-out job (SLURM, or submitit_local) by running it again
        with the same overrides; with is_resume=auto it continues in its folder instead of being refused.
        Each job composes its config from hydra.overrides.task, so the override goes there."""
        resume = OmegaConf.select(config, "training.resume")
        if resume is None or resume.is_resume is not False or resume.resume_pretraining_name is not None:
            return  # the command (or an experiment file) chose how the jobs start
        overrides = config.hydra.overrides.task
        with read_write(config.hydra):
            overrides.append(REQUEUE_OVERRIDE)
        log.info("Sweep jobs run with %s: a requeued job continues in its own folder", REQUEUE_OVERRIDE)
