"""How many data-loader worker processes a run uses: `auto` picks by device.

On a CPU the model step dominates and batches cost microseconds (one gather per batch, masking on the
device), so the main process keeps up and workers would only compete with the step for the cores. On a
GPU the host must stay ahead of a fast step: a few persistent workers prefetch pinned batches while the
main process launches kernels.
"""

from __future__ import annotations

import os

from bertlab.errors import BertlabError

AUTO = "auto"
MAX_AUTO_WORKERS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which SLURM and containers set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_num_workers(setting: int | str, device_type: str, processes_per_node: int = 1) -> int:
    """`setting` as an int: itself; `auto`: 0 off CUDA, else up to 4 per process, leaving it a core."""
    if setting == AUTO:
        if device_type != "cuda":
            return 0
        per_process = available_cpus() // max(1, processes_per_node)
        return max(0, min(MAX_AUTO_WORKERS, per_process - 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise BertlabError(f"must be auto or a non-negative integer, got {setting!r}", "num_workers")
    return setting
