"""Evaluate a finetuning run's best checkpoint on a labelled file, without retraining.

    python -m bertlab.evaluate runs/finetuning/<name> --data new.jsonl [--text-field f] [--label-field f]

Writes the test outputs (results, predictions; names in run_folder.py) into
<run>/evaluations/<file stem>[-N]/, a new folder each time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from bertlab.data.classification_datamodule import (
    LabelledSequenceDataset,
    PadToLongest,
    encode_examples,
    label_tensor,
)
from bertlab.data.labelled import RecordFields, read_labelled_file
from bertlab.errors import BertlabError
from bertlab.model.classification_head import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from bertlab.reporting.test_outputs import write_test_outputs
from bertlab.run_folder import EVALUATIONS_DIR, RESULTS_FILE, write_json
from bertlab.saved_run import SavedRun
from bertlab.tasks.classification import SequenceClassifier


def evaluate(
    run_dir: Path, data: Path, text_field: str | None, label_field: str | None, checkpoint: str
) -> Path:
    """Test the run's model on `data`; returns the folder the results were written to."""
    run = SavedRun.open(
        run_dir,
        checkpoint,
        "run",
        task="classification",
        missing="checkpoint {candidates} does not exist; is {run_dir} a finetuning run?",
        checkpoint_key="--checkpoint",
    )
    data_cfg = run.config["data"]
    labels = run.labels()
    problem_type = (run.config.get("classification_head") or {}).get("problem_type", SINGLE_LABEL)
    fields = RecordFields(
        text_field or data_cfg["text_field"],
        label_field or data_cfg["label_field"],
        data_cfg.get("text_pair_field"),
        problem_type,
        data_cfg.get("label_separator", ","),
    )
    examples = read_labelled_file(data, fields, "data")
    if problem_type != REGRESSION:
        given = {
            str(label) for e in examples for label in (e.label if problem_type == MULTI_LABEL else [e.label])
        }
        unknown = sorted(given - {str(label) for label in labels})
        if unknown:
            raise BertlabError(
                f"{data} has labels the run never trained on: {unknown[:10]}; it knows {labels}", "data"
            )

    tokenizer = run.tokenizer()
    backbone, head = run.rebuild_classifier()
    model = SequenceClassifier(backbone, head, len(labels), optimizer=None)
    store, segment_starts = encode_examples(examples, tokenizer)
    dataset = LabelledSequenceDataset(store, label_tensor(examples, labels, problem_type), segment_starts)
    loader = DataLoader(dataset, batch_size=64, collate_fn=PadToLongest(tokenizer.pad_id))
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False)
    trainer.test(model, dataloaders=loader, verbose=False)

    base = run_dir / EVALUATIONS_DIR / data.stem
    target, number = base, 1
    while target.exists():
        number += 1
        target = base.with_name(f"{data.stem}-{number}")
    target.mkdir(parents=True)
    write_test_outputs(target, model, trainer, labels, label_separator=fields.label_separator)
    results = json.loads((target / RESULTS_FILE).read_text())
    results.update({"checkpoint": str(run.checkpoint), "data": str(data)})
    write_json(target / RESULTS_FILE, results)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a finetuning run folder, e.g. runs/finetuning/base_cls")
    parser.add_argument("--data", type=Path, required=True, help="labelled .jsonl, .csv or .tsv file")
    parser.add_argument("--text-field", help="default: the run's data.text_field")
    parser.add_argument("--label-field", help="default: the run's data.label_field")
    parser.add_argument("--checkpoint", default="best", help="best, or a path inside the run folder")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"Error: --data {args.data} does not exist", file=sys.stderr)
        return 2
    try:
        target = evaluate(args.run, args.data, args.text_field, args.label_field, args.checkpoint)
    except BertlabError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(json.loads((target / RESULTS_FILE).read_text()), indent=2))
    print(f"Wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
