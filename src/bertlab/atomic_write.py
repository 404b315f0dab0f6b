"""Publishing a file all at once: written beside its target under a private name, then renamed.

A reader (another process, or a relaunch after a kill) sees either the old file or the whole new one,
never a partial write.
"""

from __future__ import annotations

import os
from pathlib import Path


def temporary_path(path: str | Path) -> Path:
    """A hidden name beside `path`, private to this process (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    temporary = temporary_path(path)
    temporary.write_bytes(data)
    os.replace(temporary, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
