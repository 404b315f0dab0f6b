"""Numeric precision per device: `auto` picks the fastest that is numerically safe on the hardware."""

from __future__ import annotations

from pathlib import Path

import torch

from bertlab.errors import BertlabError

PRECISIONS = ("auto", "bf16-mixed", "16-mixed", "32-true", "32", "bf16-true")


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AMX or AVX512-BF16); elsewhere bf16 is slower than fp32."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = cpuinfo.read_text(errors="ignore")
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "gpu"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise BertlabError("no CUDA GPU is visible; use training.accelerator=cpu or auto", "accelerator")
    if accelerator not in ("cpu", "gpu", "cuda", "mps"):
        raise BertlabError(
            f"unknown accelerator {accelerator!r}; choose auto, cpu, gpu or mps", "accelerator"
        )
    return "gpu" if accelerator == "cuda" else accelerator


def resolve_precision(precision: str, accelerator: str) -> str:
    """The Lightning precision string for `precision` on `accelerator` (already resolved)."""
    if precision not in PRECISIONS:
        raise BertlabError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}", "precision")
    if precision != "auto":
        return precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "cpu" and cpu_supports_bf16():
        return "bf16-mixed"
    return "32-true"
