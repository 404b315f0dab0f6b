"""Where the text of a corpus is read from, in bounded chunks: files, folders and globs of .txt, .jsonl,
.csv and .parquet (the first three also .gz/.zst/.bz2), and Hugging Face `datasets` datasets.

Reading is separate from parsing (bertlab.data.chunk_encoding): .txt and .jsonl files are cut into raw byte
chunks at line (or paragraph) boundaries, so worker processes decode and parse them in parallel; tabular
inputs are read with pyarrow / `datasets` a record batch at a time. A chunk's content depends only on the
input and `chunk_bytes`, never on the number of processes, so prepared stores are the same whatever it is.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
FORMATS = (".txt", ".jsonl", ".csv", ".parquet")
HUB_PREFIX = "hf:"  # data.source.train=hf:<dataset name>: a Hugging Face dataset from the local cache
DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
SNIFF_BYTES = 8192
RECORD_BATCH = 4096


@dataclass(frozen=True)
class TextInput:
    """One input: a file (format and compression from its name), a saved `datasets` folder or a hub name."""

    location: str
    format: str  # txt | jsonl | csv | parquet | datasets | hub
    compression: str | None = None

    def stamp(self) -> list[Any]:
        """What changes when its content may have changed (for the preparation's fingerprint)."""
        if self.format == "hub":
            return [self.location]
        path = Path(self.location)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        return [str(path.resolve()), *[(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]]

    def size(self) -> int | None:
        """Bytes of text it holds, when known without reading it (plain .txt/.jsonl files)."""
        if self.format in ("txt", "jsonl") and self.compression is None:
            return Path(self.location).stat().st_size
        return None


@dataclass
class Chunk:
    """A bounded piece of one input: raw bytes of whole lines (txt, jsonl) or a list of record texts."""

    source: str  # the file (or dataset) it comes from, for reports
    format: str  # txt | jsonl | records
    data: Any  # bytes, or a list of str / bytes / None
    first_line: int  # line number of its first line (txt, jsonl), or row number of its first record; 1-based
    split: str  # the split its input was given for
    raw_bytes: int = 0  # text bytes it holds, for progress
    issues: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, location, detail) found reading


def _input_format(path: Path) -> tuple[str | None, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression is not None:
        suffixes = suffixes[:-1]
    fmt = suffixes[-1] if suffixes else ""
    if fmt not in FORMATS or (fmt == ".parquet" and compression is not None):
        return None, None
    return fmt[1:], compression


def _is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in DATASETS_MARKERS)


def resolve_inputs(value: str | Sequence[str] | None, key: str) -> list[TextInput]:
    """Files, folders (searched recursively for known formats), globs, `datasets` folders, hf:<name>."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, Path)) else list(value)
    inputs: list[TextInput] = []
    for item in map(str, items):
        if item.startswith(HUB_PREFIX):
            inputs.append(TextInput(item[len(HUB_PREFIX) :], "hub"))
            continue
        path = Path(item)
        if _is_datasets_folder(path):
            inputs.append(TextInput(str(path), "datasets"))
            continue
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _input_format(p)[0])
            if not found:
                raise BertlabError(
                    f"folder {item!r} holds no {'/'.join(FORMATS)} file (optionally .gz/.zst/.bz2)", key
                )
        elif any(ch in item for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise BertlabError(f"pattern {item!r} matches no file", key)
        elif path.is_file():
            found = [path]
        else:
            raise BertlabError(f"file {item!r} does not exist (check the path; it is read as given)", key)
        for file in found:
            if file.stat().st_size <= SNIFF_BYTES and not file.read_bytes().strip():
                raise BertlabError(f"file {str(file)!r} holds no text", key)
            fmt, compression = _input_format(file)
            if fmt is None:
                raise BertlabError(
                    f"file {str(file)!r} must be {', '.join(FORMATS)} (.txt, .jsonl and .csv also "
                    f"compressed as .gz, .zst or .bz2), or a `datasets` folder saved with save_to_disk",
                    key,
                )
            inputs.append(TextInput(str(file), fmt, compression))
    return inputs


def read_chunks(
    inputs: Sequence[TextInput],
    split: str,
    text_field: str | tuple[str, ...],
    paragraphs: bool,
    chunk_bytes: int,
) -> Iterator[Chunk]:
    """The chunks of `inputs`, in order; memory holds about one chunk per input at a time.

    `text_field` may name several fields (the two texts of a pair): a table's records are then tuples of
    their values (a .jsonl record is read whole, chunk_encoding.chunk_records picks its fields).
    """
    for item in inputs:
        if item.format in ("txt", "jsonl"):
            yield from _byte_chunks(item, split, paragraphs and item.format == "txt", chunk_bytes)
        elif item.format == "csv":
            yield from _csv_chunks(item, split, text_field, chunk_bytes)
        elif item.format == "parquet":
            yield from _parquet_chunks(item, split, text_field)
        else:
            yield from _datasets_chunks(item, split, text_field)


def _open(item: TextInput, split: str):
    import pyarrow as pa

    try:
        return pa.input_stream(item.location, compression=item.compression)
    except OSError as error:
        raise BertlabError(f"cannot read {item.location!r}: {error}", f"source.{split}") from None


def _not_text(item: TextInput, detail: str, split: str) -> BertlabError:
    return BertlabError(
        f"file {item.location!r} is not text ({detail}); give UTF-8 text files "
        f"({', '.join(FORMATS)}, optionally .gz/.zst/.bz2)",
        f"source.{split}",
    )


def _byte_chunks(item: TextInput, split: str, paragraphs: bool, chunk_bytes: int) -> Iterator[Chunk]:
    """Raw bytes cut after the last newline (or blank line, for paragraphs) of each block read.

    A .txt line (or paragraph) longer than `chunk_bytes` is cut while streaming, after its last space
    within the chunk (or, without one, between two characters): its pieces are documents of their own,
    so memory stays bounded for any line. A .jsonl record is read whole (its text is cut once parsed).
    """
    separator = b"\n\n" if paragraphs else b"\n"
    line, carry, first = 1, b"", True
    with _open(item, split) as stream:
        while True:
            try:
                block = stream.read(chunk_bytes)
            except OSError as error:  # a corrupt or mislabelled compressed file
                raise _not_text(item, f"cannot decompress it as {item.compression}: {error}", split) from None
            if first and block:
                if b"\x00" in block[:SNIFF_BYTES]:
                    raise _not_text(item, "it holds NUL bytes: it is binary", split)
                first = False
            if not block:
                break
            data = carry + block if carry else block
            cut = data.rfind(separator)
            if cut >= 0:
                cut += len(separator)
            elif item.format == "txt" and len(data) >= chunk_bytes:
                cut = long_line_cut(data)
            else:
                carry = data
                continue
            yield Chunk(item.location, item.format, data[:cut], line, split, cut)
            line += data.count(b"\n", 0, cut)
            carry = data[cut:]
    if carry:
        yield Chunk(item.location, item.format, carry, line, split, len(carry))


def long_line_cut(data: bytes) -> int:
    """Where to cut text with no line end: after its last space, tab or newline, else before the last
    character that starts in it (never inside a UTF-8 sequence)."""
    cut = max(data.rfind(b" "), data.rfind(b"\t"), data.rfind(b"\n")) + 1
    if cut > len(data) // 2:
        return cut
    cut = len(data) - 1
    while cut > 0 and data[cut] & 0xC0 == 0x80:  # a continuation byte
        cut -= 1
    return cut or len(data)


def _fields(text_field: str | tuple[str, ...]) -> list[str]:
    return [text_field] if isinstance(text_field, str) else list(text_field)


def _records(columns: list[list[Any]]) -> list[Any]:
    """One column's values, or a tuple per row of several columns'."""
    return columns[0] if len(columns) == 1 else list(zip(*columns, strict=True))


def _csv_chunks(
    item: TextInput, split: str, text_field: str | tuple[str, ...], chunk_bytes: int
) -> Iterator[Chunk]:
    import pyarrow as pa
    from pyarrow import csv

    broken: list[tuple[str, str, str]] = []
    fields = _fields(text_field)

    def skip_row(row) -> str:
        broken.append(("broken_row", f"{item.location}:{row.number} (line)", row.text[:80]))
        return "skip"

    with _open(item, split) as stream:
        head = stream.read(SNIFF_BYTES)
    if b"\x00" in head:
        raise _not_text(item, "it holds NUL bytes: it is binary", split)
    stream = _open(item, split)
    try:
        reader = csv.open_csv(
            stream,
            read_options=csv.ReadOptions(use_threads=False, block_size=chunk_bytes),
            parse_options=csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip_row),
            convert_options=csv.ConvertOptions(
                include_columns=fields, column_types=dict.fromkeys(fields, pa.binary())
            ),
        )
    except (pa.ArrowInvalid, KeyError) as error:
        stream.close()
        absent = [field for field in fields if field in str(error)]
        if "include_columns" in str(error) or absent:
            raise BertlabError(
                f"{item.location!r} has no column {(absent or fields)[0]!r}; set data.source.text_field to "
                f"the column that holds the text",
                "source.text_field",
            ) from None
        raise _not_text(item, str(error), split) from None
    row = 1  # records read (rows pyarrow could parse), not lines: a quoted value may span lines
    with stream:
        for batch in reader:
            texts = _records([batch.column(name).to_pylist() for name in fields])
            issues, broken[:] = list(broken), []
            yield Chunk(item.location, "records", texts, row, split, batch.nbytes, issues)
            row += len(texts)


def _parquet_chunks(item: TextInput, split: str, text_field: str | tuple[str, ...]) -> Iterator[Chunk]:
    import pyarrow as pa
    from pyarrow import parquet

    try:
        reader = parquet.ParquetFile(item.location)
    except pa.ArrowInvalid as error:
        raise _not_text(item, f"not a Parquet file: {error}", split) from None
    fields = _fields(text_field)
    for name in fields:
        if name not in reader.schema_arrow.names:
            raise BertlabError(
                f"{item.location!r} has no column {name!r} (it has {reader.schema_arrow.names}); set "
                f"data.source.text_field to the column that holds the text",
                "source.text_field",
            )
    row = 1
    for batch in reader.iter_batches(batch_size=RECORD_BATCH, columns=fields):
        texts = _records([batch.column(name).to_pylist() for name in fields])
        yield Chunk(item.location, "records", texts, row, split, batch.nbytes)
        row += len(texts)


DATASETS_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


def load_datasets_input(item: TextInput, split: str):
    """A `datasets` Dataset for `item`: a save_to_disk folder, or a hub name read offline from the cache."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # nothing downloads during a preparation
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise BertlabError(
            f"{item.location!r} is a `datasets` dataset; install bertlab with the `corpora` extra "
            f"(pip install -e '.[corpora]')",
            f"source.{split}",
        ) from None
    try:
        if item.format == "datasets":
            loaded = datasets.load_from_disk(item.location)
        else:
            loaded = datasets.load_dataset(item.location)
    except Exception as error:  # datasets raises many types: missing cache, wrong folder, no network
        raise BertlabError(
            f"cannot load the `datasets` dataset {item.location!r} offline ({type(error).__name__}: "
            f"{str(error)[:200]}); save it with save_to_disk and give the folder",
            f"source.{split}",
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        names = [name for name in DATASETS_SPLITS[split] if name in loaded]
        if not names:
            raise BertlabError(
                f"the `datasets` dataset {item.location!r} has splits {sorted(loaded)}, none named "
                f"{' or '.join(DATASETS_SPLITS[split])}; give that split's folder instead",
                f"source.{split}",
            )
        loaded = loaded[names[0]]
    return loaded


def _datasets_chunks(item: TextInput, split: str, text_field: str | tuple[str, ...]) -> Iterator[Chunk]:
    dataset = load_datasets_input(item, split)
    fields = _fields(text_field)
    for name in fields:
        if name not in dataset.column_names:
            raise BertlabError(
                f"the `datasets` dataset {item.location!r} has no column {name!r} (it has "
                f"{dataset.column_names}); set data.source.text_field",
                "source.text_field",
            )
    row = 1
    for table in dataset.select_columns(fields).with_format("arrow").iter(batch_size=RECORD_BATCH):
        texts = _records([table.column(name).to_pylist() for name in fields])
        yield Chunk(item.location, "records", texts, row, split, table.nbytes)
        row += len(texts)
