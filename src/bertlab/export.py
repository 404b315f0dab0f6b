"""Export a pretraining run to the Hugging Face format, loadable with `BertForMaskedLM.from_pretrained`
(or `RobertaForMaskedLM` for a run that started from a RoBERTa model, see hf_import.py).

    bertlab-export runs/pretraining/<name> --to hf [OUT_DIR]      (OUT_DIR defaults to <run>/hf)
    python -m bertlab.export runs/pretraining/<name> --to hf [OUT_DIR]

The run folder gives the weights (the best checkpoint, else the last), the resolved config stored in the
checkpoint (or .hydra/config.yaml) and the tokenizer, all read through saved_run.SavedRun. The output holds
config.json, model.safetensors and the tokenizer files for `PreTrainedTokenizerFast` / `AutoTokenizer`.

Hugging Face BERT expresses only original-BERT choices (learned absolute positions, post-norm LayerNorm,
GELU, biases, full attention); any other choice is refused with the option named, before anything is
written. `transformers` is the optional extra `bertlab[hf]`, imported only when exporting.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bertlab.errors import BertlabError
from bertlab.model.encoder import ENCODER_TARGET
from bertlab.model.hf_format import BERT, ENCODER_CHOICES, FORMATS, HFFormat, to_hf
from bertlab.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT
from bertlab.saved_run import SavedRun
from bertlab.tokenizer import TextTokenizer

MLM_HEAD = "bertlab.model.mlm_head.MLMHead"


def open_run(run_dir: str | Path, checkpoint: str | Path | None = None) -> SavedRun:
    """The pretraining run to export: `checkpoint` (relative to the run folder or absolute), else the best
    checkpoint, else the last; errors name the missing piece."""
    run = SavedRun.open(
        run_dir,
        checkpoint,
        "checkpoint",
        missing="no checkpoint at {candidates}; give the folder of a finished pretraining run "
        "(runs/pretraining/<name>) or --checkpoint",
    )
    if "backbone.word_embeddings.weight" not in run.state_dict:
        raise BertlabError(f"checkpoint {str(run.checkpoint)!r} holds no bertlab MLM weights", "checkpoint")
    return run


def mlm_head_config(run: SavedRun) -> dict[str, Any]:
    return dict(run.config.get("mlm_head", {}).get("module", {}))


def hf_format(run: SavedRun) -> HFFormat:
    """RoBERTa for a run that started from a RoBERTa model (hf_source in its config), else BERT."""
    return FORMATS[(run.config.get("hf_source") or {}).get("model_type", BERT.model_type)]


def check_bert_compatible(run: SavedRun) -> None:
    """Refuse, naming the option, what Hugging Face BERT cannot express."""
    architecture, head = run.architecture, mlm_head_config(run)
    if architecture.get("_target_") != ENCODER_TARGET:
        raise BertlabError(
            f"must be {ENCODER_TARGET} to export, got {architecture.get('_target_')!r}",
            "architecture._target_",
        )
    for key, supported in ENCODER_CHOICES.items():
        if architecture[key] not in supported:
            raise BertlabError(
                f"{architecture[key]!r} cannot be expressed in the Hugging Face BERT format (BertForMaskedLM "
                f"supports {' or '.join(repr(v) for v in supported)}); this run can only be used with bertlab",
                f"architecture.{key}",
            )
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


def tied(run: SavedRun) -> bool:
    return bool(mlm_head_config(run).get("tie_word_embeddings", True))


def hf_state_dict(run: SavedRun, pad_token_id: int) -> dict[str, torch.Tensor]:
    """bertlab's checkpoint keys mapped onto the Hugging Face format's (the fused QKV matrix split in three)."""
    architecture = run.architecture
    state = {k: v for k, v in run.state_dict.items() if k.startswith(("backbone.", "head."))}
    if tied(run):
        state["head.decoder.weight"] = state["backbone.word_embeddings.weight"]
    return to_hf(state, hf_format(run), architecture["num_layers"], architecture["fused_qkv"], pad_token_id)


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


def export_hf(
    run_dir: str | Path, out_dir: str | Path, checkpoint: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Write `out_dir` with config.json, model.safetensors and the tokenizer files; returns `out_dir`."""
    run = open_run(run_dir, checkpoint)
    check_bert_compatible(run)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BertlabError(
            f"{str(out_dir)!r} exists and is not empty; choose another folder or --overwrite", "out_dir"
        )
    transformers = _transformers()
    architecture = run.architecture
    tokenizer_cfg = run.config.get("tokenizer", {})
    tokenizer = TextTokenizer.from_file(run.tokenizer_file)
    fmt = hf_format(run)
    config = transformers.AutoConfig.for_model(
        fmt.model_type,
        **fmt.config_kwargs(
            architecture, run.vocab_size, tokenizer.pad_id, tied(run), tokenizer.cls_id, tokenizer.sep_id
        ),
    )
    model = getattr(transformers, fmt.masked_lm)(config)
    missing, unexpected = model.load_state_dict(hf_state_dict(run, tokenizer.pad_id), strict=False)
    missing = [
        key for key in missing if not key.endswith("position_ids") and not key.endswith("token_type_ids")
    ]
    if missing or unexpected:  # a bug here, not a user error: say exactly what did not map
        raise RuntimeError(
            f"weights did not map onto {fmt.masked_lm}: missing {missing}, unexpected {unexpected}"
        )
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir)
    special = tokenizer.special
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(run.tokenizer_file),
        unk_token=special.unk,
        pad_token=special.pad,
        cls_token=special.cls,
        sep_token=special.sep,
        mask_token=special.mask,
        **({"bos_token": special.cls, "eos_token": special.sep} if fmt.bos_eos else {}),
        model_max_length=tokenizer_cfg.get("max_length", architecture["max_position_embeddings"]),
        padding_side="right",
    )
    fast.save_pretrained(out_dir)
    return out_dir


EXPORTERS: dict[str, Callable[..., Path]] = {"hf": export_hf}


def main(argv: list[str] | None = None) -> int:
    """Command line: bertlab-export RUN_DIR --to hf [OUT_DIR] [--checkpoint PATH] [--overwrite]."""
    parser = argparse.ArgumentParser(
        prog="bertlab-export", description="Export a bertlab pretraining run to another format."
    )
    parser.add_argument("run_dir", type=Path, help="pretraining run folder, e.g. runs/pretraining/base")
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
        text = str(error)
        if error.key and not text.startswith(f"{error.key}: "):
            text = f"{error.key}: {text}"
        print(f"bertlab-export: error: {text}", file=sys.stderr)
        return 2
    print(f"Exported {args.run_dir} to {written} ({args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
