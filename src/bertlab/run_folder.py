"""The experiment folder: what marks it as holding a run, and the guard that never overwrites one.

Hydra creates job folders with exist_ok=True and writes .hydra/ and the log into them before the task
runs, so the guard is a Hydra callback that checks before any of that (on_run_start / on_multirun_start)
and records what existed, so that a launch stopped later by a check can be undone (`undo_launch`).
The run function checks again for callers that bypass launch.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from bertlab.errors import BertlabError
from bertlab.training.checkpointing import LAST_NAME
from bertlab.training.distributed import is_main_process, refuse_relaunch_in_sweep
from bertlab.training.loggers import WANDB_ID_FILE

log = logging.getLogger(__name__)

# What a run writes once it has passed its checks. A folder holding only .hydra/ and run.log is a launch
# that stopped at a config error: the corrected command may reuse it.
RUN_MARKERS = ("checkpoints", "metrics", "tokenizer.json", "run.json")
# A finetuning run's test outputs (finetuning.py writes them; evaluate.py and the sweep summary read them).
LABELS_FILE = "labels.json"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
# Everything an attempt writes into its folder besides Hydra's .hydra/ and run.log.
ATTEMPT_OUTPUTS = (
    *RUN_MARKERS,
    "plots",
    "labels.json",
    "results.json",
    "predictions.csv",
    "wandb",
    WANDB_ID_FILE,
)
RUN_LOG = "run.log"  # Hydra's job log (conf/hydra/job_logging/bertlab.yaml)
JOB_NAME_LIMIT = 100
# The metric tables every run writes (training/metric_files.py) and the reports read (reporting/).
TRAIN_METRICS = Path("metrics/train/metrics.csv")
EVAL_METRICS = Path("metrics/eval/metrics.csv")


def job_folder_name(number: int, overrides: str) -> str:
    """`job<N>_<overrides>` for a sweep job: readable, unique by N, short enough for any file system."""
    name = f"job{number}_{overrides}".rstrip("_")
    if len(name) <= JOB_NAME_LIMIT:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{name[: JOB_NAME_LIMIT - 10]}..{digest}"


def run_artifacts(run_dir: Path, markers: tuple[str, ...] = RUN_MARKERS) -> list[str]:
    return [name for name in markers if (Path(run_dir) / name).exists()]


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The complete checkpoint files of a run (a write in progress is a hidden .tmp file, not listed)."""
    return sorted((Path(run_dir) / "checkpoints").glob("*.ckpt"))


def check_run_name(name: object, key: str = "experiment.name") -> None:
    """A run name is one plain folder name: nothing may be written or read outside the runs' root."""
    text = str(name) if name is not None else ""
    if (
        not text
        or text in (".", "..")
        or text.startswith(".")
        or any(sep in text for sep in ("/", "\\", os.sep))
    ):
        raise BertlabError(
            f"must be a plain folder name (no '/' or '\\', not '..', not starting with '.'), got {text!r}; "
            f"run folders are <experiment.output_dir>/<kind>/<name>",
            key,
        )


def clear_unfinished_attempt(run_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """Remove what an attempt that never wrote a checkpoint left, so a new attempt starts from step 0.

    Only a folder without any checkpoint is touched: nothing of it can be resumed, and keeping its
    tokenizer, metric rows or plots would mix two attempts. Returns the names removed.
    """
    run_dir = Path(run_dir)
    if checkpoints_of(run_dir):
        raise RuntimeError(f"{run_dir} holds checkpoints; it is not an unfinished attempt")
    removed = []
    for name in (*ATTEMPT_OUTPUTS, *extra):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def refuse_existing_run(run_dir: Path) -> None:
    """Raise if `run_dir` holds a run with a checkpoint; nothing has been written yet when this is called."""
    found = [str(path.relative_to(run_dir)) for path in checkpoints_of(run_dir)]
    if not found:
        return
    resume_hint = "training.resume.is_resume=true"
    if not (Path(run_dir) / "checkpoints" / f"{LAST_NAME}.ckpt").is_file():
        resume_hint += f" training.resume.checkpoint_path={found[0]}"
    raise BertlabError(
        f"run folder {str(run_dir)!r} already holds a run ({', '.join(found)}); nothing was changed. "
        f"Choose a new name with experiment.name=<new name>, or continue that run with {resume_hint}",
        key="experiment.name",
    )


def refuse_missing_run(run_dir: Path, checkpoint: Path) -> None:
    if checkpoint.is_file():
        return
    available = [str(path.relative_to(run_dir)) for path in checkpoints_of(run_dir)]
    if available:
        raise BertlabError(
            f"cannot resume: checkpoint {str(checkpoint)!r} does not exist; the run has {available}: point "
            f"training.resume.checkpoint_path at one of them (relative to {str(run_dir)!r})",
            key="training.resume.checkpoint_path",
        )
    raise BertlabError(
        f"cannot resume: there is no run in {str(run_dir)!r}; check experiment.name and "
        f"training.resume.resume_pretraining_name, or start the run without training.resume.is_resume=true",
        key="training.resume.is_resume",
    )


def claim_run_folder(run_dir: Path, source_dir: Path | None, checkpoint: Path | None) -> Path | None:
    """Decide how a launch uses its run folder; returns the checkpoint to resume from, or None.

    `source_dir`/`checkpoint` are the run and file to resume from (None for a fresh run). A folder with a
    checkpoint is never overwritten; a folder whose attempt stopped before any checkpoint (a crash at step
    1, a kill during the first validation, data refused after the tokenizer was written) is cleared and
    started again from step 0, whether relaunched or resumed.
    """
    run_dir = Path(run_dir)
    if checkpoint is not None and Path(source_dir or "").resolve() == run_dir.resolve():
        if checkpoint.is_file():
            return checkpoint
        if checkpoints_of(run_dir) or not run_dir.is_dir():
            refuse_missing_run(run_dir, checkpoint)
        checkpoint = None  # nothing to resume: the run starts again below
    elif checkpoint is not None:
        refuse_missing_run(Path(source_dir or ""), checkpoint)
    refuse_existing_run(run_dir)
    removed = clear_unfinished_attempt(run_dir) if run_dir.is_dir() else []
    if removed or (checkpoint is None and source_dir is not None):
        log.warning(
            "Run folder %s holds no checkpoint (an attempt stopped before its first one): starting it from "
            "step 0%s",
            run_dir,
            f"; removed that attempt's {', '.join(removed)}" if removed else "",
        )
    return checkpoint


def resume_source(experiment: Any, resume: Any) -> tuple[Path | None, Path | None]:
    """The run a resume continues (`resume.resume_pretraining_name`, or this run) and its checkpoint file,
    from the `experiment` and `training.resume` config sections; (None, None) for a fresh run."""
    if not resume.is_resume:
        return None, None
    source_dir = (
        Path(experiment.output_dir) / experiment.kind / (resume.resume_pretraining_name or experiment.name)
    )
    return source_dir, source_dir / resume.checkpoint_path


def check_writable(run_dir: Path) -> None:
    """The run folder, or the nearest folder above it that exists, must accept files (probed: root ignores
    permission bits, read-only file systems do not)."""
    existing = Path(run_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BertlabError(
            f"{str(existing)!r} is a file, so the run folder {str(run_dir)!r} cannot be created there; choose "
            f"another experiment.output_dir",
            "experiment.output_dir",
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise BertlabError(
            f"cannot write into {str(existing)!r} ({error.strerror}), so the run folder {str(run_dir)!r} cannot "
            f"be created; choose a writable experiment.output_dir",
            "experiment.output_dir",
        ) from None


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
