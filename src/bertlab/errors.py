"""The one exception type for input a user can fix (a config value, a file, a run folder), and the one
guard that turns a file which cannot be parsed into it (`reading`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BertlabError(Exception):
    """Raised before training starts; the message names the key or path and what would fix it.

    Library code knows its parameter names, not where they sit in the config: it sets `key` to the
    parameter, and the run function prefixes the config section (`architecture.num_heads`).
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def in_section(self, section: str) -> BertlabError:
        """The same error with its key qualified by the config section it came from."""
        return BertlabError(self.message, key=f"{section}.{self.key}" if self.key else section)

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


def first_line(error: BaseException) -> str:
    """An exception's message in one line (the first), with its type unless it is a bare Exception: what a
    one-line error quotes."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    return line if type(error) is Exception else f"{type(error).__name__}: {line}"


@contextmanager
def reading(path: str | Path, key: str | None, what: str = "file", fix: str = "") -> Iterator[None]:
    """The one guard around reading a file a user named or a run holds: a parse or decode failure (a text
    file given as a tokenizer, a truncated JSON file, binary bytes) becomes one BertlabError naming `key`
    and the file, instead of a library's traceback. `fix` says what to do about it."""
    try:
        yield
    except BertlabError:
        raise
    except Exception as error:  # the parsers raise many types (tokenizers: plain Exception)
        message = f"{what} {str(path)!r} cannot be read ({first_line(error)})"
        raise BertlabError(f"{message}; {fix}" if fix else message, key) from None
