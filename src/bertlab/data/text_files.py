"""Reading users' text files line by line: undecodable bytes and binary files stop the run, naming the
file and line, instead of surfacing as a bare UnicodeDecodeError."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError


def text_lines(path: Path, key: str) -> Iterator[tuple[int, str]]:
    """(line number, line with its newline) of a UTF-8 file, streamed (memory does not grow with the file)."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if b"\x00" in raw:
                raise BertlabError(
                    f"{path}:{number} holds a NUL byte: the file is binary, not text; give UTF-8 text files",
                    key,
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise BertlabError(
                    f"{path}:{number} is not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                    f"{error.start + 1}); re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
                    key,
                ) from None
            yield number, line.removeprefix("\ufeff") if number == 1 else line


def json_record(path: Path, number: int, line: str, key: str) -> Any:
    """One JSON Lines record; a broken line names the file, line and column."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        detail = error.msg.removesuffix(" at")
        raise BertlabError(
            f"{path}:{number} is not valid JSON ({detail} at column {error.colno})", key
        ) from None
