"""A finished run's model with what using it needs: backbone and head (rebuilt by saved_run.SavedRun),
tokenizer, labels and the Hugging Face family it belongs to.

export, onnx_export and predict take their model from `load_trained_model`; the reading and rebuilding
itself is SavedRun's (the one reader of saved runs, also evaluate's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from bertlab.errors import BertlabError
from bertlab.model.classification_head import SINGLE_LABEL
from bertlab.model.hf_format import BERT, FORMATS, HFFormat
from bertlab.run_folder import RUN_INFO_FILE
from bertlab.saved_run import SavedRun
from bertlab.tokenizer import TextTokenizer


@dataclass
class TrainedModel:
    """A run's modules in eval mode on the CPU, and what was read to build them."""

    saved: SavedRun  # the run folder and checkpoint it was rebuilt from (config, weights, architecture)
    task: str  # "mlm" | "classification"
    backbone: nn.Module
    head: nn.Module  # MLMHead or ClassificationHead
    tokenizer: TextTokenizer
    labels: list | None  # a finetune's label vocabulary (ids index into it)

    @property
    def head_config(self) -> dict[str, Any]:
        if self.task == "mlm":
            return dict((self.saved.config.get("mlm_head") or {}).get("module", {}))
        return dict(self.saved.config.get("classification_head") or {})

    @property
    def problem_type(self) -> str | None:
        """A finetune's problem type (runs saved before there were several: single label); None for MLM."""
        if self.task == "mlm":
            return None
        return self.head_config.get("problem_type", SINGLE_LABEL)

    @property
    def text_pair_field(self) -> str | None:
        """The field of a finetune's second text (None: it reads one text)."""
        return (self.saved.config.get("data") or {}).get("text_pair_field")

    @property
    def hf_format(self) -> HFFormat:
        """RoBERTa for a run that started, directly or through its pretraining run, from a RoBERTa model."""
        return FORMATS[_hf_model_type(self.saved.run_dir, self.saved.config)]


def load_trained_model(
    run_dir: str | Path, checkpoint: str | Path | None = None, task: str | None = None, key: str = "run"
) -> TrainedModel:
    """The run's model at `checkpoint` (best, last or a path; default the best, else the last).

    `key` is the command's argument that names the run (its errors name it; a chosen checkpoint's name
    --checkpoint).
    """
    run = SavedRun.open(
        run_dir,
        checkpoint,
        key,
        task=task,
        missing="no checkpoint at {candidates}; give the folder of a finished run (runs/pretraining/<name> "
        "or runs/finetuning/<name>) or --checkpoint",
        checkpoint_key="--checkpoint",
    )
    if "backbone.word_embeddings.weight" not in run.state_dict:
        raise BertlabError(
            f"checkpoint {str(run.checkpoint)!r} holds no bertlab encoder weights",
            key if checkpoint is None else "--checkpoint",
        )
    found = run.task or ("classification" if "head.classifier.0.weight" in run.state_dict else "mlm")
    if found == "classification":
        backbone, head = run.rebuild_classifier()
        labels = run.labels()
    else:
        (backbone, head), labels = run.rebuild_mlm(), None
    return TrainedModel(run, found, backbone, head, run.tokenizer(), labels)


def _hf_model_type(run_dir: Path, config: dict[str, Any]) -> str:
    """hf_source of the run's config (a pretraining run), else of the start its run.json records (a finetune:
    a Hugging Face folder, or a pretraining run that has one); BERT when none."""
    source = config.get("hf_source") or {}
    if source.get("model_type"):
        return source["model_type"]
    started = _run_info(run_dir).get("pretrained_from") or {}
    if (started.get("hf_source") or {}).get("model_type"):
        return started["hf_source"]["model_type"]
    if started.get("run"):
        pretrained = _run_info(Path(started["run"]))
        if (pretrained.get("hf_source") or {}).get("model_type"):
            return pretrained["hf_source"]["model_type"]
    return BERT.model_type


def _run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_INFO_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
