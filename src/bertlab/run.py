"""The one function that turns a composed config into a finished run in its folder.

launch.py calls it with the folder Hydra chose; tests call it with a temporary one. The kinds of run
(preparation.py, pretraining.py, finetuning.py) instantiate the config sections; everything they build takes plain
arguments.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from bertlab.errors import BertlabError
from bertlab.finetuning import finetune
from bertlab.preparation import prepare
from bertlab.pretraining import pretrain
from bertlab.run_folder import FINETUNING, PREPARATION, PRETRAINING

# experiment.kind -> the function that runs that kind of run.
RUN_KINDS = {PRETRAINING: pretrain, FINETUNING: finetune, PREPARATION: prepare}


def run(cfg: DictConfig, run_dir: str | Path, sweep: str | None = None) -> float | None:
    """Run the kind of run experiment.kind names; returns the best monitored validation value (for sweepers).

    `sweep` names the multirun sweep the run is a job of (it groups the jobs in W&B); None for one run.
    """
    run_kind = RUN_KINDS.get(cfg.experiment.kind)
    if run_kind is None:
        raise BertlabError(
            f"must be one of {sorted(RUN_KINDS)}, got {cfg.experiment.kind!r}", "experiment.kind"
        )
    return run_kind(cfg, Path(run_dir), sweep)
