"""Which process of a multi-process run this is, known before any Trainer exists.

Lightning's re-launched DDP workers, torchrun workers and SLURM tasks (submitit) all run the whole run
function; only the main process may create, guard or write the run folder's shared files.
"""

from __future__ import annotations

import os



def is_main_process() -> bool:
    """True unless the environment names this process as a non-zero rank (global, SLURM, node or local)."""
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(name):
            return int(os.environ[name]) == 0
    return all(int(os.environ.get(name) or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK"))
