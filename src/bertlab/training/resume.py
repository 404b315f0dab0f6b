"""Resuming, owned here: what a launch asks for (`ResumeRequest`), the launcher guard's question answered
without side effects (`resumes_in_place`), the one decision (`plan_resume`: claims the run folder, reads the
checkpoint once, checks it against the config, returns a frozen `ResumePlan`), and the restoring of what
Lightning does not.

Lightning restores weights, optimizer, scheduler, precision scaler, step and epoch counters. This module
adds the rest of an exact resume: every RNG stream (dropout; data order is seeded from (seed, epoch) and
masking from (seed, epoch, batch index, rank), which need no state), and the position inside the epoch, which the training sampler
skips to directly instead of iterating through the batches already seen.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from bertlab.errors import BertlabError
from bertlab.run_folder import COMPLETED, claim_run_folder, examine_run_folder, read_run_status
from bertlab.saved_run import SavedRun

log = logging.getLogger(__name__)


AUTO = "auto"  # training.resume.is_resume=auto: continue this run if it has a checkpoint, else start it


@dataclass(frozen=True)
class ResumeRequest:
    """What a launch asks for: the `training.resume` section as plain values (same names).

    `is_resume`: true (continue a run; it must exist), false (a new run), or "auto": continue this run in
    its own folder if it has `checkpoint_path`, start it otherwise, so that a requeued job can run the same
    command again.
    """

    is_resume: bool | str = False
    resume_pretraining_name: str | None = None  # another run of the same kind to continue from
    checkpoint_path: str = "checkpoints/model.ckpt"  # relative to the run resumed from
    strict: bool = True
    load_only_model_state: bool = False
    allow_config_changes: bool = False

    def __post_init__(self) -> None:
        if self.is_resume not in (True, False, AUTO):
            raise BertlabError(
                f"must be true, false or auto (continue this run if it has a checkpoint, else start it), "
                f"got {self.is_resume!r}",
                "training.resume.is_resume",
            )
        if self.is_resume == AUTO and self.resume_pretraining_name is not None:
            raise BertlabError(
                "auto continues this run in its own folder; to continue another run set "
                "training.resume.is_resume=true",
                "training.resume.resume_pretraining_name",
            )

    def source(self, run_dir: Path, kind_dir: Path, name: str) -> tuple[Path | None, Path | None]:
        """The run a resume continues and its checkpoint file; (None, None) for a fresh run.

        With true, run `resume_pretraining_name` (or run `name` itself) under `kind_dir`
        (<output_dir>/<kind>); with auto, the run in `run_dir` (a sweep job's folder too) if it has a
        checkpoint.
        """
        if self.is_resume == AUTO:
            checkpoint = Path(run_dir) / self.checkpoint_path
            return (Path(run_dir), checkpoint) if checkpoint.is_file() else (None, None)
        if not self.is_resume:
            return None, None
        source_dir = Path(kind_dir) / (self.resume_pretraining_name or name)
        return source_dir, source_dir / self.checkpoint_path

    def resumes(self, run_dir: Path, kind_dir: Path, name: str) -> bool:
        """Whether the run continues from a checkpoint (and so needs no initial weights)."""
        return self.source(run_dir, kind_dir, name)[1] is not None


def already_completed(run_dir: Path, request: ResumeRequest) -> bool:
    """is_resume=auto on a run that ran to its end: the relaunch has nothing to do."""
    return request.is_resume == AUTO and read_run_status(run_dir) == COMPLETED


def resumes_in_place(run_dir: Path, kind_dir: Path, name: str, request: ResumeRequest) -> bool:
    """Whether the launch continues the run in `run_dir` itself; raises when it may not start at all.

    Touches nothing: the launcher's guard asks it before Hydra writes into the folder.
    """
    source_dir, checkpoint = request.source(run_dir, kind_dir, name)
    return examine_run_folder(run_dir, source_dir, checkpoint).in_place


@dataclass(frozen=True)
class ResumePlan:
    """Where a run starts, resolved once before anything is built and then only read.

    A fresh run is `ResumePlan()`. `model_only` (training.resume.load_only_model_state) loads the weights
    and starts optimizer, schedule and step count afresh; otherwise Lightning restores everything from
    `fit_checkpoint` and the training sampler skips the batches already seen in the current epoch.
    """

    source: SavedRun | None = None  # the run resumed from (this run's folder, or another), read once
    model_only: bool = False
    strict: bool = True
    step: int = 0  # the optimizer step training continues from
    batches_done: int = 0  # training batches already consumed (step x accumulate_grad_batches)
    truncate_metrics: bool = False  # continuing in its own folder: drop metric rows after `step`
    completed: bool = False  # is_resume=auto found the run completed: nothing to do

    @property
    def source_dir(self) -> Path | None:
        return self.source.run_dir if self.source else None

    @property
    def checkpoint(self) -> Path | None:
        return self.source.checkpoint if self.source else None

    @property
    def fit_checkpoint(self) -> str | None:
        """The `ckpt_path` for Trainer.fit: the checkpoint of a full resume, else None."""
        return str(self.checkpoint) if self.checkpoint is not None and not self.model_only else None

    def skip_batches(self, batches_per_epoch: int) -> int:
        """How many batches of the current epoch the run has already consumed."""
        return batches_into_epoch(self.batches_done, 1, batches_per_epoch)


def plan_resume(
    run_dir: Path,
    kind_dir: Path,
    name: str,
    request: ResumeRequest,
    *,
    run_config: dict[str, Any],
    may_change: tuple[str, ...],
    world_size: int,
    accumulate_grad_batches: int,
    main_process: bool = True,
) -> ResumePlan:
    """The one decision of how a run starts: claim `run_dir` (main process), read the checkpoint once,
    check that it can continue as `run_config` on `world_size` processes. Refuses a changed model or data,
    naming the key, unless the key is in `may_change` (see check_resume_config). A completed run (with
    is_resume=auto) passes the same checks before it is found to have nothing left to do."""
    source_dir, checkpoint = request.source(run_dir, kind_dir, name)
    if main_process:
        checkpoint = claim_run_folder(run_dir, source_dir, checkpoint)
    if checkpoint is not None and not checkpoint.is_file():
        checkpoint = None  # other DDP processes start after the main one has claimed the folder
    if checkpoint is None or source_dir is None:
        return ResumePlan()
    model_only = request.load_only_model_state
    saved = SavedRun.read(checkpoint, source_dir, "training.resume.checkpoint_path")
    check_resume_world(
        saved.world_size, world_size, weights_only=model_only, allow=request.allow_config_changes
    )
    check_resume_config(saved.config, run_config, may_change, request)
    if already_completed(run_dir, request):  # checked as any resume (a changed model is refused), then done
        return ResumePlan(completed=True)
    step = 0 if model_only else saved.step
    return ResumePlan(
        source=saved,
        model_only=model_only,
        strict=request.strict,
        step=step,
        batches_done=step * accumulate_grad_batches,
        truncate_metrics=main_process and source_dir.resolve() == Path(run_dir).resolve(),
    )


def restore_model(model: L.LightningModule, plan: ResumePlan) -> None:
    """Check the checkpoint fits `model`; load its weights now (model_only) or let Lightning (full)."""
    if plan.source is None:
        return
    compare_state(model, plan.source.state, plan.strict, plan.checkpoint)
    if plan.model_only:
        model.load_state_dict(plan.source.state_dict, strict=plan.strict)
        log.info("Loaded weights only from %s: fresh optimizer, schedule and step count", plan.checkpoint)
        return
    model.strict_loading = plan.strict
    log.info("Resuming from %s at step %d", plan.checkpoint, plan.step)


def compare_state(model: nn.Module, checkpoint: dict[str, Any], strict: bool, source: Path) -> list[str]:
    """Raise on shape mismatches always, and on missing/unexpected keys when strict; returns the key issues."""
    expected = model.state_dict()
    saved = checkpoint.get("state_dict", {})
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = [
        f"{key}: checkpoint {tuple(saved[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(saved) & set(expected))
        if saved[key].shape != expected[key].shape
    ]
    if reshaped:
        raise BertlabError(
            f"checkpoint {str(source)!r} was trained with a different architecture; mismatched shapes: "
            f"{'; '.join(reshaped[:5])}. Use the architecture of the run it came from",
            "architecture",
        )
    issues = [f"missing: {key}" for key in missing] + [f"unexpected: {key}" for key in unexpected]
    if issues and strict:
        raise BertlabError(
            f"checkpoint {str(source)!r} does not match the model ({len(issues)} keys): {', '.join(issues[:10])}. "
            f"Set training.resume.strict=false to load the matching keys and report the rest",
            "training.resume.strict",
        )
    for issue in issues:
        log.warning("Checkpoint key %s (loaded non-strictly, training.resume.strict=false)", issue)
    return issues


def batches_into_epoch(global_step: int, accumulate_grad_batches: int, batches_per_epoch: int) -> int:
    """How many batches of the current epoch a run that stopped at `global_step` has already consumed."""
    return (global_step * accumulate_grad_batches) % batches_per_epoch


class RNGStateCallback(L.Callback):
    """Saves and restores the Python, NumPy and torch (CPU and CUDA) RNG states with each checkpoint."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["rng_states"] = {
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            log.warning(
                "The checkpoint holds no RNG state: the resumed run will not repeat the original exactly"
            )
            return
        random.setstate((states["python_version"], tuple(states["python"]), states["python_gauss"]))
        np.random.set_state(
            ("MT19937", np.array(states["numpy"], dtype=np.uint32), states["numpy_pos"], 0, 0.0)
        )
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])


# With weights only, a fresh optimizer, schedule and data are fine too: only the model must stay.
WEIGHTS_ONLY_MUST_MATCH = ("architecture.", "tokenizer.", "mlm_head.module.", "classification_head.")
BATCH_SIZE = "training.batch_size"  # may change, with a warning: the data order differs from there


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        items: dict[str, Any] = {}
        for key, value in tree.items():
            items.update(_flatten(value, f"{prefix}{key}."))
        return items
    return {prefix.rstrip("."): tree}


# Keys added to conf/ after runs were saved without them, with the value that means what those runs did:
# such a run resumes as long as the key keeps that value.
INTRODUCED_KEYS = {
    "classification_head.problem_type": "single_label_classification",
    "data.label_separator": ",",
    "architecture.type_vocab_size": 0,
    "data.source.train_examples": None,
    "data.source.val_examples": None,
    "data.split_seed": None,
}


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for every leaf that differs."""
    old, new = _flatten(saved), _flatten(current)
    return [
        (key, old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
        and not (key not in old and key in INTRODUCED_KEYS and new[key] == INTRODUCED_KEYS[key])
    ]


def check_resume_config(
    saved: dict[str, Any], current: dict[str, Any], may_change: tuple[str, ...], request: ResumeRequest
) -> None:
    """Refuse a resume whose config changes the model or the data, naming the key (unless allowed).

    `may_change` lists the keys (and sections) a resume may change: how long and where it trains, what it
    reports (config.schema.resume_may_change). Non-strict loading is meant for changed architectures:
    their key mismatches are listed when loading.
    """
    weights_only, allow = request.load_only_model_state, request.allow_config_changes
    for key, before, after in config_changes(saved, current):
        if key == BATCH_SIZE:
            log.warning(
                "training.batch_size changed on resume (%s -> %s): the data order differs from here",
                before,
                after,
            )
            continue
        if any(key == allowed or key.startswith(f"{allowed}.") for allowed in may_change):
            continue
        if weights_only and not key.startswith(WEIGHTS_ONLY_MUST_MATCH):
            continue
        if not request.strict and key.startswith("architecture."):
            continue
        if allow:
            log.warning(
                "Resuming with a changed %s (%r -> %r): training.resume.allow_config_changes=true",
                key,
                before,
                after,
            )
            continue
        raise BertlabError(
            f"was {before!r} in the run being resumed and is {after!r} now; resuming cannot change the model or "
            f"the data. Drop the override, start a new run, or set training.resume.allow_config_changes=true",
            key,
        )


def check_resume_world(saved: int, current: int, weights_only: bool, allow: bool) -> None:
    """Where a resume picks up in the data depends on how many processes shared each step."""
    if saved == current or weights_only:
        return
    message = (
        f"the checkpoint was written by {saved} process(es), this run would have {current}: training.batch_size "
        f"is per process, so the global batch and the position in the epoch would change"
    )
    if not allow:
        raise BertlabError(
            f"{message}. Resume with the same training.devices x training.num_nodes, or set "
            f"training.resume.allow_config_changes=true to continue anyway",
            "training.devices",
        )
    log.warning("%s; continuing (allow_config_changes)", message)
