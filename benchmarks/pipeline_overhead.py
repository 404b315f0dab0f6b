"""How much of the bare training step's throughput a real pretraining run through launch.py keeps.

Pipeline arm: `python launch.py +experiment=pretrain ...` in a subprocess, sized like mlm_throughput.py
(architecture=bert_mini, hidden 256, 4 layers, batch 32, length 128; tokenizer.vocab_size=8192 is only a
limit: the embedded corpus yields a vocabulary of ~420 tokens). Its steady-state tokens/s is read from
metrics/train/metrics.csv (tokens_per_s is windowed over 20 steps; the first window, which holds the
start-up, is skipped). Logging every 20 steps makes the windows disjoint.

Bare arm: mlm_throughput.py's bertlab step loop (same model, batch, vocabulary = the run's actual one,
same precision), timed the same way: consecutive steps in windows of 20 after warm-up. The bare windows
are split before and after the pipeline run, so a drift in machine load affects both arms alike.

Ratio = median pipeline window / median bare window; target >= 0.90.

    python benchmarks/pipeline_overhead.py           # about 4-5 minutes on 2 cores
    python benchmarks/pipeline_overhead.py --tiny    # seconds, for tests
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import mlm_throughput as mt
import torch
from common import RESULTS, launch, machine, median, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "pipeline_overhead.json"
TARGET = 0.90
WINDOW = 20  # steps per tokens_per_s value (bertlab.tasks.throughput.TokenRate's default window)
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def run_overrides(size: mt.Size, steps: int, precision: str, documents: int | None) -> list[str]:
    """launch.py overrides: the size of mlm_throughput, a fixed number of steps, no evaluation."""
    overrides = [
        "+experiment=pretrain",
        *mt.size_overrides(size),
        f"training.max_steps={steps}",
        f"training.precision={PRECISIONS[precision]}",
        f"logging.log_every_n_steps={WINDOW}",
        "logging.log_eval=false",  # no validation pauses inside the timed windows
        f"training.checkpoint.every_n_steps={steps}",
    ]
    if documents is not None:
        overrides.append(f"data.source.documents={documents}")
    return overrides


def corpus_vocab_size(overrides: list[str], output_dir: Path) -> int:
    """The vocabulary size the run will have: its tokenizer trained here on the same training documents."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from bertlab.launcher.registration import register as register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(mt.ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, f"experiment.output_dir={output_dir}"])
    tokenizer = instantiate(cfg.tokenizer)
    datamodule = instantiate(cfg.data, masking=None, batch_size=cfg.training.batch_size)
    tokenizer.fit(datamodule.tokenizer_sample())
    return tokenizer.vocab_size


def pipeline_windows(run_dir: Path) -> list[float]:
    """tokens_per_s of every disjoint 20-step window after the first, from the run's train metrics."""
    with (run_dir / "metrics/train/metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(row["tokens_per_s"]) for row in rows if row["tokens_per_s"] and int(row["step"]) > WINDOW]


def bare_windows(arm: mt.Arm, batches: list, bf16: bool, windows: int, warmup: int) -> list[float]:
    """tokens/s of `windows` consecutive 20-step windows of the bare step loop, after `warmup` steps."""
    tokens = batches[0]["input_ids"].numel()
    for step in range(warmup):
        arm.step(batches[step % len(batches)], bf16)
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for step in range(WINDOW):
            arm.step(batches[step % len(batches)], bf16)
        rates.append(WINDOW * tokens / (time.perf_counter() - start))
    return rates


def component_costs(
    overrides: list[str], output_dir: Path, run_dir: Path, arm: mt.Arm, batches: list
) -> dict:
    """ms per step of what the run adds to the bare step, timed alone (load-robust, unlike the ratio):
    producing a masked batch from the run's prepared data, and clipping the gradient norm (clip 1.0)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from bertlab.tokenizer import WordPieceTokenizer

    with initialize_config_dir(config_dir=str(mt.ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, f"experiment.output_dir={output_dir}"])
    masking = instantiate(cfg.mlm_head.masking)
    datamodule = instantiate(cfg.data, masking=masking, batch_size=cfg.training.batch_size)
    datamodule.prepare(WordPieceTokenizer.from_file(run_dir / "tokenizer.json", cfg.tokenizer.max_length))
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    datamodule.on_after_batch_transfer(next(loader), 0)
    count = min(10, datamodule.batches_per_epoch() - 1)
    start = time.perf_counter()
    for _ in range(count):
        datamodule.on_after_batch_transfer(next(loader), 0)  # masking runs on the batch's device
    batch_ms = 1e3 * (time.perf_counter() - start) / max(count, 1)
    arm.step(batches[0], bf16=False)
    loss = arm.loss(batches[0])
    loss.backward()
    start = time.perf_counter()
    for _ in range(5):
        torch.nn.utils.clip_grad_norm_(arm.model.parameters(), 1.0)
    clip_ms = 1e3 * (time.perf_counter() - start) / 5
    return {"data_batch_ms": round(batch_ms, 2), "clip_grad_norm_ms": round(clip_ms, 2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, few steps: seconds, for tests")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument(
        "--windows", type=int, default=None, help="timed 20-step windows per arm (default 4; tiny 1)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="bare-loop steps before timing")
    parser.add_argument(
        "--documents", type=int, default=None, help="embedded corpus size (default the config's)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here (default: temp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    size = mt.TINY_SIZE if args.tiny else mt.DEFAULT_SIZE
    windows = args.windows if args.windows is not None else (1 if args.tiny else 4)
    documents = args.documents if args.documents is not None else (400 if args.tiny else None)
    steps = WINDOW * (windows + 1)  # the first window is the start-up and is skipped
    bf16 = args.precision == "bf16"
    started = time.perf_counter()
    machine_info = machine()  # at the start: the load average before the benchmark's own work

    with tempfile.TemporaryDirectory(prefix="bertlab-pipeline-") as temporary:
        output_dir = args.keep or Path(temporary)
        overrides = run_overrides(size, steps, args.precision, documents)
        vocab = corpus_vocab_size(overrides, output_dir / "vocab-probe")
        bare_size = replace(size, vocab_size=vocab)
        arm = mt.build_bertlab(bare_size)
        batches = mt.make_batches(bare_size, count=4)
        before = windows - windows // 2  # bare windows before the pipeline run; the rest after it
        bare = bare_windows(arm, batches, bf16, before, args.warmup)

        run_started = time.perf_counter()
        launch([*overrides, "experiment.name=pipeline"], output_dir)
        run_seconds = time.perf_counter() - run_started
        run_dir = output_dir / "pretraining" / "pipeline"
        pipeline = pipeline_windows(run_dir)
        info = json.loads((run_dir / "run.json").read_text())

        if windows - before:
            bare += bare_windows(arm, batches, bf16, windows - before, args.warmup)
        components = component_costs(overrides, output_dir, run_dir, arm, batches)

    bare_rate, pipeline_rate = median(bare), median(pipeline)
    ratio = pipeline_rate / bare_rate
    result = {
        "benchmark": "pipeline_overhead",
        "machine": machine_info,
        "size": asdict(bare_size),
        "requested_vocab_size": size.vocab_size,
        "run_vocab_size": info.get("vocab_size"),
        "precision": args.precision,
        "run_precision": info.get("precision"),
        "pipeline_steps": steps,
        "window_steps": WINDOW,
        "launch_overrides": overrides,
        "pipeline_windows_tokens_per_s": [round(r, 1) for r in pipeline],
        "bare_windows_tokens_per_s": [round(r, 1) for r in bare],
        "pipeline_median_tokens_per_s": round(pipeline_rate, 1),
        "bare_median_tokens_per_s": round(bare_rate, 1),
        "ratio": round(ratio, 3),
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "pipeline_run_seconds": round(run_seconds, 1),
        "bare_ms_per_step": round(1e3 * bare_size.batch_size * bare_size.seq_len / bare_rate, 1),
        "pipeline_components_ms_per_step": components,
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if info.get("vocab_size") != vocab:
        result["warning"] = (
            f"the run's vocabulary ({info.get('vocab_size')}) differs from the bare loop's ({vocab})"
        )

    m = result["machine"]
    print(f"\npipeline_overhead on {m['cpu']} ({m['cores']} cores), {m['date']}")
    print(
        f"bert_mini-sized model, vocab {vocab} (requested {size.vocab_size}), batch {size.batch_size} x "
        f"{size.seq_len}, {args.precision}; {steps} pipeline steps, 20-step windows (first skipped)"
    )
    print()
    print_table(
        ["arm", "median tokens/s", "windows"],
        [
            ["bare step loop", f"{bare_rate:,.0f}", ", ".join(f"{r:,.0f}" for r in bare)],
            ["launch.py run", f"{pipeline_rate:,.0f}", ", ".join(f"{r:,.0f}" for r in pipeline)],
        ],
    )
    if "warning" in result:
        print(f"\nwarning: {result['warning']}")
    step_ms = result["bare_ms_per_step"]
    print(
        f"\nadded per step, timed alone: masked batch from the prepared data {components['data_batch_ms']} ms, "
        f"gradient clipping {components['clip_grad_norm_ms']} ms (bare step {step_ms:.0f} ms)"
    )
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"\nratio pipeline/bare: {ratio:.3f} (target >= {TARGET}: {verdict})")
    path = write_json(args.output, result)
    print(f"wrote {path} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
