"""The prepared-dataset format for pretraining: per split, shards of raw token ids plus document offsets.

`<split>/<n>.bin` holds the ids (int16 or int32, little-endian) and `<split>/<n>.idx` the int64 document
offsets (starting at 0); `shards/<n>.json` records shard n for every split and what the preparation had
read when it closed it. A shard is written under hidden names and published by renames, its record last:
a shard without its record is unfinished and is discarded by a relaunch. `manifest.json`, written when
every shard is done, marks a finished folder; training reads no other.

Shards are memory-mapped (torch.from_file), so a run reads only the pages it touches.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from bertlab.atomic_write import atomic_write_text
from bertlab.errors import BertlabError, reading
from bertlab.run_folder import MANIFEST

FORMAT_VERSION = 2
RECORDS = "shards"
SPLITS = ("train", "val", "test")


def id_dtype(vocab_size: int) -> str:
    return "int16" if vocab_size <= np.iinfo(np.int16).max + 1 else "int32"


def shard_name(number: int) -> str:
    return f"{number:05d}"


class ShardWriter:
    """Appends encoded chunks to the open shard of each split; `publish` makes that shard final."""

    def __init__(self, folder: Path, number: int) -> None:
        self.folder = folder
        self.number = number
        self.files: dict[str, tuple[BinaryIO, BinaryIO]] = {}
        self.counts = {split: {"documents": 0, "tokens": 0} for split in SPLITS}
        self.crc32 = {split: {"bin": 0, "idx": 0} for split in SPLITS}  # of the bytes written, for checks
        for split in SPLITS:
            (folder / split).mkdir(parents=True, exist_ok=True)
            ids = self._partial(split, "bin").open("wb")
            offsets = self._partial(split, "idx").open("wb")
            self.files[split] = (ids, offsets)
            self._write(split, "idx", np.zeros(1, dtype="<i8").tobytes())

    def _write(self, split: str, ext: str, data: bytes) -> None:
        self.files[split][0 if ext == "bin" else 1].write(data)
        self.crc32[split][ext] = zlib.crc32(data, self.crc32[split][ext])

    def _partial(self, split: str, ext: str) -> Path:
        return self.folder / split / f".{shard_name(self.number)}.{ext}.partial"

    @property
    def tokens(self) -> int:
        return sum(c["tokens"] for c in self.counts.values())

    def append(self, split: str, ids: np.ndarray, lengths: np.ndarray) -> None:
        if not lengths.size:
            return
        counts = self.counts[split]
        self._write(split, "bin", ids.astype(ids.dtype.newbyteorder("<"), copy=False).tobytes())
        self._write(
            split, "idx", (np.cumsum(lengths, dtype=np.int64) + counts["tokens"]).astype("<i8").tobytes()
        )
        counts["documents"] += int(lengths.size)
        counts["tokens"] += int(ids.size)

    def publish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Close and rename this shard's files, then write its record (the mark that it is complete)."""
        for split, handles in self.files.items():
            for handle in handles:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            for ext in ("bin", "idx"):
                os.replace(
                    self._partial(split, ext), self.folder / split / f"{shard_name(self.number)}.{ext}"
                )
        record = {"shard": self.number, "splits": self.counts, "crc32": self.crc32, **record}
        (self.folder / RECORDS).mkdir(exist_ok=True)
        atomic_write_text(
            self.folder / RECORDS / f"{shard_name(self.number)}.json", json.dumps(record, indent=1)
        )
        return record

    def discard(self) -> None:
        for split, handles in self.files.items():
            for handle in handles:
                handle.close()
            for ext in ("bin", "idx"):
                self._partial(split, ext).unlink(missing_ok=True)


def finished_records(folder: Path) -> list[dict[str, Any]]:
    """The records of the shards published so far, in order; files of any later shard are removed."""
    records = []
    while (folder / RECORDS / f"{shard_name(len(records))}.json").is_file():
        records.append(json.loads((folder / RECORDS / f"{shard_name(len(records))}.json").read_text()))
    done = {shard_name(n) for n in range(len(records))}
    for split in SPLITS:
        for path in (folder / split).glob("*") if (folder / split).is_dir() else ():
            if path.name.split(".")[0] not in done or path.name.startswith("."):
                path.unlink()
    for path in (folder / RECORDS).glob(".*") if (folder / RECORDS).is_dir() else ():
        path.unlink()
    return records


def clear_stores(folder: Path) -> None:
    """Remove every shard and record (a preparation starting over)."""
    for name in (*SPLITS, RECORDS):
        shutil.rmtree(folder / name, ignore_errors=True)
    (folder / MANIFEST).unlink(missing_ok=True)


def read_manifest(folder: str | Path, key: str = "prepared") -> dict[str, Any]:
    """The manifest of a finished prepared folder; a folder without one is refused, naming the fix."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        partial = (Path(folder) / RECORDS).is_dir()
        raise BertlabError(
            f"folder {str(folder)!r} is not a finished prepared dataset (no {MANIFEST})"
            + (
                "; its preparation was interrupted: relaunch the same preparation command to finish it"
                if partial
                else "; give a folder written by `python launch.py +experiment=prepare ...`"
            ),
            key,
        )
    with reading(path, key, "manifest", "prepare the folder again (or restore it from a copy)"):
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError(f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_VERSION:
        raise BertlabError(
            f"folder {str(folder)!r} holds prepared-dataset format {manifest.get('format')}, this bertlab "
            f"reads {FORMAT_VERSION}; prepare it again",
            key,
        )
    return manifest


def shard_files(folder: Path, manifest: dict[str, Any]) -> Iterator[tuple[Path, int, int | None]]:
    """(path, size in bytes, CRC-32 or None) of every shard file the manifest lists."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in SPLITS:
        entry = manifest["splits"][split]
        checksums = entry.get("shard_crc32") or [{} for _ in entry["shard_tokens"]]
        documents = entry.get("shard_documents") or [None for _ in entry["shard_tokens"]]
        for number, (tokens, count, crc) in enumerate(
            zip(entry["shard_tokens"], documents, checksums, strict=True)
        ):
            yield folder / split / f"{shard_name(number)}.bin", tokens * itemsize, crc.get("bin")
            if count is not None:
                yield folder / split / f"{shard_name(number)}.idx", (count + 1) * 8, crc.get("idx")


def verify_shards(
    folder: str | Path, manifest: dict[str, Any], rebuild: str, key: str = "prepared", checksums: bool = True
) -> None:
    """Every shard file has the size (and, with `checksums`, the CRC-32) its manifest records: a damaged
    folder is refused, naming the file and how to rebuild it, before anything reads it."""
    folder = Path(folder)
    for path, size, crc in shard_files(folder, manifest):
        relative = path.relative_to(folder)
        if not path.is_file():
            problem = "is missing"
        elif (actual := path.stat().st_size) != size:
            problem = f"has {actual:,} bytes, its manifest records {size:,}"
        elif checksums and crc is not None and _crc32_of(path) != crc:
            problem = "does not match the checksum its manifest records"
        else:
            continue
        raise BertlabError(
            f"shard {str(relative)!r} of prepared folder {str(folder)!r} {problem}: the folder is damaged; "
            f"{rebuild}",
            key,
        )


def _crc32_of(path: Path, block: int = 1 << 20) -> int:
    crc, buffer = 0, bytearray(block)
    view = memoryview(buffer)
    with path.open("rb") as handle:
        while size := handle.readinto(buffer):
            crc = zlib.crc32(view[:size], crc)
    return crc


def load_shards(folder: str | Path, split: str, manifest: dict[str, Any]) -> list[torch.Tensor]:
    """Memory-mapped ids of each shard of `split`, in order."""
    dtype = getattr(torch, manifest["dtype"])
    shards = []
    for number, tokens in enumerate(manifest["splits"][split]["shard_tokens"]):
        path = Path(folder) / split / f"{shard_name(number)}.bin"
        if tokens == 0:
            shards.append(torch.empty(0, dtype=dtype))
        else:
            shards.append(torch.from_file(str(path), shared=False, size=tokens, dtype=dtype))
    return shards
