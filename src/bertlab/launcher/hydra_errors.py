"""Hydra's own errors (an unknown key, a value of the wrong type, a missing config group option, an override
that does not parse) as one `Error:` line and exit status 2, like every other bad input.

Hydra prints these itself, over several lines and with its HYDRA_FULL_ERROR hint, and exits 1. launch.py
runs its main function through `report_in_one_line`, which lets Hydra raise them instead (HYDRA_FULL_ERROR
for this process) and keeps Hydra's own text of what is wrong. Errors raised once the run has started are
not touched: a bug keeps its traceback. A user who sets HYDRA_FULL_ERROR=1 gets Hydra's full report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

FULL_ERROR = "HYDRA_FULL_ERROR"
_run_started = False  # set by the task function: from then on, errors are the run's own


def run_started() -> None:
    """Called first thing by launch.py's task function."""
    global _run_started
    _run_started = True


def one_line(error: BaseException) -> str:
    """Hydra's message (and its OmegaConf cause) in one line: headings keep their lists, joined by commas;
    the config search path and OmegaConf's object_type/full_key lines go."""
    parts = [str(error)]
    if isinstance(error.__cause__, OmegaConfBaseException):
        parts.append(str(error.__cause__))
    text = "\n".join(parts).split("\nConfig search path:")[0]
    sentences: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if raw[:1] in (" ", "\t") and sentences and sentences[-1].endswith((":", ",")):
            sentences[-1] += f" {line},"
            continue
        if sentences and sentences[-1].endswith(","):
            sentences[-1] = sentences[-1].rstrip(",")
        sentences.append(line)
    if sentences and sentences[-1].endswith(","):
        sentences[-1] = sentences[-1].rstrip(",")
    joined = ""
    for sentence in sentences:
        if joined:
            joined += " " if joined.endswith((".", ":", ";")) else "; "
        joined += sentence
    return joined


def report_in_one_line(main: Callable[[], Any], undo: Callable[[], None] = lambda: None) -> Any:
    """Run a `@hydra.main` function; Hydra's composition and override errors end as one Error line, exit 2.

    `undo` removes what Hydra wrote before such an error (a sweep checks each job's overrides only after it
    has written the sweep folder's multirun.yaml); it runs also with HYDRA_FULL_ERROR=1.
    """
    if os.environ.get(FULL_ERROR) == "1":
        try:
            return main()
        except (HydraException, OmegaConfBaseException):
            if not _run_started:
                undo()
            raise
    os.environ[FULL_ERROR] = "1"  # Hydra raises instead of printing its own multi-line report
    try:
        return main()
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        if _run_started or (isinstance(error, ValueError) and not raised_by_hydra(error)):
            raise
        undo()
        print(f"Error: {one_line(error)}{FLAG_FIXES.get(str(error), '')}", file=sys.stderr)
        sys.exit(2)


# Hydra's command-line checks raise a plain ValueError (two of -m, --cfg, --info, say); what mends them.
FLAG_FIXES = {
    "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified": (
        "; to print a sweep's config, drop -m (--cfg job shows one job's config, --cfg hydra Hydra's)"
    ),
}


def raised_by_hydra(error: BaseException) -> bool:
    """Whether Hydra's own code raised `error` (its argument checks), not a bug of ours or a library's."""
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_globals.get("__name__", "").startswith("hydra.")
