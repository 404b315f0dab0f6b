"""The one function that turns a composed config into a finished run in its folder.

launch.py calls it with the folder Hydra chose; tests call it with a temporary one. The task flows
(preparing.py, pretraining.py, finetuning.py) instantiate the config sections; everything they build takes plain
arguments.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bertlab.errors import BertlabError
from bertlab.finetuning import finetune
from bertlab.preparing import prepare
from bertlab.pretraining import pretrain

TASKS = {"pretraining": pretrain, "finetuning": finetune, "preparation": prepare}


def run(cfg: DictConfig, run_dir: str | Path, sweep: str | None = None) -> float | None:
    """Run the task named by experiment.kind; returns the best monitored validation value (for sweepers).

    `sweep` names the multirun sweep the run is a job of (it groups the jobs in W&B); None for one run.
    """
    task = TASKS.get(cfg.experiment.kind)
    if task is None:
        raise BertlabError(f"must be one of {sorted(TASKS)}, got {cfg.experiment.kind!r}", "experiment.kind")
    return task(cfg, Path(run_dir), sweep)
