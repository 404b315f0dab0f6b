"""Which process of a multi-process run this is, known before any Trainer exists.

Lightning's re-launched DDP workers, torchrun workers and SLURM tasks (submitit) all run the whole run
function; only the main process may create, guard or write the run folder's shared files.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """False when the environment names this process as a non-zero rank.

    The order is Lightning's: RANK, then LOCAL_RANK/NODE_RANK (SLURM_PROCID can be set where SLURM does not
    manage the processes, e.g. a child Lightning started inside `srun --pty bash`), then SLURM's task rank
    when SLURM does start one task per device.
    """
    if os.environ.get("RANK"):
        return int(os.environ["RANK"]) == 0
    if "LOCAL_RANK" in os.environ or "NODE_RANK" in os.environ:
        return all(int(os.environ.get(name) or 0) == 0 for name in ("LOCAL_RANK", "NODE_RANK"))
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if os.environ.get("SLURM_PROCID") and SLURMEnvironment.detect():
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("JSM_NAMESPACE_RANK") or 0) == 0


def wait_for_file(
    path: Path,
    timeout_s: float | None = 1800.0,
    poll_s: float = 0.5,
    what: str = "",
    report_every_s: float = 60.0,
) -> Path:
    """Block until the main process has written `path` (atomically); for processes started beside it.

    `timeout_s=None` waits as long as it takes, saying every `report_every_s` what it waits for.
    """
    start = last = time.monotonic()
    while not path.is_file():
        now = time.monotonic()
        if timeout_s is not None and now - start > timeout_s:
            raise TimeoutError(f"waited {timeout_s:.0f} s for the main process to write {path}")
        if now - last >= report_every_s:
            last = now
            log.info(
                "Waiting %.0f s for the main process to write %s%s",
                now - start,
                path,
                f" ({what})" if what else "",
            )
        time.sleep(poll_s)
    return path


def device_count(devices: Any, accelerator: str = "auto") -> int:
    """How many devices a Trainer `devices` value asks for ("auto"/-1 on a GPU: every GPU; on CPU: 1)."""
    if isinstance(devices, str) and "," in devices:
        return len([part for part in devices.split(",") if part.strip()])
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    if str(devices).strip() in ("auto", "-1"):
        if accelerator == "cpu":
            return 1
        import torch

        return max(torch.cuda.device_count(), 1)
    try:
        return int(devices)
    except (TypeError, ValueError):
        raise BertlabError(
            f"must be a number of devices, a list of device ids or auto, got {devices!r}", "training.devices"
        ) from None


def relaunches_processes(strategy: str, devices: Any, num_nodes: int = 1, accelerator: str = "auto") -> bool:
    """Whether Lightning would start this run's other DDP processes by re-running the launch command.

    It does so for the subprocess-launched strategies (DDP, which `auto` picks for several devices, FSDP and
    DeepSpeed) unless a cluster (SLURM tasks, torchrun, LSF) has already started one process per device.
    """
    from lightning.fabric.plugins.environments import (
        LSFEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    strategy = str(strategy)
    if strategy != "auto" and not strategy.startswith(("ddp", "fsdp", "deepspeed")):
        return False
    if "spawn" in strategy or "fork" in strategy or "notebook" in strategy:
        return False
    if device_count(devices, accelerator) * num_nodes <= 1:
        return False
    environments = (SLURMEnvironment, TorchElasticEnvironment, LSFEnvironment)
    return not any(environment.detect() for environment in environments)


def refuse_relaunch_in_sweep(
    strategy: str, devices: Any, num_nodes: int = 1, accelerator: str = "auto"
) -> None:
    """A multirun job cannot re-run the launch command (it would start a sweep per extra process)."""
    if relaunches_processes(strategy, devices, num_nodes, accelerator):
        raise BertlabError(
            f"strategy {strategy!r} on {devices} devices starts its extra processes by re-running the launch "
            f"command, which cannot work inside a multirun (-m) sweep. Run the sweep through a launcher that "
            f"starts one process per device, e.g. hydra/launcher=slurm (submitit, tasks_per_node = "
            f"training.devices), or launch each configuration as a single run",
            "training.strategy",
        )
