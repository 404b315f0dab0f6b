"""Where raw text comes from: the user's .txt/.jsonl files, or the embedded generated corpus.

A corpus returns its documents per split (val/test may be absent: the datamodule then splits them off the
training documents) and a fingerprint that changes whenever its content may have changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from bertlab.data.embedded_corpus import generate_documents
from bertlab.data.text_files import json_record, text_lines
from bertlab.errors import BertlabError

SPLITS = ("train", "val", "test")


def _as_paths(value: str | Sequence[str] | None, key: str) -> list[Path]:
    if value is None:
        return []
    paths = [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]
    for path in paths:
        if not path.is_file():
            raise BertlabError(
                f"file {str(path)!r} does not exist (check the path; it is read as given)", key
            )
        if path.suffix not in (".txt", ".jsonl"):
            raise BertlabError(f"file {str(path)!r} must be .txt or .jsonl, got {path.suffix!r}", key)
    return paths


def _hash(parts: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


class TextCorpus:
    """Documents from text files: .txt (per line or per paragraph) or .jsonl (one record per line)."""

    def __init__(
        self,
        train: str | Sequence[str],
        val: str | Sequence[str] | None = None,
        test: str | Sequence[str] | None = None,
        text_field: str = "text",
        txt_documents: str = "line",
    ) -> None:
        if txt_documents not in ("line", "paragraph"):
            raise BertlabError(f"must be 'line' or 'paragraph', got {txt_documents!r}", "txt_documents")
        self.paths = {
            split: _as_paths(value, split) for split, value in zip(SPLITS, (train, val, test), strict=True)
        }
        if not self.paths["train"]:
            raise BertlabError("no training file given; set it to a path or a list of paths", "train")
        self.text_field = text_field
        self.txt_documents = txt_documents

    def fingerprint(self) -> str:
        stamps = [
            (split, str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
            for split, paths in self.paths.items()
            for path in paths
        ]
        return _hash([*stamps, self.text_field, self.txt_documents])

    def splits(self) -> dict[str, list[str] | None]:
        return {split: self._read(paths, split) if paths else None for split, paths in self.paths.items()}

    def _read(self, paths: list[Path], split: str) -> list[str]:
        documents: list[str] = []
        for path in paths:
            read = self._read_jsonl(path, split) if path.suffix == ".jsonl" else self._read_txt(path, split)
            if not read:
                raise BertlabError(f"file {str(path)!r} holds no text", split)
            documents.extend(read)
        return documents

    def _read_txt(self, path: Path, split: str) -> list[str]:
        lines = (line for _, line in text_lines(path, split))
        if self.txt_documents == "paragraph":
            documents, paragraph = [], []
            for line in lines:
                if line.strip():
                    paragraph.append(line)
                elif paragraph:
                    documents.append(" ".join(" ".join(paragraph).split()))
                    paragraph = []
            if paragraph:
                documents.append(" ".join(" ".join(paragraph).split()))
            return documents
        return [line.strip() for line in lines if line.strip()]

    def _read_jsonl(self, path: Path, split: str) -> list[str]:
        documents = []
        for number, line in text_lines(path, split):
            if not line.strip():
                continue
            record = json_record(path, number, line, split)
            if not isinstance(record, dict) or self.text_field not in record:
                raise BertlabError(
                    f"{path}:{number} has no field {self.text_field!r}; set data.source.text_field "
                    f"to the field that holds the text",
                    "text_field",
                )
            text = str(record[self.text_field]).strip()
            if text:
                documents.append(text)
        return documents


class EmbeddedCorpus:
    """The generated corpus shipped with bertlab (see embedded_corpus.py); all of it is training text."""

    def __init__(self, documents: int = 10000, seed: int = 0) -> None:
        if documents < 50:
            raise BertlabError(f"must be at least 50, got {documents}", "documents")
        self.documents = documents
        self.seed = seed

    def fingerprint(self) -> str:
        return _hash(["embedded-v1", self.documents, self.seed])

    def splits(self) -> dict[str, list[str] | None]:
        return {"train": generate_documents(self.documents, self.seed), "val": None, "test": None}
