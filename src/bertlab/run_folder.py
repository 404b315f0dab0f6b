"""The run folder: its layout (every artifact's name, defined here once) and claiming it (never overwrite
a run).

Writers (the run kinds, training/, reporting/) and readers (saved_run.py) take the names from here.
`examine_run_folder` answers, without touching anything, how a launch may use a folder (the launcher's
guard asks it before Hydra writes); `claim_run_folder` is the one place that acts on the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertlab.atomic_write import replacing
from bertlab.errors import BertlabError
from bertlab.output_lock import OutputBusy, hold_output, lock_file_of, release_output

log = logging.getLogger(__name__)

# -- layout: <experiment.output_dir>/<experiment.kind>/<experiment.name>/ ---------------------------------
CHECKPOINTS_DIR = Path("checkpoints")
BEST_CHECKPOINT = CHECKPOINTS_DIR / "best-model.ckpt"  # by training.checkpoint.monitor
LAST_CHECKPOINT = CHECKPOINTS_DIR / "model.ckpt"  # every training.checkpoint.every_n_steps; resumed from
KEPT_CHECKPOINT = "step-{step}.ckpt"  # in CHECKPOINTS_DIR: kept at each of training.checkpoint.keep_steps
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
# A run's status in its run-info file: running until it ends; completed runs are not resumed by
# training.resume.is_resume=auto.
RUNNING, COMPLETED, INTERRUPTED = "running", "completed", "interrupted"
# The kinds of run (experiment.kind): each lives under <experiment.output_dir>/<kind>/.
PRETRAINING, FINETUNING, PREPARATION = "pretraining", "finetuning", "preparation"
# The task (training objective) a checkpoint's payload names, and the kind of run that writes it.
TASK_KINDS = {"mlm": PRETRAINING, "classification": FINETUNING}
MANIFEST = "manifest.json"  # a finished preparation's index of its shards (data/shard_store.py writes it)


def run_dir_of(output_dir: str | Path, kind: str, name: str) -> Path:
    """Where run `name` of `kind` lives."""
    return Path(output_dir) / kind / name


def job_folder_name(number: int, overrides: str) -> str:
    """`job<N>_<overrides>` for a sweep job: readable, unique by N, short enough for any file system.

    One folder, never nested: a '/' (a nested config group such as training/scheduler, a path) becomes '.'.
    """
    name = f"job{number}_{overrides.replace('/', '.')}".rstrip("_")
    if len(name) <= JOB_NAME_LIMIT:
        return name
    digest = hashlib.sha1(overrides.encode()).hexdigest()[:8]
    return f"{name[: JOB_NAME_LIMIT - 10]}..{digest}"


def kept_checkpoint(step: int) -> Path:
    """The checkpoint a run keeps at optimizer step `step` (training.checkpoint.keep_steps), in its folder."""
    return CHECKPOINTS_DIR / KEPT_CHECKPOINT.format(step=int(step))


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


@dataclass(frozen=True)
class FolderClaim:
    """How a launch may use its run folder, decided before anything is written."""

    checkpoint: Path | None  # the checkpoint to resume from; None: the run starts at step 0
    in_place: bool  # continues the run in this very folder
    leftovers: tuple[str, ...]  # what an attempt that never reached a checkpoint left; cleared on claim
    restarts: bool  # a resume found nothing to resume and starts the run again


def examine_run_folder(run_dir: Path, source_dir: Path | None, checkpoint: Path | None) -> FolderClaim:
    """Decide, touching nothing, how a launch uses `run_dir`; refusals raise, naming the fix.

    `source_dir`/`checkpoint` are the run and file to resume from (None for a fresh run). A folder with a
    checkpoint is never overwritten; a folder whose attempt stopped before any checkpoint (a crash at step
    1, a kill during the first validation, data refused after the tokenizer was written) is cleared and
    started again from step 0, whether relaunched or resumed.
    """
    run_dir = Path(run_dir)
    in_place = checkpoint is not None and Path(source_dir or "").resolve() == run_dir.resolve()
    if in_place and checkpoint.is_file():
        return FolderClaim(checkpoint, True, (), False)
    if in_place:
        if checkpoints_of(run_dir) or not run_dir.is_dir():
            refuse_missing_run(run_dir, checkpoint)
        checkpoint = None  # nothing to resume: the run starts again below
    elif checkpoint is not None:
        refuse_missing_run(Path(source_dir or ""), checkpoint)
    refuse_existing_run(run_dir)
    leftovers = tuple(run_artifacts(run_dir, ATTEMPT_OUTPUTS)) if run_dir.is_dir() else ()
    return FolderClaim(checkpoint, False, leftovers, checkpoint is None and source_dir is not None)


def claim_run_folder(run_dir: Path, source_dir: Path | None, checkpoint: Path | None) -> Path | None:
    """Act on `examine_run_folder`: clear an unfinished attempt's outputs, say so; returns the checkpoint
    to resume from, or None. The caller holds the folder (hold_run_folder: one launch per run folder)."""
    claim = examine_run_folder(run_dir, source_dir, checkpoint)
    removed = clear_unfinished_attempt(run_dir) if claim.leftovers else []
    if removed or claim.restarts:
        log.warning(
            "Run folder %s holds no checkpoint (an attempt stopped before its first one): starting it from "
            "step 0%s",
            run_dir,
            f"; removed that attempt's {', '.join(removed)}" if removed else "",
        )
    return claim.checkpoint


def refuse_finished_preparation(run_dir: Path) -> None:
    """A finished prepared folder is kept as it is: another preparation needs another name."""
    if (Path(run_dir) / MANIFEST).is_file():
        raise BertlabError(
            f"folder {str(run_dir)!r} already holds a finished prepared dataset; nothing was changed. Train "
            f"on it with data.prepared={run_dir}, or choose a new experiment.name",
            "experiment.name",
        )


# -- one launch per run folder --------------------------------------------------------------------------
def hold_run_folder(run_dir: Path, key: str = "experiment.name") -> None:
    """Make this process the one launch that owns `run_dir` until `release_run_folder` or its exit.

    The lock beside the folder (output_lock.hold_output): a second launch of the same run fails at once,
    naming the process that holds it, and changes nothing; the OS releases the lock of a killed holder.
    Holding the folder again in the same process counts: each hold is ended by one release.
    """
    try:
        hold_output(run_dir)
    except OutputBusy as busy:
        raise BertlabError(
            f"run folder {str(run_dir)!r} is in use by another launch ({busy.holder}); nothing was changed. "
            f"Wait for it to end, or choose another experiment.name",
            key,
        ) from None
    except OSError as error:
        raise BertlabError(
            f"cannot open the run folder's lock {str(lock_file_of(run_dir))!r} ({error.strerror}); remove it if "
            f"no launch of this run is alive, or choose another experiment.output_dir",
            key,
        ) from None


def release_run_folder(run_dir: Path) -> None:
    """End one hold on `run_dir`; the last one removes the lock file and the folders made only for it."""
    release_output(run_dir)


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


def checkpoint_payload(task: str, config: dict[str, Any], world_size: int, **extra: Any) -> dict[str, Any]:
    """The `bertlab` entry a LightningModule adds to its checkpoints; saved_run.SavedRun reads it."""
    return {"task": task, "config": config, "world_size": world_size, **extra}


def write_json(path: Path, value: Any) -> None:
    """The run folder's JSON files: indented, one trailing newline."""
    Path(path).write_text(json.dumps(value, indent=2) + "\n")


def read_run_status(run_dir: Path) -> str | None:
    """The status the run-info file records (None for a run without one)."""
    try:
        return json.loads((Path(run_dir) / RUN_INFO_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def write_run_status(run_dir: Path, status: str, **entries: Any) -> None:
    """Record how the run ended (and `entries`) in its run-info file (replaced whole: a reader never sees
    half of it)."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return
    info = json.loads(path.read_text())
    info.update(entries, status=status)
    with replacing(path, text=True) as handle:
        handle.write(json.dumps(info, indent=2) + "\n")
