"""Where raw text comes from: the user's files and datasets, or the embedded generated corpus.

A corpus yields its text as bounded chunks per split (bertlab.data.text_sources), and a fingerprint that
changes whenever its content may have changed. A split without inputs of its own (val/test, usually) is
split off the training documents by bertlab.data.chunk_encoding.SplitRule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence

from bertlab.data.embedded_corpus import generate_documents
from bertlab.data.text_sources import Chunk, TextInput, read_chunks, resolve_inputs
from bertlab.errors import BertlabError

SPLITS = ("train", "val", "test")
CHUNK_BYTES = 4 << 20  # text per chunk: bounds the memory of each process, big enough to amortise overhead
EMBEDDED_CHUNK_DOCUMENTS = 2000


def _hash(parts: Sequence[object]) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]


class TextCorpus:
    """Documents from files, folders, globs or `datasets` datasets (see bertlab.data.text_sources).

    .txt: a document per non-empty line, or per paragraph (`txt_documents`); .jsonl: one record per line;
    .csv/.parquet/`datasets`: one record per row. `text_field` names the field or column of the text.
    """

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
        self.inputs: dict[str, list[TextInput]] = {
            split: resolve_inputs(value, split)
            for split, value in zip(SPLITS, (train, val, test), strict=True)
        }
        if not self.inputs["train"]:
            raise BertlabError("no training file given; set it to a path or a list of paths", "train")
        self.text_field = text_field
        self.paragraphs = txt_documents == "paragraph"
        self.txt_documents = txt_documents

    @property
    def paths(self) -> dict[str, list[TextInput]]:
        return self.inputs

    def fingerprint(self) -> str:
        stamps = [(split, item.stamp()) for split, items in self.inputs.items() for item in items]
        return _hash([*stamps, self.text_field, self.txt_documents])

    def given_splits(self) -> set[str]:
        return {split for split, items in self.inputs.items() if items}

    def total_bytes(self) -> int | None:
        sizes = [item.size() for items in self.inputs.values() for item in items]
        return None if None in sizes else sum(sizes)

    def chunks(self, splits: Sequence[str] = SPLITS, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
        for split in splits:
            yield from read_chunks(self.inputs[split], split, self.text_field, self.paragraphs, chunk_bytes)


class EmbeddedCorpus:
    """The generated corpus shipped with bertlab (see embedded_corpus.py); all of it is training text."""

    def __init__(self, documents: int = 10000, seed: int = 0) -> None:
        if documents < 50:
            raise BertlabError(f"must be at least 50, got {documents}", "documents")
        self.documents = documents
        self.seed = seed
        self.text_field = "text"
        self.paragraphs = False

    def fingerprint(self) -> str:
        return _hash(["embedded-v1", self.documents, self.seed])

    def given_splits(self) -> set[str]:
        return {"train"}

    def total_bytes(self) -> int | None:
        return None

    def chunks(self, splits: Sequence[str] = SPLITS, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
        if "train" not in splits:
            return
        documents = generate_documents(self.documents, self.seed)
        for start in range(0, len(documents), EMBEDDED_CHUNK_DOCUMENTS):
            part = documents[start : start + EMBEDDED_CHUNK_DOCUMENTS]
            yield Chunk("embedded", "records", part, start + 1, "train", sum(map(len, part)))
