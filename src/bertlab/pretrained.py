"""Seeding a finetune from a pretraining run: open the run (saved_run.SavedRun), inherit its architecture,
load its backbone weights strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertlab.errors import BertlabError
from bertlab.run_folder import CHECKPOINTS_DIR, PRETRAINING, run_dir_of
from bertlab.saved_run import SavedRun, runs_in

# Keys that change what the weights compute with but not which weights exist.
WEIGHT_NEUTRAL = {"dropout", "attention_dropout", "attention", "local_window", "global_every"}


def open_pretrained_run(output_dir: str | Path, name: str, checkpoint: str) -> SavedRun:
    """Pretraining run `name` at `checkpoint` (best, last, or a path absolute or in the run folder)."""
    run_dir = run_dir_of(output_dir, PRETRAINING, name)
    if not (run_dir / CHECKPOINTS_DIR).is_dir():
        runs = runs_in(run_dir.parent)
        raise BertlabError(
            f"no pretraining run {name!r} in {str(run_dir.parent)!r}; runs there: {runs or 'none'}. Pretrain one "
            f"with `python launch.py +experiment=pretrain experiment.name={name}` or use "
            f"pretrained_experiment=none",
            "pretrained_experiment.name",
        )
    return SavedRun.open(
        run_dir, checkpoint, "pretrained_experiment.name", checkpoint_key="pretrained_experiment.checkpoint"
    )


def inherit_architecture(
    pretrained: dict[str, Any], requested: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The pretrained architecture with the keys the user set (non-null) that leave the weights valid.

    Returns the merged architecture and the weight-neutral overrides ({key: {"pretrained", "used"}}), so
    that a change of dropout or attention kernel is logged and recorded, never silent.
    """
    merged = dict(pretrained)
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in requested.items():
        if value is None or key == "_target_" or value == pretrained.get(key):
            continue
        if key not in WEIGHT_NEUTRAL:
            raise BertlabError(
                f"is {value!r} but the pretrained backbone has {pretrained.get(key)!r}; the weights cannot be "
                f"loaded into another shape. Drop the override (the pretrained value is used) or finetune with "
                f"pretrained_experiment=none",
                f"architecture.{key}",
            )
        merged[key] = value
        overrides[key] = {"pretrained": pretrained.get(key), "used": value}
    return merged, overrides


def load_backbone(backbone: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load the `backbone.*` weights of an MLM checkpoint; any mismatch stops the run."""
    weights = {
        key.removeprefix("backbone."): value
        for key, value in state_dict.items()
        if key.startswith("backbone.")
    }
    try:
        result = backbone.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shapes differ
        raise BertlabError(
            f"checkpoint {str(source)!r} does not fit the backbone: {error}", "architecture"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise BertlabError(
            f"checkpoint {str(source)!r} does not match the backbone: missing {result.missing_keys[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}",
            "pretrained_experiment.checkpoint",
        )
