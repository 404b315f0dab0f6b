"""Export a run to the Hugging Face format or ONNX.

    bertlab-export runs/pretraining/<name> --to hf [OUT_DIR]      (OUT_DIR defaults to <run>/<format>)
    bertlab-export runs/finetuning/<name> --to hf|onnx [OUT_DIR]
    python -m bertlab.export RUN_DIR --to hf|onnx [OUT_DIR]

A pretraining run exports as `BertForMaskedLM` (or `RobertaForMaskedLM` for a run that started from a
RoBERTa model, see hf_import.py), a finetuning run as `BertForSequenceClassification` (or
`RobertaForSequenceClassification`) with `problem_type` and `id2label`/`label2id` from labels.json, so that
`pipeline("text-classification")` gives its labels (a multi-label run: sigmoid scores per label; a
regression run: its logit is the value in the target's units, the standardisation folded into the output
layer). Segment embeddings (text pairs) export as the type table; without them the table is zero. The run is read and rebuilt through saved_run.SavedRun
(trained_model.load_trained_model; the best checkpoint, else the last). The output holds config.json, model.safetensors and the tokenizer
files for `AutoTokenizer`; OUT_DIR is claimed before any work (output_lock.claimed_output: of two exports
to one folder the second is refused at once), written as a hidden folder beside it and renamed when complete.

Hugging Face BERT expresses only original-BERT choices (learned absolute positions, post-norm LayerNorm,
GELU, biases, full attention) and a classifier on the first token; any other choice is refused with the
option named, before anything is written. Its classification head always has a tanh layer (BERT's pooler,
RoBERTa's `classifier.dense`): bertlab's tanh hidden layer of hidden_size maps onto it exactly, and the
default linear head exports with that layer set to a near-identity (tanh(eps x) / eps with eps = 1e-4,
equal within about 1e-7 relative). `transformers` is the optional extra `bertlab[hf]`; ONNX (onnx_export.py)
needs `bertlab[onnx]`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bertlab.atomic_write import publishing_folder
from bertlab.errors import BertlabError
from bertlab.model.classification_head import MULTI_LABEL, REGRESSION
from bertlab.model.encoder import ENCODER_TARGET
from bertlab.model.hf_format import ENCODER_CHOICES, to_hf
from bertlab.output_lock import claimed_output
from bertlab.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT
from bertlab.trained_model import TrainedModel, load_trained_model

MLM_HEAD = "bertlab.model.mlm_head.MLMHead"
CLASSIFICATION_HEAD = "bertlab.model.classification_head.ClassificationHead"
# The tanh layer that stands in for "no hidden layer": tanh(eps x) / eps = x (1 - (eps x)^2 / 3 + ...).
NEAR_IDENTITY_EPS = 1e-4


def check_bert_compatible(run: TrainedModel) -> None:
    """Refuse, naming the option, what Hugging Face BERT cannot express."""
    architecture, head = run.saved.architecture, run.head_config
    if architecture.get("_target_") != ENCODER_TARGET:
        raise BertlabError(
            f"must be {ENCODER_TARGET} to export, got {architecture.get('_target_')!r}",
            "architecture._target_",
        )
    hf_class = run.hf_format.masked_lm if run.task == "mlm" else run.hf_format.sequence_classification
    for key, supported in ENCODER_CHOICES.items():
        if architecture[key] not in supported:
            raise BertlabError(
                f"{architecture[key]!r} cannot be expressed in the Hugging Face BERT format ({hf_class} "
                f"supports {' or '.join(repr(v) for v in supported)}); this run can only be used with bertlab",
                f"architecture.{key}",
            )
    if run.task == "classification":
        check_classifier_compatible(run, hf_class)
        return
    if head.get("_target_", MLM_HEAD) != MLM_HEAD:
        raise BertlabError(
            f"must be {MLM_HEAD} to export, got {head.get('_target_')!r}", "mlm_head.module._target_"
        )
    head_eps = head.get("layer_norm_eps", architecture["layer_norm_eps"])
    if head_eps != architecture["layer_norm_eps"]:
        raise BertlabError(
            f"{head_eps} differs from architecture.layer_norm_eps={architecture['layer_norm_eps']}; Hugging Face "
            f"BERT uses one epsilon for every LayerNorm",
            "mlm_head.module.layer_norm_eps",
        )


def check_classifier_compatible(run: TrainedModel, hf_class: str) -> None:
    """The Hugging Face classifiers read the first token and have one tanh layer of hidden_size."""
    head = run.head_config
    if head.get("_target_", CLASSIFICATION_HEAD) != CLASSIFICATION_HEAD:
        raise BertlabError(
            f"must be {CLASSIFICATION_HEAD} to export, got {head.get('_target_')!r}",
            "classification_head._target_",
        )
    if head.get("pooling", "cls") != "cls":
        raise BertlabError(
            f"{head['pooling']!r} cannot be expressed in the Hugging Face format ({hf_class} classifies the "
            f"first token); export to ONNX (--to onnx) or predict with bertlab-predict instead",
            "classification_head.pooling",
        )
    size, hidden = head.get("hidden_layer_size"), run.saved.architecture["hidden_size"]
    if size not in (None, hidden):
        raise BertlabError(
            f"{size} cannot be expressed in the Hugging Face format ({hf_class}'s hidden layer has the "
            f"encoder's hidden_size={hidden}); use null or {hidden}, or export to ONNX (--to onnx)",
            "classification_head.hidden_layer_size",
        )


def hf_state_dict(run: TrainedModel, pad_token_id: int) -> dict[str, torch.Tensor]:
    """bertlab's checkpoint keys mapped onto the Hugging Face format's (the fused QKV matrix split in three)."""
    architecture, fmt = run.saved.architecture, run.hf_format
    state = {k: v for k, v in run.saved.state_dict.items() if k.startswith(("backbone.", "head."))}
    num_layers, fused = architecture["num_layers"], architecture["fused_qkv"]
    if run.task == "mlm":
        if run.head_config.get("tie_word_embeddings", True):
            state["head.decoder.weight"] = state["backbone.word_embeddings.weight"]
        return to_hf(state, fmt, num_layers, fused, pad_token_id)
    out = to_hf(state, fmt, num_layers, fused, pad_token_id, mlm_head=False)
    if run.head_config.get("hidden_layer_size"):
        layers = {"hidden": "head.classifier.0", "out": "head.classifier.3"}
        hidden_weight, hidden_bias = state[f"{layers['hidden']}.weight"], state[f"{layers['hidden']}.bias"]
        out_weight, out_bias = state[f"{layers['out']}.weight"], state[f"{layers['out']}.bias"]
    else:  # no hidden layer: Hugging Face's tanh layer as a near-identity, the output layer scaled back
        eps = NEAR_IDENTITY_EPS
        out_weight, out_bias = state["head.classifier.0.weight"], state["head.classifier.0.bias"]
        width = out_weight.size(1)
        hidden_weight = torch.eye(width, dtype=out_weight.dtype) * eps
        hidden_bias = out_weight.new_zeros(width)
        out_weight = out_weight / eps
    if run.problem_type == REGRESSION:  # Hugging Face's regression logits are the value: fold the scale in
        std, mean = state["head.target_std"], state["head.target_mean"]
        out_weight, out_bias = out_weight * std, out_bias * std + mean
    for name, tensor in (
        (f"{fmt.classifier_hidden}.weight", hidden_weight),
        (f"{fmt.classifier_hidden}.bias", hidden_bias),
        (f"{fmt.classifier_out}.weight", out_weight),
        (f"{fmt.classifier_out}.bias", out_bias),
    ):
        out[name] = tensor.detach().clone().contiguous()
    return out


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise BertlabError(
            "exporting to the Hugging Face format needs transformers and safetensors: "
            "pip install 'bertlab[hf]' (or pip install transformers safetensors)",
            "to",
        ) from error
    return transformers


def hf_model(run: TrainedModel) -> Any:
    """The run as a transformers model (eval mode) with bertlab's weights; refuses what it cannot express."""
    check_bert_compatible(run)
    transformers = _transformers()
    tokenizer, fmt = run.tokenizer, run.hf_format
    config = transformers.AutoConfig.for_model(
        fmt.model_type,
        **fmt.config_kwargs(
            run.saved.architecture,
            run.saved.vocab_size,
            tokenizer.pad_id,
            bool(run.head_config.get("tie_word_embeddings", True)) if run.task == "mlm" else True,
            tokenizer.cls_id,
            tokenizer.sep_id,
            labels=run.labels,
        ),
    )
    if run.task == "classification":
        config.problem_type = run.problem_type
        if run.problem_type == MULTI_LABEL:  # not read by transformers: the decision rule, for the record
            config.multi_label_threshold = round(float(run.head.threshold), 4)
    name = fmt.masked_lm if run.task == "mlm" else fmt.sequence_classification
    model = getattr(transformers, name)(config)
    missing, unexpected = model.load_state_dict(hf_state_dict(run, tokenizer.pad_id), strict=False)
    missing = [
        key for key in missing if not key.endswith("position_ids") and not key.endswith("token_type_ids")
    ]
    if missing or unexpected:  # a bug here, not a user error: say exactly what did not map
        raise RuntimeError(f"weights did not map onto {name}: missing {missing}, unexpected {unexpected}")
    return model.eval()


def hf_tokenizer(run: TrainedModel) -> Any:
    """The run's tokenizer as a `PreTrainedTokenizerFast` with its special tokens named."""
    transformers = _transformers()
    special = run.tokenizer.special
    tokenizer_cfg = run.saved.config.get("tokenizer", {})
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(run.saved.tokenizer_file),
        unk_token=special.unk,
        pad_token=special.pad,
        cls_token=special.cls,
        sep_token=special.sep,
        mask_token=special.mask,
        **({"bos_token": special.cls, "eos_token": special.sep} if run.hf_format.bos_eos else {}),
        model_max_length=tokenizer_cfg.get("max_length", run.saved.architecture["max_position_embeddings"]),
        padding_side="right",
        # BERT's tokenizers give the segments of a pair (the type table is zero when bertlab had none)
        model_input_names=["input_ids", "attention_mask"]
        if run.hf_format.bos_eos
        else ["input_ids", "token_type_ids", "attention_mask"],
    )


def export_hf(
    run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write `out_dir` with config.json, model.safetensors and the tokenizer files; returns `out_dir`."""
    out_dir = Path(out_dir)
    with claimed_output(out_dir, "out_dir", overwrite, folder=True):
        run = load_trained_model(run_dir, checkpoint, key="run_dir")
        model = hf_model(run)
        tokenizer = hf_tokenizer(run)
        with publishing_folder(out_dir) as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    return out_dir


def export_onnx(
    run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write `out_dir` with model.onnx, the tokenizer and bertlab_onnx.json (see onnx_export.py)."""
    from bertlab.onnx_export import write_onnx

    out_dir = Path(out_dir)
    with claimed_output(out_dir, "out_dir", overwrite, folder=True):
        run = load_trained_model(run_dir, checkpoint, key="run_dir")
        with publishing_folder(out_dir) as folder:
            write_onnx(run, folder)
    return out_dir


EXPORTERS: dict[str, Callable[..., Path]] = {"hf": export_hf, "onnx": export_onnx}


def main(argv: list[str] | None = None) -> int:
    """Command line: bertlab-export RUN_DIR --to hf|onnx [OUT_DIR] [--checkpoint PATH] [--overwrite]."""
    parser = argparse.ArgumentParser(
        prog="bertlab-export", description="Export a bertlab pretraining or finetuning run to another format."
    )
    parser.add_argument("run_dir", type=Path, help="run folder, e.g. runs/pretraining/base")
    parser.add_argument("out_dir", type=Path, nargs="?", help="output folder (default: RUN_DIR/<format>)")
    parser.add_argument("--to", choices=sorted(EXPORTERS), default="hf", help="target format (default: hf)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help=f"checkpoint relative to RUN_DIR (default: {BEST_CHECKPOINT}, else {LAST_CHECKPOINT})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    args = parser.parse_intermixed_args(argv)
    out_dir = args.out_dir or args.run_dir / args.to
    try:
        written = EXPORTERS[args.to](
            args.run_dir, out_dir, checkpoint=args.checkpoint, overwrite=args.overwrite
        )
    except BertlabError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(f"Exported {args.run_dir} to {written} ({args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
