"""Publishing a file all at once: written beside its target under a private name, then renamed.

A reader (another process, or a relaunch after a kill) sees either the old file or the whole new one,
never a partial write. Every file bertlab publishes for others to read goes through `replacing_path`
(writers that want a path: torch.save, tokenizers) or `replacing` (writers that want an open handle).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bertlab.errors import BertlabError


def temporary_path(path: str | Path) -> Path:
    """A hidden name beside `path`, private to this process and call (same folder: the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextmanager
def replacing_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """A private path to write; it replaces `path` when the block ends without an error.

    `fsync`: flush the file to disk before the rename, so that a power cut leaves the old or new file.
    Unlike mkstemp's private (0600) files it gets the usual umask permissions: run folders are shared.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        if fsync:
            with temporary.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def replacing(path: str | Path, text: bool = False, fsync: bool = False) -> Iterator[IO[Any]]:
    """An open file (text with newline='' for csv, or binary) that replaces `path` once closed."""
    with (
        replacing_path(path, fsync=fsync) as temporary,
        temporary.open("x" if text else "xb", newline="" if text else None) as handle,
    ):
        yield handle


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with replacing(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def publishing_folder(out_dir: Path, overwrite: bool, key: str = "out_dir") -> Iterator[Path]:
    """A hidden folder beside `out_dir` to write into; it becomes `out_dir` when the block ends without an
    error, so an interrupted writer (an export, an unpacked model) leaves no partial output. A non-empty `out_dir` needs `overwrite`."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise BertlabError(
            f"{str(out_dir)!r} exists and is not empty; choose another folder or --overwrite", key
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(out_dir)
    temporary.mkdir()
    try:
        yield temporary
        if out_dir.is_dir():
            shutil.rmtree(out_dir)
        elif out_dir.exists():
            out_dir.unlink()
        os.replace(temporary, out_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
