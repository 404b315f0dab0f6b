"""Experiment loggers: the run folder's CSV files always, Weights & Biases when asked (offline by default)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from bertlab.run_folder import WANDB_ID_FILE

log = logging.getLogger(__name__)


def wandb_mode(requested: str) -> str:
    """`auto`: online only where W&B is configured (API key or WANDB_MODE); never prompts, never blocks."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def wandb_logger(
    run_dir: Path,
    name: str,
    project: str,
    entity: str | None,
    mode: str,
    group: str | None,
    tags: list[str],
    config: dict[str, Any],
) -> Logger:
    """A W&B run whose id is written into the run folder at start, so a resume continues the same run."""
    id_file = Path(run_dir) / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id + "\n")
    os.environ.setdefault("WANDB_START_METHOD", "thread")
    resolved_mode = wandb_mode(mode)
    log.info("W&B run %s (%s mode) in %s", run_id, resolved_mode, run_dir)
    logger = WandbLogger(
        name=name,
        project=project,
        entity=entity,
        group=group,
        tags=list(tags),
        save_dir=str(run_dir),
        id=run_id,
        resume="allow",
        mode=resolved_mode,
    )
    logger.log_hyperparams(config)
    return logger


def wandb_run_info(loggers: list[Logger]) -> dict[str, Any] | None:
    """The W&B run as W&B itself reports it (id, group, project, mode), for the run-info file: W&B's
    offline run files are a private binary format, so this is where a user or a test reads them."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            return {
                "id": run.id,
                "group": run.group or None,
                "project": run.project,
                "mode": "offline" if run.offline else "online",
            }
    return None


def finish_wandb() -> None:
    """Close the W&B run of this job, so the next job of a sweep gets its own."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
