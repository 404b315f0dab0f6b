"""How many threads torch's CPU kernels use, pinned or left to torch, and recorded with each run.

A matmul split over 2 threads sums in another order than over 1, so the same run on the same data differs
in the last bits, then in its figures, between thread counts. Torch's default follows OMP_NUM_THREADS, and
the joblib launcher gives each worker its share of the cores (2 workers on 2 cores: 1 thread each), so a
sweep run in parallel is not bit-identical to the same sweep run one job after another unless the count is
pinned (`training.cpu_threads`). The count is recorded in the run-info file; a resume at another count goes
on, with a warning that it is not bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from bertlab.errors import BertlabError

log = logging.getLogger(__name__)

KEY = "training.cpu_threads"


def check_cpu_threads(threads: object) -> None:
    """null (torch's default) or a positive integer."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise BertlabError(
            f"must be a positive integer or null (torch's default: OMP_NUM_THREADS, or the joblib "
            f"launcher's share of the cores), got {threads!r}",
            KEY,
        )


def apply_cpu_threads(threads: int | None) -> int:
    """Pin torch's intra-op threads when asked (checked by check_cpu_threads); the count in use. A run calls
    it again with the count it found, so the process (a test, a notebook) gets its own back."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def warn_if_resumed_at_other_count(run_info_file: Path, threads: int) -> None:
    """A resume at another thread count than the run had trained with: say the result will differ."""
    try:
        before = json.loads(Path(run_info_file).read_text()).get("cpu_threads")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(before, int) and before != threads:
        log.warning(
            "%s: resuming with %d CPU threads, the run trained with %d; it goes on, but not bit-identical "
            "to an uninterrupted run (sums in another order). %s=%d resumes it exactly",
            KEY,
            threads,
            before,
            KEY,
            before,
        )
