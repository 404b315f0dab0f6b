"""Helpers shared by the benchmarks: machine description, medians, JSON output, launch.py subprocesses.

The benchmarks are run as scripts (`python benchmarks/<name>.py`), so this folder is on sys.path and
they import this module as `common`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

# libgomp's idle threads spin while they wait for work. When other processes share the cores (other runs,
# test suites), a spinning thread keeps its descheduled peer from running and every parallel region waits
# for it: on this 2-core machine under load a training step took 5-6x longer with 2 threads than with 1.
# Passive waiting makes the benchmarks robust to that; it must be set before torch is imported, so the
# benchmarks import this module first. Subprocesses (launch.py runs) inherit it, so arms stay comparable.
# Export OMP_WAIT_POLICY=ACTIVE to measure libgomp's default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU model as lscpu prints it (falls back to /proc/cpuinfo, then platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text(errors="ignore").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def machine() -> dict[str, Any]:
    """What the figures were measured on: the CPU, its cores, its bf16 support and the library versions."""
    import torch

    flags = cpu_flags()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "native_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default)"),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "avx512": "avx512f" in flags,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_json(path: Path | str, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def launch_argv(args: list[str], output_dir: Path | str) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), *args, f"experiment.output_dir={output_dir}"]


def launch_env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}


def check_finished(
    result: subprocess.CompletedProcess[str], args: list[str], program: str = "launch.py"
) -> None:
    if result.returncode != 0:
        raise RuntimeError(
            f"{program} {' '.join(args)} failed ({result.returncode}):\n"
            f"{(result.stdout or '')[-3000:]}\n{(result.stderr or '')[-3000:]}"
        )


def launch(
    args: list[str], output_dir: Path | str, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """`python launch.py args experiment.output_dir=...` in a fresh subprocess; raises when it fails."""
    result = subprocess.run(
        launch_argv(args, output_dir),
        cwd=ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    check_finished(result, args)
    return result


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """A plain Markdown table on stdout (it pastes into benchmarks/README.md as is)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
