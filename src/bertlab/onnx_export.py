"""A run as an ONNX graph with dynamic batch and sequence axes, for ONNX Runtime and the serving stacks
built on it.

Inputs `input_ids` and `attention_mask` (int64, [batch, tokens]; 1 marks a real token), and
`token_type_ids` (the segment of each token: 1 for the second text of a pair) for an encoder with segment
embeddings. Outputs: a pretraining run's `logits` (MLM, [batch, tokens, vocab]) and `last_hidden_state`
([batch, tokens, hidden]); a finetuning run's `logits` ([batch, labels]; for regression [batch, 1], the
value in the target's units). Beside model.onnx: the run's tokenizer.json and
bertlab_onnx.json (task, labels, special token ids, max_length). Every architecture bertlab trains exports
(no Hugging Face format is involved). `onnx`, `onnxscript` and `onnxruntime` are the extra `bertlab[onnx]`.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertlab.errors import BertlabError
from bertlab.model.classification_head import MULTI_LABEL, REGRESSION
from bertlab.trained_model import TrainedModel

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
INFO_FILE = "bertlab_onnx.json"
OPSET = 18
INSTALL_HINT = "pip install 'bertlab[onnx]' (or pip install onnx onnxscript onnxruntime)"


class ExportedMLM(nn.Module):
    """Backbone and MLM head: logits at every position and the hidden states."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.backbone(input_ids, attention_mask)
        return self.head(hidden), hidden


class ExportedClassifier(nn.Module):
    """Backbone and classification head: one row of logits per sequence (regression: the value)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.regression = head.problem_type == REGRESSION

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.backbone(input_ids, attention_mask, token_type_ids=token_type_ids)
        logits = self.head(hidden, attention_mask)
        return self.head.predict(logits).unsqueeze(-1) if self.regression else logits


def require_onnx() -> None:
    """One clear line when the optional dependencies are missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise BertlabError(
            f"exporting to ONNX needs {error.name}: {INSTALL_HINT}",
            "to",
        ) from None


def exported_module(run: TrainedModel) -> tuple[nn.Module, list[str]]:
    """The module traced into the graph and the names of its outputs."""
    if run.task == "mlm":
        return ExportedMLM(run.backbone, run.head).eval(), ["logits", "last_hidden_state"]
    return ExportedClassifier(run.backbone, run.head).eval(), ["logits"]


def write_onnx(run: TrainedModel, folder: Path) -> Path:
    """model.onnx, tokenizer.json and bertlab_onnx.json of `run` in `folder`; returns the model file."""
    require_onnx()
    module, outputs = exported_module(run)
    tokenizer = run.tokenizer
    # Example inputs with padding and two lengths, so nothing specialises on a size.
    tokens = min(16, run.saved.architecture["max_position_embeddings"])
    input_ids = torch.full((2, tokens), tokenizer.pad_id, dtype=torch.long)
    input_ids[:, 0], input_ids[0, 1:-1], input_ids[0, -1] = (
        tokenizer.cls_id,
        tokenizer.cls_id + 1,
        tokenizer.sep_id,
    )
    input_ids[1, 1 : tokens // 2] = tokenizer.cls_id + 1
    input_ids[1, tokens // 2] = tokenizer.sep_id
    attention_mask = (torch.arange(tokens)[None, :] <= torch.tensor([[tokens - 1], [tokens // 2]])).long()
    path = folder / MODEL_FILE
    batch = torch.export.Dim("batch", min=1)
    sequence = torch.export.Dim("sequence", min=1, max=run.saved.architecture["max_position_embeddings"])
    names = ["input_ids", "attention_mask"]
    examples: tuple[torch.Tensor, ...] = (input_ids, attention_mask)
    if run.task == "classification" and getattr(run.backbone, "type_vocab_size", 0):
        names.append("token_type_ids")
        examples = (*examples, (torch.arange(tokens)[None, :] >= tokens // 4).long() * attention_mask)
    shapes = {name: {0: batch, 1: sequence} for name in names}
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                examples,
                input_names=names,
                output_names=outputs,
                dynamic_shapes=shapes,
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    program.save(str(path))
    shutil.copy(run.saved.tokenizer_file, folder / "tokenizer.json")
    info: dict[str, Any] = {
        "task": run.task,
        "inputs": names,
        **({"problem_type": run.problem_type} if run.problem_type else {}),
        **({"threshold": round(float(run.head.threshold), 4)} if run.problem_type == MULTI_LABEL else {}),
        "outputs": outputs,
        "labels": run.labels,
        "max_length": tokenizer.max_length,
        "pad_token_id": tokenizer.pad_id,
        "cls_token_id": tokenizer.cls_id,
        "sep_token_id": tokenizer.sep_id,
        "source": {"run": str(run.saved.run_dir), "checkpoint": str(run.saved.checkpoint)},
    }
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return path
