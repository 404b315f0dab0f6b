"""The one exception type for input a user can fix: a config value, a file, a run folder."""

from __future__ import annotations


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
