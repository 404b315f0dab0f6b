"""The run folder: its layout (every artifact's name, defined here once), reading a finished run, and the
guard that never overwrites one.

Writers (the flows, training/, reporting/) and readers (resume, finetune, evaluate, export) take the
names from here; `read_checkpoint` is the one place a checkpoint is loaded (always `weights_only=True`)
and `read_saved_run` the one reading of its `bertlab` payload, so every reader fails with the same
messages. Hydra's part of the guard (checking before Hydra writes .hydra/) is in hydra_glue.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError

log = logging.getLogger(__name__)

# -- layout: <experiment.output_dir>/<experiment.kind>/<experiment.name>/ ---------------------------------
CHECKPOINTS_DIR = Path("checkpoints")
BEST_CHECKPOINT = CHECKPOINTS_DIR / "best-model.ckpt"  # by training.checkpoint.monitor
LAST_CHECKPOINT = CHECKPOINTS_DIR / "model.ckpt"  # every training.checkpoint.every_n_steps; resumed from
TOKENIZER_FILE = "tokenizer.json"
RUN_INFO_FILE = "run.json"  # what `auto` settings resolved to, where data and weights came from
METRICS_FILE = "metrics.csv"
TRAIN_METRICS = Path("metrics", "train", METRICS_FILE)  # training/metric_files.py writes, reporting/ reads
EVAL_METRICS = Path("metrics", "eval", METRICS_FILE)
PLOTS_DIR = "plots"
# A finetuning run's test outputs (finetuning.py writes them; evaluate.py and the sweep summary read them).
LABELS_FILE = "labels.json"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.csv"
EVALUATIONS_DIR = "evaluations"  # evaluate.py: one subfolder per evaluated file
WANDB_DIR = "wandb"
WANDB_ID_FILE = "wandb-run-id.txt"  # written when the run starts, so a resume continues the W&B run
RUN_LOG = "run.log"  # Hydra's job log (conf/hydra/job_logging/bertlab.yaml)
HYDRA_CONFIG = Path(".hydra", "config.yaml")  # the composed config Hydra saves

# What a run writes once it has passed its checks. A folder holding only .hydra/ and run.log is a launch
# that stopped at a config error: the corrected command may reuse it.
RUN_MARKERS = (str(CHECKPOINTS_DIR), str(TRAIN_METRICS.parts[0]), TOKENIZER_FILE, RUN_INFO_FILE)
# Everything an attempt writes into its folder besides Hydra's .hydra/ and run.log.
ATTEMPT_OUTPUTS = (
    *RUN_MARKERS,
    PLOTS_DIR,
    LABELS_FILE,
    RESULTS_FILE,
    PREDICTIONS_FILE,
    WANDB_DIR,
    WANDB_ID_FILE,
)
JOB_NAME_LIMIT = 100
# The task a checkpoint's payload names, and the kind of run that writes it.
TASK_RUNS = {"mlm": "pretraining", "classification": "finetuning"}


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
    return sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("*.ckpt"))


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
    if not (Path(run_dir) / LAST_CHECKPOINT).is_file():
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


# -- reading a run --------------------------------------------------------------------------------------
def read_checkpoint(path: Path, key: str | None = "training.resume.checkpoint_path") -> dict[str, Any]:
    """Loads safely (weights_only) and memory-mapped; a file that cannot be read gets one clear error.

    `key` is the setting that named the file, so that the message says what to change.
    """
    import torch  # here: the Hydra callbacks import this module and must stay cheap

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        fix = f"; point {key} at another checkpoint" if key else ""
        raise BertlabError(f"checkpoint {str(path)!r} {unreadable_reason(error)}{fix}", key) from None


def unreadable_reason(error: Exception) -> str:
    """Why torch could not load a file, in one line (torch's own text is long, repeated and has escapes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"holds a Python object ({refused.group(1)}) that a safe load (weights_only) refuses to run; "
            f"bertlab checkpoints hold only tensors and plain values, so it was not written by bertlab"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first = first.split(". ")[0].rstrip(".")
    return f"cannot be read ({type(error).__name__}: {first}); it is truncated, corrupt or not a checkpoint"


@dataclass(frozen=True)
class SavedRun:
    """A checkpoint and what its `bertlab` payload says about the run that wrote it."""

    checkpoint: Path
    task: str | None  # "mlm" | "classification"
    config: dict[str, Any]  # the run's resolved config
    world_size: int  # processes that shared each step (a resume's data position depends on it)
    backbone: dict[str, Any]  # the architecture actually built (a finetune's is inherited); {} for MLM
    state: dict[str, Any]  # the whole checkpoint: state_dict, global_step, ...

    @property
    def state_dict(self) -> dict[str, Any]:
        return self.state.get("state_dict", {})


def read_saved_run(path: Path, key: str, task: str | None = None, run_dir: Path | None = None) -> SavedRun:
    """The checkpoint at `path` and its run config; `task` ("mlm", "classification") is required if given.

    Checkpoints written before the config was stored in them fall back on `run_dir`'s .hydra/config.yaml.
    """
    state = read_checkpoint(path, key)
    payload = state.get("bertlab") or {}
    config = payload.get("config")
    if not config and run_dir is not None and (run_dir / HYDRA_CONFIG).is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(run_dir / HYDRA_CONFIG), resolve=True)
    writer = f"a bertlab {TASK_RUNS[task]} run" if task else "bertlab"
    if not config or "architecture" not in config:
        raise BertlabError(
            f"checkpoint {str(path)!r} holds no bertlab run config; it was not written by {writer}", key
        )
    if task is not None and payload.get("task", task) != task:
        raise BertlabError(
            f"checkpoint {str(path)!r} was written by a {TASK_RUNS.get(payload['task'], payload['task'])} "
            f"run, not by {writer}",
            key,
        )
    return SavedRun(
        path,
        payload.get("task"),
        config,
        int(payload.get("world_size", 1)),
        dict(payload.get("backbone") or {}),
        state,
    )


def checkpoint_payload(task: str, config: dict[str, Any], world_size: int, **extra: Any) -> dict[str, Any]:
    """The `bertlab` entry a LightningModule adds to its checkpoints; `read_saved_run` reads it."""
    return {"task": task, "config": config, "world_size": world_size, **extra}


def tokenizer_file(run_dir: Path) -> Path:
    """The run's tokenizer file; a folder without one is not a complete run."""
    path = Path(run_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise BertlabError(f"{str(path)!r} is missing; the run folder is incomplete", "run_dir")
    return path


def read_labels(run_dir: Path) -> list:
    """The label vocabulary a finetuning run trained with (ids index into it)."""
    path = Path(run_dir) / LABELS_FILE
    if not path.is_file():
        raise BertlabError(f"{str(path)!r} is missing; is {str(run_dir)!r} a finetuning run?", "run")
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    """The run folder's JSON files: indented, one trailing newline."""
    Path(path).write_text(json.dumps(value, indent=2) + "\n")
