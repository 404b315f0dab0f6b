"""The one function that turns a composed config into a finished run in its folder.

launch.py calls it with the folder Hydra chose; tests call it with a temporary one. The kinds of run
(preparation.py, pretraining.py, finetuning.py) instantiate the config sections; everything they build takes plain
arguments.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bertlab.errors import BertlabError
from bertlab.finetuning import Finetuning
from bertlab.flow import run_training
from bertlab.preparation import prepare
from bertlab.pretraining import Pretraining
from bertlab.run_folder import FINETUNING, PREPARATION, PRETRAINING

# experiment.kind -> what is different about that kind of training run (flow.py runs the rest); a
# preparation (PREPARATION) is no training run and has its own function.
RUN_KINDS = {PRETRAINING: Pretraining, FINETUNING: Finetuning}


def run(cfg: DictConfig, run_dir: str | Path, sweep: str | None = None) -> float | None:
    """Run the kind of run experiment.kind names; returns the best monitored validation value (for sweepers).

    `sweep` names the multirun sweep the run is a job of (it groups the jobs in W&B); None for one run.
    """
    kind, run_dir = cfg.experiment.kind, Path(run_dir)
    if kind == PREPARATION:
        return prepare(cfg, run_dir, sweep)
    if kind not in RUN_KINDS:
        raise BertlabError(
            f"must be one of {sorted([*RUN_KINDS, PREPARATION])}, got {kind!r}", "experiment.kind"
        )
    return run_training(cfg, run_dir, sweep, RUN_KINDS[kind](cfg, run_dir))
