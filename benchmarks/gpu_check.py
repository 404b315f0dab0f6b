"""The GPU check: bertlab's `gpu` tests on CUDA, then bert_base MLM steps against Hugging Face, in minutes.

1. `pytest -m gpu`: the default pretraining, a finetune, SIGTERM + resume and `training.compile=true` on
   CUDA in bf16 (tests/test_gpu.py), and whatever else is marked `gpu` (16-mixed with its grad scaler).
2. bert_base (12 layers, hidden 768, vocabulary 30,522) MLM training steps in bf16 autocast at sequence
   length 128 and 512: bertlab (the backbone and head a run builds, loss on the masked positions) against
   transformers' BertForMaskedLM (sdpa, labels -100 elsewhere), both with fused AdamW, in the same process,
   eager and torch.compile'd. Prints tokens/s, MFU (same FLOPs per token for both: the model's useful
   work) and the ratio, and writes JSON.

Targets on an H100/H200: bertlab at 128 tokens >= 40 % MFU and >= 1.5x Hugging Face.

    python benchmarks/gpu_check.py                 # under 6 minutes on an H100/H200
    python benchmarks/gpu_check.py --skip-tests    # only the timing
    python benchmarks/gpu_check.py --tiny          # seconds, any device, no tests (checks the script itself)

Without a CUDA GPU (and without --tiny) it says so and exits 0 without running anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import torch
from common import RESULTS, ROOT, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "gpu_check.json"
TARGETS = {"mfu_bertlab_128": 0.40, "ratio_vs_hf_128": 1.5}
BERT_BASE = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}
# sequences per step: about 16k tokens per step at either length
SHAPES = {128: 128, 512: 32}


def run_gpu_tests(timeout: float) -> dict[str, Any]:
    """`pytest -m gpu` in a subprocess, single process (one GPU); its summary line and exit status."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-n", "0", "tests"]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "command": " ".join(command),
            "returncode": None,
            "summary": f"timed out after {timeout:.0f} s",
        }
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n")
    return {
        "command": " ".join(command[1:]),
        "returncode": result.returncode,
        "summary": lines[-1] if lines else result.stderr[-300:],
        "seconds": round(time.perf_counter() - started, 1),
    }


def timed_steps(step, batches: list[dict[str, torch.Tensor]], warmup: int, steps: int, device: str) -> float:
    """Seconds per step after `warmup` steps (compilation happens there), synchronising only around."""
    for index in range(warmup):
        step(batches[index % len(batches)])
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for index in range(steps):
        loss = step(batches[index % len(batches)])
    if device == "cuda":
        torch.cuda.synchronize()
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {loss.item()}")
    return (time.perf_counter() - start) / steps


def make_step(arm, device: str, bf16: bool):
    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        arm.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = arm.loss(batch)
        loss.backward()
        arm.optimizer.step()
        return loss.detach()

    return step


def build_arm(mt, size, kind: str, compiled: bool, device: str):
    """A bertlab or HF arm on `device` (both with conf/training's fused AdamW), compiled in place if asked."""
    arm = mt.build_bertlab(size) if kind == "bertlab" else mt.build_hf(size)
    arm.model.to(device)  # parameters keep their identity: the optimizer (no state yet) still holds them
    if compiled:
        if kind == "bertlab":
            for module in (arm.model.backbone, arm.model.head):
                module.compile(dynamic=False)
        else:
            arm.model.compile(dynamic=False)
    return arm


def time_models(args, device: str, deadline: float) -> list[dict[str, Any]]:
    import mlm_throughput as mt

    from bertlab.training.mfu import gpu_peak_tflops, mlm_training_flops_per_token

    peak = gpu_peak_tflops(torch.cuda.get_device_name(), "bf16") if device == "cuda" else None
    results = []
    lengths = [32] if args.tiny else [128, 512]
    for seq_len in lengths:
        if args.tiny:
            size = replace(mt.TINY_SIZE, seq_len=seq_len)
        else:
            size = replace(
                mt.DEFAULT_SIZE, vocab_size=30522, seq_len=seq_len, batch_size=SHAPES[seq_len], **BERT_BASE
            )
        batches = [
            {key: value.to(device) for key, value in batch.items()}
            for batch in mt.make_batches(size, count=4)
        ]
        k = mt.num_masked(size)
        flops = mlm_training_flops_per_token(
            size.hidden_size, size.num_layers, size.intermediate_size, seq_len, size.vocab_size, k
        )
        tokens = size.batch_size * seq_len
        for compiled in (False,) if args.no_compile or args.tiny else (False, True):
            row: dict[str, Any] = {"seq_len": seq_len, "batch_size": size.batch_size, "compiled": compiled}
            for kind in ("hf", "bertlab"):
                if time.perf_counter() > deadline:
                    row[kind] = {"skipped": "time budget spent"}
                    continue
                torch.manual_seed(0)
                arm = build_arm(mt, size, kind, compiled, device)
                seconds = timed_steps(
                    make_step(arm, device, bf16=True), batches, args.warmup, args.steps, device
                )
                rate = tokens / seconds
                row[kind] = {
                    "tokens_per_s": round(rate, 1),
                    "ms_per_step": round(1e3 * seconds, 2),
                    "mfu": round(rate * flops / (peak * 1e12), 4) if peak else None,
                }
                del arm
                if device == "cuda":
                    torch.cuda.empty_cache()
            if "tokens_per_s" in row["hf"] and "tokens_per_s" in row["bertlab"]:
                row["ratio_vs_hf"] = round(row["bertlab"]["tokens_per_s"] / row["hf"]["tokens_per_s"], 3)
            row["flops_per_token"] = flops
            row["size"] = asdict(size)
            results.append(row)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny model on any device, no tests, no compile: seconds"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--skip-tests", action="store_true", help="only time the models")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile arms")
    parser.add_argument("--warmup", type=int, default=None, help="steps before timing (default 5; tiny 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per arm (default 20; tiny 2)")
    parser.add_argument(
        "--budget",
        type=float,
        default=290.0,
        help="seconds from the start (tests included) after which arms not yet started are skipped; a "
        "compiled bert_base arm takes about a minute, so the default keeps the check under 6 minutes",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print(
            f"gpu_check needs a CUDA GPU and none is visible (torch {torch.__version__}); nothing was run. "
            "Run it on a machine with an NVIDIA GPU and a CUDA build of torch."
        )
        return 0
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    args.steps = args.steps if args.steps is not None else (2 if args.tiny else 20)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    deadline = started + args.budget
    info = machine()
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        torch.backends.cuda.matmul.allow_tf32 = True
    tests = None if (args.tiny or args.skip_tests) else run_gpu_tests(timeout=min(150.0, args.budget * 0.6))
    if tests is not None:
        print(f"gpu tests: {tests['summary']} (exit {tests['returncode']})")
    rows = time_models(args, device, deadline)

    table = []
    for row in rows:
        for kind in ("hf", "bertlab"):
            arm = row[kind]
            mfu = arm.get("mfu")
            table.append(
                [
                    row["seq_len"],
                    "yes" if row["compiled"] else "no",
                    {"hf": "HF BertForMaskedLM (sdpa)", "bertlab": "bertlab"}[kind],
                    f"{arm['tokens_per_s']:,.0f}" if "tokens_per_s" in arm else arm.get("skipped"),
                    f"{100 * mfu:.1f} %" if mfu is not None else "n/a",
                    row.get("ratio_vs_hf", "") if kind == "bertlab" else "1.00",
                ]
            )
    print(f"\nbf16 MLM training steps on {info.get('gpu', device)}\n")
    print_table(["seq", "compiled", "arm", "tokens/s", "MFU", "vs HF"], table)
    eager_128 = next((r for r in rows if r["seq_len"] == 128 and not r["compiled"]), None)
    best_128 = max(
        (r for r in rows if r["seq_len"] == 128 and "tokens_per_s" in r["bertlab"]),
        key=lambda r: r["bertlab"]["tokens_per_s"],
        default=None,
    )
    result = {
        "benchmark": "gpu_check",
        "machine": info,
        "device": device,
        "tests": tests,
        "rows": rows,
        "targets": TARGETS,
        "best_bertlab_128": best_128,
        "eager_128": eager_128,
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    if best_128 is not None and best_128["bertlab"].get("mfu") is not None:
        mfu, ratio = best_128["bertlab"]["mfu"], best_128.get("ratio_vs_hf", 0.0)
        result["targets_met"] = mfu >= TARGETS["mfu_bertlab_128"] and ratio >= TARGETS["ratio_vs_hf_128"]
        print(
            f"\nbertlab at 128 tokens: MFU {100 * mfu:.1f} % (target >= 40 %), {ratio}x HF (target >= 1.5x)"
        )
    write_json(args.output, result)
    print(f"total {result['seconds']} s; JSON: {args.output}")
    return 0 if tests is None or tests["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
