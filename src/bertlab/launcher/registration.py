"""Make the schemas (config/schema.py) and the resolvers that conf/ uses available before composing."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from bertlab.config.schema import (
    FinetuneTrainingConfig,
    LoggingConfig,
    PretrainedExperimentConfig,
    PretrainTrainingConfig,
    RunConfig,
    SuiteConfig,
)
from bertlab.errors import BertlabError
from bertlab.model.classification_head import check_problem_type
from bertlab.run_folder import job_folder_name
from bertlab.tasks.objectives import MAIN_METRIC

SWEEP_DIRECTIONS = {"min": "minimize", "max": "maximize"}


def sweep_direction(mode: str) -> str:
    """A sweeper's direction from training.checkpoint.mode, so the search optimises what "best" means."""
    if mode not in SWEEP_DIRECTIONS:
        raise BertlabError(f"must be min or max, got {mode!r}", "training.checkpoint.mode")
    return SWEEP_DIRECTIONS[mode]


def main_metric(problem_type: str) -> str:
    """training.checkpoint.monitor's default for a finetune: the main validation metric of its problem type."""
    try:
        return f"val/{MAIN_METRIC[check_problem_type(problem_type)]}"
    except BertlabError as error:
        raise error.in_section("classification_head") from None


RESOLVERS = {
    "bertlab.job_folder": job_folder_name,
    "bertlab.sweep_direction": sweep_direction,
    "bertlab.main_metric": main_metric,
}


def register() -> None:
    """Make the schemas and the resolvers available to conf/ (idempotent); call before composing."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(group="logging", name="logging_schema", node=LoggingConfig)
    store.store(group="training", name="training_schema", node=PretrainTrainingConfig)
    store.store(group="training", name="finetune_training_schema", node=FinetuneTrainingConfig)
    store.store(
        group="pretrained_experiment", name="pretrained_experiment_schema", node=PretrainedExperimentConfig
    )
    store.store(name="suite_schema", node=SuiteConfig)  # experiment/suite.yaml: /suite_schema@suite
