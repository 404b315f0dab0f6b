"""Labelled examples for classification: the user's .jsonl/.csv/.tsv files, or the embedded review set.

A source returns, per split, the (text, label) pairs, or None for a split to be carved off the training
data. Problems name the file, the line and the field.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

from bertlab.data.corpus import SPLITS
from bertlab.data.embedded_corpus import generate_reviews
from bertlab.data.text_files import json_record, text_lines
from bertlab.errors import BertlabError

Example = tuple[str, str | int]
FORMATS = (".jsonl", ".csv", ".tsv")


def _label(value: object) -> str | int:
    """Integers stay integers (sorted numerically); everything else is a string label."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def read_labelled_file(path: Path, text_field: str, label_field: str, key: str) -> list[Example]:
    lines = text_lines(path, key)
    if path.suffix == ".jsonl":
        records = [(number, json_record(path, number, line, key)) for number, line in lines if line.strip()]
    else:
        reader = csv.DictReader((line for _, line in lines), delimiter="\t" if path.suffix == ".tsv" else ",")
        records = [(number, row) for number, row in enumerate(reader, start=2)]
    examples = []
    for number, record in records:
        for field, name in ((text_field, "data.text_field"), (label_field, "data.label_field")):
            if not isinstance(record, dict) or record.get(field) in (None, ""):
                raise BertlabError(
                    f"{path}:{number} has no {field!r} field; set {name} to the field that holds it", name
                )
        examples.append((str(record[text_field]), _label(record[label_field])))
    if not examples:
        raise BertlabError(f"file {str(path)!r} holds no examples", key)
    return examples


class LabelledFiles:
    """Train/val/test files (.jsonl, .csv with a header row, or .tsv with a header row)."""

    def __init__(self, train: str, val: str | None = None, test: str | None = None) -> None:
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
        return hashlib.sha256(repr(stamps).encode()).hexdigest()[:16]

    def describe(self, split: str) -> str:
        path = self.paths[split]
        return f"file '{path}'" if path else f"the {split} split"

    def splits(self, text_field: str, label_field: str) -> dict[str, list[Example] | None]:
        return {
            split: read_labelled_file(path, text_field, label_field, split) if path else None
            for split, path in self.paths.items()
        }


class EmbeddedReviews:
    """The generated review set shipped with bertlab (see embedded_corpus.generate_reviews)."""

    def __init__(self, count: int = 2400, seed: int = 1) -> None:
        if count < 50:
            raise BertlabError(f"must be at least 50, got {count}", "count")
        self.count = count
        self.seed = seed

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(("reviews-v1", self.count, self.seed)).encode()).hexdigest()[:16]

    def describe(self, split: str) -> str:
        return f"the {split} split of the embedded reviews"

    def splits(self, text_field: str, label_field: str) -> dict[str, list[Example] | None]:
        return {"train": generate_reviews(self.count, self.seed), "val": None, "test": None}


def label_vocabulary(splits: dict[str, Sequence[Example]], describe: dict[str, str]) -> list[str | int]:
    """Sorted labels of the training split; refuses single-class training and unseen labels elsewhere."""
    labels = sorted({label for _, label in splits["train"]}, key=lambda v: (isinstance(v, str), v))
    if len(labels) < 2:
        raise BertlabError(
            f"the training data ({describe['train']}) has a single label {labels}; classification needs at least two",
            "data.label_field",
        )
    known = set(labels)
    for split in ("val", "test"):
        unseen = sorted({str(label) for _, label in splits[split]} - {str(label) for label in known})
        if unseen:
            raise BertlabError(
                f"{describe[split]} has labels never seen in training: {unseen[:10]}; the model can only predict "
                f"{[str(v) for v in labels]}",
                "data.label_field",
            )
    return labels
