"""Publishing a file all at once: written beside its target under a private name, then renamed.

A reader (another process, or a relaunch after a kill) sees either the old file or the whole new one,
never a partial write. Every file bertlab publishes for others to read goes through `replacing_path`
(writers that want a path: torch.save, tokenizers) or `replacing` (writers that want an open handle).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def temporary_path(path: str | Path) -> Path:
    """A hidden name beside `path`, private to this process and call (same folder: the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def stale_temporaries(path: str | Path) -> list[Path]:
    """The `temporary_path`s of `path` that exist: left by writers that were killed before they finished
    (only meaningful to a caller that holds `path`, output_lock.hold_output, so no live writer owns one)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.\d+-[0-9a-f]{{8}}\.tmp")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


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
def publishing_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside `out_dir` to write into; it becomes `out_dir` when the block ends without an
    error, so an interrupted export leaves no partial output. The caller holds `out_dir` (claimed_output).

    The files get the folder's normal mode (the umask's): some writers (safetensors) create theirs 0600,
    which would hide the weights from the others who read the rest of the export.
    """
    temporary = temporary_path(out_dir)
    temporary.mkdir()
    try:
        yield temporary
        give_normal_modes(temporary)
        replaced = temporary_path(out_dir) if out_dir.exists() else None
        if replaced is not None:  # --overwrite: the old output moves aside, then goes
            os.replace(out_dir, replaced)
        os.replace(temporary, out_dir)
        if replaced is not None and replaced.is_dir():
            shutil.rmtree(replaced)
        elif replaced is not None:
            replaced.unlink()
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def give_normal_modes(folder: Path) -> None:
    """Files 0666 and folders 0777, less the umask: what a plain `open` or `mkdir` gives."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
