"""Model FLOPs utilisation (MFU): the share of the device's peak that training turns into model maths.

MFU = tokens/s x FLOPs per token / peak FLOP/s. FLOPs per token come from the architecture: the matrix
products of the forward pass (attention scores and values included, the MLM head only at the masked
positions), times 3 for forward + backward; embedding lookups, norms and activations are not counted (the
usual convention, PaLM appendix B). The peak is the device's dense tensor-core figure for the precision in
use, from the table below or `training.peak_tflops`; where neither gives one, no MFU is reported rather
than a guess.

Lightning ships a peak table (`lightning.fabric.utilities.throughput`), but it lists H200 and H100 NVL at
their with-sparsity figures, maps an L40S to the L4's and has no A10; MFU against those would be wrong by
up to 2x, so this table (dense, from NVIDIA's datasheets) is used instead.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bertlab.errors import BertlabError

TFLOPS = 1e12

# Dense peaks in TFLOP/s per GPU (no sparsity), by the precision of the matmuls: bf16 and fp16 tensor cores
# with fp32 accumulation, tf32 for fp32 matmuls allowed to use TF32. A missing entry: no such support.
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5},
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0},
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0},
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5},
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6},
    "V100 SXM2": {"fp16": 125.0},
    "V100 PCIe": {"fp16": 112.0},
    "V100S PCIe": {"fp16": 130.0},
    "T4": {"fp16": 65.0},
}
# torch.cuda.get_device_name() -> table entry; first match wins. Names not matched get no peak.
_DEVICE_NAMES: list[tuple[str, str]] = [
    (r"\bh200\b.*\bnvl\b", "H200 NVL"),
    (r"\bh200\b", "H200 SXM"),  # "NVIDIA H200"
    (r"\bh100\b.*\bpcie\b", "H100 PCIe"),
    (r"\bh100\b.*\b(sxm\w*|hbm3)\b", "H100 SXM"),  # "NVIDIA H100 80GB HBM3"
    (r"\ba100\b", "A100"),
    (r"\bl40s\b", "L40S"),
    (r"\bl4\b", "L4"),
    (r"\ba10\b", "A10"),  # not the A10G, whose peak differs
    (r"\brtx 4090$", "RTX 4090"),
    (r"\bv100s\b", "V100S PCIe"),
    (r"\bv100\b.*\bsxm", "V100 SXM2"),
    (r"\bv100\b.*\bpcie\b", "V100 PCIe"),
    (r"\bt4\b", "T4"),
]


def mlm_training_flops_per_token(
    hidden_size: int,
    num_layers: int,
    intermediate_size: int,
    seq_len: int,
    vocab_size: int,
    num_predictions: int,
    gated: bool = False,
) -> float:
    """Training FLOPs per input token of an encoder + MLM head (forward + backward = 3 x forward).

    Per layer and token, forward: q, k, v and output projections 8 h^2; feed-forward 4 h i (gated: 6 h i,
    its first projection is 2 i wide); attention scores and weighted values 4 s h. The head (transform
    2 h^2 and decoder 2 h V) runs on `num_predictions` of the `seq_len` positions.
    """
    h, i, s = hidden_size, intermediate_size, seq_len
    per_layer = 8 * h * h + (6 if gated else 4) * h * i + 4 * s * h
    head = (2 * h * h + 2 * h * vocab_size) * num_predictions / s
    return 3.0 * (num_layers * per_layer + head)


def matmul_kind(precision: str) -> str:
    """Which peak applies: bf16, fp16, tf32, or fp32 (no table has it) for a Lightning precision string."""
    if precision.startswith("bf16"):
        return "bf16"
    if precision.startswith("16"):
        return "fp16"
    return "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"


def gpu_peak_tflops(device_name: str, kind: str) -> float | None:
    """The dense peak of a CUDA device (by its torch name) for `kind`, or None when it is not known."""
    lowered = device_name.lower().strip()
    for pattern, entry in _DEVICE_NAMES:
        if re.search(pattern, lowered):
            return GPU_PEAK_TFLOPS[entry].get(kind)
    return None


def resolve_peak_flops(peak_tflops: float | None, accelerator: str, precision: str) -> float | None:
    """Peak FLOP/s per device for MFU: `peak_tflops` when set, else the table for a known GPU, else None."""
    if peak_tflops is not None:
        if not (isinstance(peak_tflops, int | float) and math.isfinite(peak_tflops) and peak_tflops > 0):
            raise BertlabError(
                f"must be a positive number of TFLOP/s or null (from the GPU table), got {peak_tflops!r}",
                "peak_tflops",
            )
        return float(peak_tflops) * TFLOPS
    if accelerator != "gpu" or not torch.cuda.is_available():
        return None
    peak = gpu_peak_tflops(torch.cuda.get_device_name(), matmul_kind(precision))
    return peak * TFLOPS if peak is not None else None


class MFUMonitor(L.Callback):
    """Logs `train/mfu` beside the module's tokens/s each step, and writes the run's mean into the run-info file.

    The module must expose `token_rate` (bertlab.tasks.throughput.TokenRate), whose rate counts the tokens
    of all processes; the peak is per device. The running sum survives a resume (callback state).
    """

    def __init__(self, flops_per_token: float, peak_flops: float, run_info: Path | None = None) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.run_info = run_info
        self.total = 0.0
        self.count = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        rate = pl_module.token_rate.last
        mfu = rate * self.flops_per_token / (self.peak_flops * trainer.world_size)
        if math.isfinite(mfu):
            self.total += mfu
            self.count += 1
        pl_module.log("train/mfu", mfu, on_step=True, on_epoch=False, rank_zero_only=True)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.run_info is None or not trainer.is_global_zero or not self.run_info.is_file():
            return
        info = json.loads(self.run_info.read_text())
        info["mfu_mean"] = self.mean
        self.run_info.write_text(json.dumps(info, indent=2) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total = float(state_dict["total"])
        self.count = int(state_dict["count"])
