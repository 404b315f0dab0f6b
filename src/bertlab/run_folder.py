"""The experiment folder: what marks it as holding a run, and the guard that never overwrites one.

Hydra creates job folders with exist_ok=True and writes .hydra/ and the log into them before the task
runs, so the guard is a Hydra callback that checks before any of that (on_run_start / on_multirun_start).
The run function checks again for callers that bypass launch.py.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from bertlab.errors import BertlabError
from bertlab.training.distributed import is_main_process, refuse_relaunch_in_sweep

# What a run writes once it has passed its checks. A folder holding only .hydra/ and run.log is a launch
# that stopped at a config error: the corrected command may reuse it.
RUN_MARKERS = ("checkpoints", "metrics", "tokenizer.json", "run.json")
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


def refuse_existing_run(run_dir: Path, markers: tuple[str, ...] = RUN_MARKERS) -> None:
    """Raise if `run_dir` already holds a run; nothing has been written yet when this is called."""
    found = run_artifacts(run_dir, markers)
    if found:
        raise BertlabError(
            f"run folder {str(run_dir)!r} already holds a run ({', '.join(found)}); nothing was changed. "
            f"Choose a new name with experiment.name=<new name>, or continue that run with "
            f"training.resume.is_resume=true",
            key="experiment.name",
        )


def refuse_missing_run(run_dir: Path, checkpoint: Path) -> None:
    if not checkpoint.is_file():
        raise BertlabError(
            f"cannot resume: checkpoint {str(checkpoint)!r} does not exist; check experiment.name, "
            f"training.resume.resume_pretraining_name and training.resume.checkpoint_path "
            f"(relative to the run folder {str(run_dir)!r})",
            key="training.resume.checkpoint_path",
        )


def _stop(error: BertlabError) -> None:
    """Hydra turns exceptions raised in callbacks into warnings; SystemExit is not one of them."""
    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(2)


class RunFolderGuard(Callback):
    """Stops a launch whose run folder (or sweep folder) already exists, before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_main_process():
            # A process started beside the main one (SLURM task, torchrun): the main one checks and creates
            # the folder and writes .hydra/ (a resume's into .hydra/resume-N); this one writes no config.
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = None
            return
        run_dir = Path(config.hydra.run.dir)
        if not config.training.resume.is_resume:
            try:
                refuse_existing_run(run_dir)
            except BertlabError as error:
                _stop(error)
        elif (run_dir / ".hydra").is_dir():
            # Keep the run's original composed config; the resumed launch's goes beside it.
            number = len(list((run_dir / ".hydra").glob("resume-*"))) + 1
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.output_subdir = f".hydra/resume-{number}"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        training = config.training
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
