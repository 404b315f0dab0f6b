"""The `${bertlab.*:...}` resolvers that conf/ uses; registered with the schemas, before composition."""

from __future__ import annotations

from omegaconf import OmegaConf

from bertlab.errors import BertlabError
from bertlab.run_folder import job_folder_name

SWEEP_DIRECTIONS = {"min": "minimize", "max": "maximize"}


def sweep_direction(mode: str) -> str:
    """A sweeper's direction from training.checkpoint.mode, so the search optimises what "best" means."""
    if mode not in SWEEP_DIRECTIONS:
        raise BertlabError(f"must be min or max, got {mode!r}", "training.checkpoint.mode")
    return SWEEP_DIRECTIONS[mode]


RESOLVERS = {"bertlab.job_folder": job_folder_name, "bertlab.sweep_direction": sweep_direction}


def register_resolvers() -> None:
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
