"""One chunk of text -> documents -> split -> token ids: the work a preparation spreads over processes.

Everything here depends only on the chunk and the settings, so a chunk encodes to the same bytes in any
process: the prepared stores do not depend on the number of processes. Bad records (undecodable bytes,
broken JSON lines, records without text) are counted per file with their first locations; the caller
decides whether they stop the preparation (`on_bad_record=error`) or are skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bertlab.data.text_sources import Chunk

SPLITS = ("train", "val", "test")
FIRST_LOCATIONS = 5  # per file and kind of bad record
ENCODE_BATCH = 1024  # documents per encode_batch call: bounds the Encoding objects alive at once
MAX_DOCUMENT_CHARS = 1 << 16  # longer documents are cut into pieces (each a document) before encoding


@dataclass(frozen=True)
class SplitRule:
    """Which split a training-file document goes to: a stable hash of its text against the ratios.

    `val_ratio`/`test_ratio` are 0 for a split given by its own files. The hash is keyed by the seed, so
    another seed gives another split, and identical documents always land in the same split.
    """

    val_ratio: float
    test_ratio: float
    seed: int

    def split_of(self, text: str) -> str:
        if self.val_ratio == 0 and self.test_ratio == 0:
            return "train"
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=str(self.seed).encode()[:64])
        position = int.from_bytes(digest.digest(), "little") / 2**64
        if position < self.val_ratio:
            return "val"
        return "test" if position < self.val_ratio + self.test_ratio else "train"


@dataclass
class BadRecords:
    """Per file: kind -> count, and the first few locations with what was wrong there."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    first: dict[str, list[str]] = field(default_factory=dict)
    first_issue: tuple[str, str, str] | None = None  # (kind, location, detail) of the first one, for errors

    def add(self, source: str, kind: str, location: str, detail: str) -> None:
        if self.first_issue is None:
            self.first_issue = (kind, location, detail)
        per_file = self.counts.setdefault(source, {})
        per_file[kind] = per_file.get(kind, 0) + 1
        firsts = self.first.setdefault(source, [])
        if len(firsts) < FIRST_LOCATIONS:
            firsts.append(f"{location}: {kind} ({detail})")

    def merge(self, other: BadRecords) -> None:
        self.first_issue = self.first_issue or other.first_issue
        for source, kinds in other.counts.items():
            per_file = self.counts.setdefault(source, {})
            for kind, count in kinds.items():
                per_file[kind] = per_file.get(kind, 0) + count
        for source, firsts in other.first.items():
            mine = self.first.setdefault(source, [])
            mine.extend(firsts[: FIRST_LOCATIONS - len(mine)])

    def describe_first(self) -> str:
        """The first bad record as a sentence that names its file and line and what would fix it."""
        if self.first_issue is None:
            return ""
        kind, location, detail = self.first_issue
        if kind == "undecodable":
            return (
                f"{location} is not valid UTF-8 ({detail}); re-encode the file as UTF-8 "
                f"(e.g. iconv -f latin1 -t utf-8)"
            )
        if kind == "broken_json":
            return f"{location} is not valid JSON ({detail})"
        return f"{location}: {kind.replace('_', ' ')} ({detail})"

    def total(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.counts.values())

    def as_dict(self) -> dict:
        return {
            s: {"counts": dict(sorted(c.items())), "first": self.first[s]} for s, c in self.counts.items()
        }

    @classmethod
    def from_dict(cls, data: dict) -> BadRecords:
        return cls(
            {s: dict(v["counts"]) for s, v in data.items()}, {s: list(v["first"]) for s, v in data.items()}
        )


def _decoded_lines(chunk: Chunk, bad: BadRecords) -> Iterator[tuple[int, str | None]]:
    """(line number, text) of a byte chunk; an undecodable line is counted (in line order) and given as None."""
    try:
        lines: list[str | UnicodeDecodeError] = chunk.data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        lines = []
        for raw in chunk.data.split(b"\n"):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                lines.append(error)
    if chunk.data.endswith(b"\n"):
        lines.pop()  # the empty piece after the last newline
    if chunk.first_line == 1 and lines and isinstance(lines[0], str):
        lines[0] = lines[0].removeprefix("\ufeff")
    for number, line in zip(itertools.count(chunk.first_line), lines):
        if isinstance(line, UnicodeDecodeError):
            detail = f"byte 0x{line.object[line.start]:02x} at column {line.start + 1}"
            bad.add(chunk.source, "undecodable", f"{chunk.source}:{number}", detail)
            yield number, None
        else:
            yield number, line


def _txt_documents(chunk: Chunk, paragraphs: bool, bad: BadRecords) -> list[str]:
    if not paragraphs:
        return [text for _, text in _txt_records(chunk, bad) if text is not None]
    documents, paragraph = [], []
    for _, line in _decoded_lines(chunk, bad):
        if line is None:
            continue
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            documents.append(" ".join(" ".join(paragraph).split()))
            paragraph = []
    if paragraph:
        documents.append(" ".join(" ".join(paragraph).split()))
    return documents


def _txt_records(chunk: Chunk, bad: BadRecords) -> list[tuple[int, str | None]]:
    """Each non-blank line; an undecodable one as None."""
    return [
        (number, None if line is None else line.strip())
        for number, line in _decoded_lines(chunk, bad)
        if line is None or line.strip()
    ]


def _jsonl_records(chunk: Chunk, text_field: str | tuple[str, ...], bad: BadRecords) -> list[tuple[int, Any]]:
    """Each non-blank line's text (a tuple of texts for several fields); a bad record (undecodable, broken
    JSON, no or empty text) as None."""
    fields = [text_field] if isinstance(text_field, str) else list(text_field)
    records: list[tuple[int, str | None]] = []
    for number, line in _decoded_lines(chunk, bad):
        if line is None:
            records.append((number, None))
            continue
        if not line.strip():
            continue
        location = f"{chunk.source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            detail = error.msg.removesuffix(" at")  # json's "Invalid control character at"
            bad.add(chunk.source, "broken_json", location, f"{detail} at column {error.colno}")
            records.append((number, None))
            continue
        absent = [f for f in fields if not isinstance(record, dict) or f not in record]
        if absent:
            bad.add(chunk.source, "no_text_field", location, f"no field {absent[0]!r}")
            records.append((number, None))
            continue
        texts = ["" if record[f] is None else str(record[f]).strip() for f in fields]
        empty = [f for f, text in zip(fields, texts, strict=True) if not text]
        if empty:
            bad.add(chunk.source, "empty", location, f"field {empty[0]!r} is empty")
        records.append((number, None if empty else texts[0] if len(texts) == 1 else tuple(texts)))
    return records


def _table_records(chunk: Chunk, bad: BadRecords) -> list[tuple[int, Any]]:
    """Each row's text (a .csv or .parquet record; a tuple of texts for several columns); an undecodable or
    empty one as None."""
    records: list[tuple[int, Any]] = []
    for number, row in zip(itertools.count(chunk.first_line), chunk.data):
        location = f"{chunk.source} row {number}"  # a record's row (a CSV record may span lines)
        texts = []
        for value in row if isinstance(row, tuple) else (row,):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as error:
                    bad.add(chunk.source, "undecodable", location, f"byte 0x{value[error.start]:02x}")
                    texts = None
                    break
            texts.append("" if value is None else str(value).strip())
        if texts is None:
            records.append((number, None))
            continue
        if not all(texts):
            bad.add(chunk.source, "empty", location, "no text")
        records.append((number, None if not all(texts) else texts[0] if len(texts) == 1 else tuple(texts)))
    return records


def chunk_records(chunk: Chunk, text_field: str | tuple[str, ...], bad: BadRecords) -> list[tuple[int, Any]]:
    """(line number, or row number for .csv/.parquet, and text) of each record of a chunk, in order: a
    .txt file's non-blank lines, a .jsonl file's non-blank lines, a table's rows. A bad record is counted
    in `bad` and given as None, so that a caller can keep its place (prediction) or drop it."""
    for kind, location, detail in chunk.issues:
        bad.add(chunk.source, kind, location, detail)
    if chunk.format == "txt":
        return _txt_records(chunk, bad)
    if chunk.format == "jsonl":
        return _jsonl_records(chunk, text_field, bad)
    return _table_records(chunk, bad)


def pieces(text: str, limit: int = MAX_DOCUMENT_CHARS) -> list[str]:
    """`text` cut into pieces of at most `limit` characters, each after a space where there is one in its
    second half: a tokenizer's memory grows with the length of what it encodes at once."""
    if len(text) <= limit:
        return [text]
    parts = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit + 1)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        parts.append(text)
    return [part for part in parts if part]


def chunk_documents(chunk: Chunk, text_field: str, paragraphs: bool, bad: BadRecords) -> list[str]:
    """The documents of a chunk, in order (one longer than MAX_DOCUMENT_CHARS as its pieces, each a
    document of its own); bad records go to `bad`."""
    if chunk.format == "txt" and paragraphs:
        for kind, location, detail in chunk.issues:
            bad.add(chunk.source, kind, location, detail)
        documents = _txt_documents(chunk, paragraphs, bad)
    else:
        documents = [text for _, text in chunk_records(chunk, text_field, bad) if text is not None]
    if all(len(text) <= MAX_DOCUMENT_CHARS for text in documents):
        return documents
    return [piece for text in documents for piece in pieces(text)]


@dataclass
class EncodedChunk:
    """Per split: token ids (each document followed by [SEP]) and document lengths; plus what was skipped."""

    ids: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    bad: BadRecords
    raw_bytes: int
    split: str = "train"  # the split its input was given for

    @property
    def tokens(self) -> int:
        return sum(int(ids.size) for ids in self.ids.values())


@dataclass(frozen=True)
class EncodingSettings:
    """What a worker needs besides the chunk; sent once per process."""

    serialized_tokenizer: str
    sep_id: int
    dtype: str  # numpy dtype of the stored ids
    text_field: str
    paragraphs: bool
    rule: SplitRule


_worker: tuple | None = None  # (Tokenizer, EncodingSettings) of this process


def init_worker(settings: EncodingSettings, single_threaded: bool) -> None:
    """Load the tokenizer once per process. Worker processes encode on one thread each: the processes
    already fill the cores, and a Rust thread pool per process would oversubscribe them."""
    global _worker
    if single_threaded:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _worker = (Tokenizer.from_str(settings.serialized_tokenizer), settings)


def _flatten(encoded: list[list[int]], sep_id: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """One array of every document's ids followed by [SEP], without a Python list of all of them."""
    lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
    inner = np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype, count=int(lengths.sum()))
    out_lengths = lengths + 1
    ends = np.cumsum(out_lengths)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    is_sep = np.zeros(out.size, dtype=bool)
    is_sep[ends - 1] = True
    out[is_sep] = sep_id
    out[~is_sep] = inner
    return out, out_lengths


def encode_chunk(chunk: Chunk) -> EncodedChunk:
    """Parse, split and encode one chunk with this process's tokenizer (see init_worker)."""
    if _worker is None:
        raise RuntimeError("call init_worker() first")
    tokenizer, settings = _worker
    bad = BadRecords()
    documents = chunk_documents(chunk, settings.text_field, settings.paragraphs, bad)
    by_split: dict[str, list[str]] = {split: [] for split in SPLITS}
    if chunk.split == "train":
        for text in documents:
            by_split[settings.rule.split_of(text)].append(text)
    else:
        by_split[chunk.split] = documents
    ids, lengths = {}, {}
    for split, texts in by_split.items():
        encoded: list[list[int]] = []
        for start in range(0, len(texts), ENCODE_BATCH):
            batch = tokenizer.encode_batch(texts[start : start + ENCODE_BATCH], add_special_tokens=False)
            encoded.extend(e.ids for e in batch if e.ids)
        ids[split], lengths[split] = _flatten(encoded, settings.sep_id, settings.dtype)
    return EncodedChunk(ids, lengths, bad, chunk.raw_bytes, chunk.split)
