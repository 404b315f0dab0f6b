"""Numeric precision per device: `auto` picks the fastest that is numerically safe on the hardware, and
mixed precision runs through a plugin that lets fused optimizers be clipped."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType

from bertlab.errors import BertlabError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16-mixed", "16-mixed", "32-true", "32", "bf16-true")
MIXED = ("bf16-mixed", "16-mixed")
# Strategies that bring their own mixed-precision plugin (sharded gradients, their own scaler).
OWN_PRECISION_STRATEGIES = ("fsdp", "deepspeed")


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
        if precision == "16-mixed" and accelerator == "cpu":
            log.warning(
                "16-mixed on a CPU runs fp16 autocast with a grad scaler; bf16-mixed is usually faster"
            )
        return precision
    if accelerator == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator == "cpu" and cpu_supports_bf16():
        return "bf16-mixed"
    return "32-true"


def _unscales_in_step(optimizer: Any) -> bool:
    """Fused optimizers (AdamW(fused=True)) take the grad scaler's scale into their own kernel."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class AutocastPrecision(MixedPrecision):
    """Lightning's autocast plugin, with gradient clipping that works for fused optimizers too.

    Lightning refuses to clip when the optimizer unscales gradients inside its step, since the gradients
    it would clip are still scaled. Here the gradients are always real when they are clipped: bf16 has no
    scaler, and under fp16 the scaler unscales them first (`GradScaler.step` then hands the fused kernel no
    scale, so nothing is unscaled twice). Without clipping the fused kernel still unscales on its own.
    """

    def optimizer_step(
        self,
        optimizer: Any,
        model: L.LightningModule,
        closure: Callable[[], Any],
        **kwargs: Any,
    ) -> Any:
        if self.scaler is None or not _unscales_in_step(optimizer):
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        closure_result = closure()
        skipped_backward = closure_result is None and model.automatic_optimization
        if not skipped_backward and model.trainer.gradient_clip_val:
            self.scaler.unscale_(optimizer)
        self._after_closure(model, optimizer)  # hooks and clipping
        if skipped_backward:
            return closure_result
        step_output = self.scaler.step(optimizer, **kwargs)  # skips the update on inf/nan gradients
        self.scaler.update()
        return step_output

    def clip_gradients(
        self,
        optimizer: Any,
        clip_val: int | float = 0.0,
        gradient_clip_algorithm: GradClipAlgorithmType = GradClipAlgorithmType.NORM,
    ) -> None:
        Precision.clip_gradients(self, optimizer, clip_val, gradient_clip_algorithm)


def precision_plugin(precision: str, accelerator: str, strategy: str) -> AutocastPrecision | None:
    """The plugin for a resolved mixed precision; None where Lightning's own handling is right.

    Returning a plugin also keeps Lightning from replacing an explicit `16-mixed` on CPU by bf16: what
    the run-info file records is what runs.
    """
    if precision not in MIXED or any(name in str(strategy) for name in OWN_PRECISION_STRATEGIES):
        return None
    device = {"gpu": "cuda"}.get(accelerator, accelerator)
    return AutocastPrecision(precision, device)  # type: ignore[arg-type]
