"""Seeding a finetune from a pretraining run: find the run and checkpoint, inherit its architecture,
load its backbone weights strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertlab.errors import BertlabError
from bertlab.run_folder import BEST_CHECKPOINT, CHECKPOINTS_DIR, LAST_CHECKPOINT

# Keys that change what the weights compute with but not which weights exist.
WEIGHT_NEUTRAL = {"dropout", "attention_dropout", "attention", "local_window", "global_every"}
CHECKPOINTS = {"best": BEST_CHECKPOINT, "last": LAST_CHECKPOINT}


def existing_runs(pretraining_root: Path) -> list[str]:
    if not pretraining_root.is_dir():
        return []
    return sorted(p.name for p in pretraining_root.iterdir() if (p / CHECKPOINTS_DIR).is_dir())


def pretrained_checkpoint(output_dir: str | Path, name: str, checkpoint: str) -> Path:
    """The checkpoint file of pretraining run `name`: best, last, or a path (absolute or in the run folder)."""
    root = Path(output_dir) / "pretraining"
    run_dir = root / name
    if not (run_dir / CHECKPOINTS_DIR).is_dir():
        runs = existing_runs(root)
        raise BertlabError(
            f"no pretraining run {name!r} in {str(root)!r}; runs there: {runs or 'none'}. Pretrain one with "
            f"`python launch.py +experiment=pretrain experiment.name={name}` or use pretrained_experiment=none",
            "pretrained_experiment.name",
        )
    path = run_dir / CHECKPOINTS[checkpoint] if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not path.is_absolute() and checkpoint not in CHECKPOINTS:
        path = run_dir / path
    if not path.is_file():
        available = sorted(str(p.relative_to(run_dir)) for p in (run_dir / CHECKPOINTS_DIR).glob("*.ckpt"))
        raise BertlabError(
            f"checkpoint {str(path)!r} does not exist; the run has {available or 'no checkpoints'}",
            "pretrained_experiment.checkpoint",
        )
    return path


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
