"""Labelled examples: the user's .jsonl/.csv/.tsv files, or the embedded sets.

A record holds a text, optionally the second text of a pair, and a label whose shape the problem type
decides (Hugging Face's names, model/classification_head.py): one label, a list of labels (multi-label;
in a .csv/.tsv cell the labels are split by `label_separator`), or a number (regression). A source
returns, per split, its examples, or None for a split to be carved off the training data. Problems name
the file, the line and the field.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bertlab.data.corpus import SPLITS
from bertlab.data.embedded_corpus import EMBEDDED_TASKS, generate_labelled
from bertlab.data.text_files import json_record, text_lines
from bertlab.errors import BertlabError
from bertlab.model.classification_head import (
    MULTI_LABEL,
    REGRESSION,
    SINGLE_LABEL,
    check_problem_type,
)

Label = str | int | float | tuple[str | int, ...]
FORMATS = (".jsonl", ".csv", ".tsv")
PROBLEM_TYPE_KEY = "classification_head.problem_type"


class Example(NamedTuple):
    """One labelled record: its text, its label (a tuple of labels for multi-label, a float for regression)
    and the second text of a pair (None for a single text)."""

    text: str
    label: Label
    text_pair: str | None = None

    def texts(self) -> list[str]:
        """Its texts, for a tokenizer to learn from."""
        return [self.text] if self.text_pair is None else [self.text, self.text_pair]


@dataclass(frozen=True)
class RecordFields:
    """Where a record keeps its texts and label, and what shape the label has."""

    text_field: str = "text"
    label_field: str = "label"
    text_pair_field: str | None = None
    problem_type: str = SINGLE_LABEL
    label_separator: str = ","


def _scalar_label(value: object) -> str | int:
    """Integers stay integers (sorted numerically); everything else is a string label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def parse_label(value: Any, fields: RecordFields, where: str, from_table: bool = False) -> Label:
    """The label of one record in the shape its problem type needs; `where` is "<file>:<line>". A table's
    (.csv/.tsv) cell is text: a multi-label cell is split by `label_separator`, a number parsed."""
    problem = fields.problem_type
    if problem == REGRESSION:
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise BertlabError(
                f"{where} has {value!r} in {fields.label_field!r} where a finite number is expected "
                f"({PROBLEM_TYPE_KEY}=regression); fix the record, or set {PROBLEM_TYPE_KEY} to a "
                f"classification type",
                "data.label_field",
            )
        return float(number)
    if problem == MULTI_LABEL:
        if isinstance(value, str):
            if not from_table:
                raise BertlabError(
                    f"{where} has {value!r} in {fields.label_field!r} where a list of labels is expected "
                    f"({PROBLEM_TYPE_KEY}={MULTI_LABEL}); write it as a JSON list, e.g. [{value!r}]",
                    "data.label_field",
                )
            value = [part for part in (p.strip() for p in value.split(fields.label_separator)) if part]
        if not isinstance(value, list) or any(isinstance(v, (list, dict)) for v in value):
            raise BertlabError(
                f"{where} has {value!r} in {fields.label_field!r} where a list of labels is expected "
                f"({PROBLEM_TYPE_KEY}={MULTI_LABEL})",
                "data.label_field",
            )
        labels = tuple(sorted({_scalar_label(v) for v in value}, key=lambda v: (isinstance(v, str), v)))
        if not labels:
            raise BertlabError(
                f"{where} has an empty label list in {fields.label_field!r}; every multi-label record needs at "
                f"least one label (drop the record or give it its labels)",
                "data.label_field",
            )
        return labels
    if isinstance(value, (list, dict)):
        raise BertlabError(
            f"{where} has {value!r} in {fields.label_field!r} where one label is expected; for several labels "
            f"per text set {PROBLEM_TYPE_KEY}={MULTI_LABEL}",
            "data.label_field",
        )
    return _scalar_label(value)


def labelled_records(path: Path, key: str) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a .jsonl/.csv/.tsv file, streamed; broken lines name the file and line."""
    lines = text_lines(path, key)
    if path.suffix == ".jsonl":
        return ((number, json_record(path, number, line, key)) for number, line in lines if line.strip())
    reader = csv.DictReader((line for _, line in lines), delimiter="\t" if path.suffix == ".tsv" else ",")
    return enumerate(reader, start=2)


def labelled_example(path: Path, number: int, record: Any, fields: RecordFields) -> Example:
    """One record as an Example in the shape of `fields`; a missing field or a label of the wrong shape
    names the file, the line and the key that fixes it."""
    required = [(fields.text_field, "data.text_field"), (fields.label_field, "data.label_field")]
    if fields.text_pair_field is not None:
        required.append((fields.text_pair_field, "data.text_pair_field"))
    for field, name in required:
        if not isinstance(record, dict) or record.get(field) in (None, ""):
            raise BertlabError(
                f"{path}:{number} has no {field!r} field; set {name} to the field that holds it", name
            )
    pair = None if fields.text_pair_field is None else str(record[fields.text_pair_field])
    label = parse_label(record[fields.label_field], fields, f"{path}:{number}", path.suffix != ".jsonl")
    return Example(str(record[fields.text_field]), label, pair)


def read_labelled_file(path: Path, fields: RecordFields, key: str) -> list[Example]:
    examples = [
        labelled_example(path, number, record, fields) for number, record in labelled_records(path, key)
    ]
    if not examples:
        raise BertlabError(f"file {str(path)!r} holds no examples", key)
    return examples


class LabelledFiles:
    """Train/val/test files (.jsonl, .csv with a header row, or .tsv with a header row).

    `train_examples`/`val_examples` keep the first N records of the train/val file (a smaller labelled set
    from the same file, as a suite's task or a learning curve needs); the test file is always read whole.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        train_examples: int | None = None,
        val_examples: int | None = None,
    ) -> None:
        self.limits = {"train": train_examples, "val": val_examples}
        for split, limit in self.limits.items():
            if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
                raise BertlabError(f"must be a positive integer or null, got {limit!r}", f"{split}_examples")
        if val is None and val_examples is not None:
            raise BertlabError(
                "needs a val file (data.source.val); a val split carved off the training file follows its size",
                "val_examples",
            )
        self.paths: dict[str, Path | None] = {}
        for split, value in zip(SPLITS, (train, val, test), strict=True):
            if value is None:
                self.paths[split] = None
                continue
            path = Path(value)
            if not path.is_file():
                raise BertlabError(
                    f"file {value!r} does not exist (check the path; it is read as given)", split
                )
            if path.suffix not in FORMATS:
                raise BertlabError(
                    f"file {value!r} must be one of {list(FORMATS)}, got {path.suffix!r}", split
                )
            self.paths[split] = path

    def fingerprint(self) -> str:
        stamps = [
            (split, str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) if p else (split, None)
            for split, p in self.paths.items()
        ]
        if any(limit is not None for limit in self.limits.values()):
            stamps.append(("limits", self.limits["train"], self.limits["val"]))
        return hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]

    def describe(self, split: str) -> str:
        path = self.paths[split]
        return f"file '{path}'" if path else f"the {split} split"

    def splits(self, fields: RecordFields) -> dict[str, list[Example] | None]:
        splits = {
            split: read_labelled_file(path, fields, split) if path else None
            for split, path in self.paths.items()
        }
        for split, limit in self.limits.items():
            examples = splits[split]
            if limit is None or examples is None:
                continue
            if len(examples) < limit:
                raise BertlabError(
                    f"file '{self.paths[split]}' holds {len(examples)} examples, fewer than {limit}; lower it "
                    f"or set it to null (the whole file)",
                    f"data.source.{split}_examples",
                )
            splits[split] = examples[:limit]
        return splits


class EmbeddedReviews:
    """The generated labelled sets shipped with bertlab (embedded_corpus.generate_labelled), one per task
    shape: `sentiment` (single label), `pairs` (two reports: same sentiment or not), `tags` (multi-label:
    the animals a report mentions), `sizes` (regression: the size of the animal a report is about)."""

    def __init__(self, count: int = 2400, seed: int = 1, task: str = "sentiment") -> None:
        if count < 50:
            raise BertlabError(f"must be at least 50, got {count}", "count")
        if task not in EMBEDDED_TASKS:
            raise BertlabError(
                f"unknown embedded task {task!r}; choose one of {list(EMBEDDED_TASKS)}", "task"
            )
        self.count = count
        self.seed = seed
        self.task = task

    def fingerprint(self) -> str:
        version = ("reviews-v1", self.count, self.seed)
        stamp = version if self.task == "sentiment" else (*version, self.task)
        return hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]

    def describe(self, split: str) -> str:
        return f"the {split} split of the embedded {self.task} set"

    def splits(self, fields: RecordFields) -> dict[str, list[Example] | None]:
        shape = EMBEDDED_TASKS[self.task]
        if fields.problem_type != shape:
            raise BertlabError(
                f"the embedded {self.task!r} set is a {shape} task, but {PROBLEM_TYPE_KEY} is "
                f"{fields.problem_type!r}; set {PROBLEM_TYPE_KEY}={shape}",
                PROBLEM_TYPE_KEY,
            )
        examples = [Example(*record) for record in generate_labelled(self.task, self.count, self.seed)]
        if (examples[0].text_pair is None) != (fields.text_pair_field is None):
            raise BertlabError(
                f"the embedded {self.task!r} set {'has' if examples[0].text_pair else 'has no'} text pairs; "
                f"set data.text_pair_field={'text_pair' if examples[0].text_pair else 'null'}",
                "data.text_pair_field",
            )
        return {"train": examples, "val": None, "test": None}


def label_vocabulary(
    splits: dict[str, Sequence[Example]], describe: dict[str, str], problem_type: str = SINGLE_LABEL
) -> list[str | int]:
    """Sorted labels of the training split; refuses single-class training and unseen labels elsewhere.

    Multi-label: every label any training record has. Regression has no vocabulary: refused here.
    """
    check_problem_type(problem_type, PROBLEM_TYPE_KEY)
    if problem_type == REGRESSION:
        raise ValueError("regression has no label vocabulary")

    def labels_of(example: Example) -> tuple:
        return example.label if problem_type == MULTI_LABEL else (example.label,)

    labels = sorted(
        {label for example in splits["train"] for label in labels_of(example)},
        key=lambda v: (isinstance(v, str), v),
    )
    if len(labels) < 2:
        raise BertlabError(
            f"the training data ({describe['train']}) has a single label {labels}; classification needs at least two",
            "data.label_field",
        )
    known = {str(label) for label in labels}
    for split in ("val", "test"):
        seen = {str(label) for example in splits[split] for label in labels_of(example)}
        unseen = sorted(seen - known)
        if unseen:
            raise BertlabError(
                f"{describe[split]} has labels never seen in training: {unseen[:10]}; the model can only predict "
                f"{[str(v) for v in labels]}",
                "data.label_field",
            )
    return labels
