"""Does validation cost stay the same when the prepared corpus grows 10x? Tokens and seconds per evaluation.

1. Writes two synthetic prepared folders of about 54 M and 544 M tokens (what preparing the 250 MB and
   2.5 GB corpora of prepare_throughput.py gives): generated documents encoded once with a WordPiece 4096
   tokenizer, split by the real hash rule (5 % val, 5 % test), and repeated into shards by the
   preparation's own ShardWriter, with a manifest built as a real preparation builds it. Preparing the real
   text would take about 30 minutes; reading a prepared folder does not depend on how it was written.
2. Runs a 2-step pretraining (`+experiment=pretrain data.prepared=<folder>`, the default bert_tiny,
   batch 32 x 128) on each, in this process, and times every evaluation from Lightning's
   `on_validation_start` to `on_validation_end` (and the test pass), counting the tokens the model read.
   A run validates at step 0 and after its last step, then tests.
3. Arms: `after` (the defaults: data.eval_tokens=262144), `--rounds` runs per size in alternating order,
   median seconds per evaluation; and `before` (data.eval_tokens=all, the whole split, as every evaluation
   read before), one run per size. A whole val split of the 544 M-token corpus is 30 M tokens, minutes per
   evaluation on a CPU, so by default `before` reads its first `--before-batches` batches only
   (training.limit_val_batches) and its seconds per evaluation are extrapolated linearly to the whole
   split (evaluation cost is linear in tokens); `--before-full` measures whole splits instead.

Target: seconds per evaluation at 544 M tokens within 1.5x of those at 54 M with the defaults.

    python benchmarks/eval_cost.py                # about 2 minutes on 2 cores (1.2 GB of shards in a temp folder)
    python benchmarks/eval_cost.py --before-full  # about 15 minutes: `before` evaluates whole splits
    python benchmarks/eval_cost.py --tiny         # seconds, for tests
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "eval_cost.json"
SIZES = {
    "1x": 54_400_000,
    "10x": 544_000_000,
}  # tokens of the 250 MB and 2.5 GB corpora (prepare_throughput.py)
TARGET = 1.5


def write_prepared(folder: Path, total_tokens: int, sample: Path, vocab_size: int) -> dict[str, Any]:
    """A prepared folder of about `total_tokens` tokens: the sample's encoded splits repeated into shards."""
    import numpy as np

    from bertlab.atomic_write import atomic_write_text
    from bertlab.data.chunk_encoding import BadRecords
    from bertlab.data.corpus import TextCorpus
    from bertlab.data.mlm_datamodule import MLMDataModule
    from bertlab.data.shard_store import MANIFEST, SPLITS, ShardWriter, clear_stores
    from bertlab.data.streaming_preparation import _manifest
    from bertlab.tokenizer import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocab_size=vocab_size)
    documents = [line for line in sample.read_text().splitlines() if line.strip()]
    tokenizer.fit(documents)
    folder.mkdir(parents=True, exist_ok=True)
    clear_stores(folder)
    tokenizer.save(folder / "tokenizer.json")
    datamodule = MLMDataModule(TextCorpus(train=str(sample)), val_ratio=0.05, test_ratio=0.05)
    plan = datamodule.plan(tokenizer)
    rule = datamodule.split_rule()
    encoded = tokenizer.backend.encode_batch(documents, add_special_tokens=False)
    base: dict[str, list[list[int]]] = {split: [] for split in SPLITS}
    for text, encoding in zip(documents, encoded, strict=True):
        base[rule.split_of(text)].append([*encoding.ids, tokenizer.sep_id])  # each document ends with [SEP]
    arrays = {
        split: (
            np.fromiter((i for d in docs for i in d), dtype=plan.settings.dtype),
            np.array([len(d) for d in docs], dtype=np.int64),
        )
        for split, docs in base.items()
    }
    per_copy = sum(ids.size for ids, _ in arrays.values())
    copies = max(1, round(total_tokens / per_copy))
    records, writer = [], None
    for copy in range(copies):
        writer = writer or ShardWriter(folder, len(records))
        for split, (ids, lengths) in arrays.items():
            writer.append(split, ids, lengths)
        if writer.tokens >= plan.shard_tokens or copy == copies - 1:
            records.append(writer.publish({"chunks_end": copy + 1, "bad_records": BadRecords().as_dict()}))
            writer = None
    manifest = _manifest(plan, records, BadRecords())
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


class EvaluationClock:
    """Times each validation and test pass of the runs in this process and counts the tokens it read."""

    def __init__(self) -> None:
        self.passes: list[dict[str, Any]] = []

    def install(self) -> None:
        from bertlab.tasks.mlm import MaskedLanguageModel

        clock = self

        def start(stage: str):
            def hook(module, *args: Any) -> None:
                clock.passes.append({"stage": stage, "tokens": 0, "start": time.perf_counter()})

            return hook

        def end(module, *args: Any) -> None:
            clock.passes[-1]["seconds"] = time.perf_counter() - clock.passes[-1].pop("start")

        def counting(original):
            def step(module, batch, batch_idx):
                clock.passes[-1]["tokens"] += batch["input_ids"].numel()
                return original(module, batch, batch_idx)

            return step

        MaskedLanguageModel.on_validation_start = start("val")
        MaskedLanguageModel.on_test_start = start("test")
        MaskedLanguageModel.on_validation_end = end
        MaskedLanguageModel.on_test_end = end
        MaskedLanguageModel.validation_step = counting(MaskedLanguageModel.validation_step)
        MaskedLanguageModel.test_step = counting(MaskedLanguageModel.test_step)

    def take(self) -> list[dict[str, Any]]:
        passes, self.passes = self.passes, []
        return passes


def pretrain(output: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from bertlab.launcher.registration import register
    from bertlab.run import run

    register()
    args = ["+experiment=pretrain", f"experiment.name={name}", f"experiment.output_dir={output}", *overrides]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    run_dir = output / "pretraining" / name
    run(cfg, run_dir)
    return json.loads((run_dir / "run.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 54 M / 544 M tokens")
    parser.add_argument("--before-batches", type=int, default=128, help="batches the `before` arm times")
    parser.add_argument("--rounds", type=int, default=3, help="runs of the `after` arm per size")
    parser.add_argument("--before-full", action="store_true", help="time the whole split in `before`")
    parser.add_argument("--work", type=Path, default=None, help="folder for the prepared corpora and runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--tiny", action="store_true", help="a 600 k / 6 M token pair and a small cap")
    args = parser.parse_args(argv)
    measured_on = machine()  # the date and load average at the start
    work = args.work or Path(tempfile.mkdtemp(prefix="eval_cost_"))
    work.mkdir(parents=True, exist_ok=True)
    run_args: list[str] = []
    vocab_size, sample_mb = 4096, 2.0
    if args.tiny:
        args.scale, args.before_batches, args.rounds, vocab_size, sample_mb = 0.011, 4, 1, 1000, 0.2
        run_args = ["data.eval_tokens=8192", "training.batch_size=8", "tokenizer.max_length=64"]

    from bertlab.data.embedded_corpus import generate_documents

    sample = work / "sample.txt"
    with sample.open("w", encoding="utf-8") as handle:
        seed = 0
        while handle.tell() < sample_mb * 1e6:
            handle.write("\n".join(generate_documents(2000, seed)) + "\n")
            seed += 1

    clock = EvaluationClock()
    clock.install()
    folders, results = {}, {}
    for size, tokens in SIZES.items():
        folders[size] = work / "preparation" / size
        started = time.perf_counter()
        manifest = write_prepared(folders[size], int(tokens * args.scale), sample, vocab_size)
        results[size] = {
            "tokens": sum(s["tokens"] for s in manifest["splits"].values()),
            "val_tokens": manifest["splits"]["val"]["tokens"],
            "shards": manifest["shards"],
            "write_seconds": round(time.perf_counter() - started, 1),
            "arms": {},
        }
    before = ["data.eval_tokens=all"] + (
        [] if args.before_full else [f"training.limit_val_batches={args.before_batches}"]
    )
    # The `after` arms alternate their order round by round, so neither size always runs first (cold).
    schedule = [
        (size, "after", round_)
        for round_ in range(args.rounds)
        for size in (list(SIZES) if round_ % 2 == 0 else list(SIZES)[::-1])
    ] + [(size, "before", 0) for size in SIZES]
    for size, arm, round_ in schedule:
        extra = before if arm == "before" else []
        name = f"{size}_{arm}_{round_}"
        common = [f"data.prepared={folders[size]}", "training.max_steps=2", *run_args, *extra]
        info = pretrain(work, name, common)["evaluation"]
        passes = clock.take()
        entry = results[size]["arms"].setdefault(
            arm,
            {
                "eval_tokens": info["eval_tokens"],
                "val_tokens_per_evaluation": info["val"]["tokens"],
                "val_blocks_per_evaluation": info["val"]["blocks"],
                "capped": info["val"]["capped"],
                "test_tokens_per_evaluation": info["test"]["tokens"],
                "measured_tokens_per_evaluation": [],
                "measured_seconds_per_evaluation": [],
                "measured_test_tokens": [],
                "measured_test_seconds": [],
                "extrapolated": arm == "before" and not args.before_full,
            },
        )
        for p in passes:
            prefix = "measured" if p["stage"] == "val" else "measured_test"
            entry[f"{prefix}_tokens" + ("_per_evaluation" if p["stage"] == "val" else "")].append(p["tokens"])
            entry[f"{prefix}_seconds" + ("_per_evaluation" if p["stage"] == "val" else "")].append(
                round(p["seconds"], 3)
            )
    rows = []
    for size, corpus in results.items():
        for arm, entry in corpus["arms"].items():
            seconds = entry["measured_seconds_per_evaluation"]
            tokens = entry["measured_tokens_per_evaluation"]
            whole = entry["val_tokens_per_evaluation"]
            # linear in tokens: seconds per token read, times the tokens a whole evaluation reads
            entry["seconds_per_evaluation"] = round(
                sum(seconds) / sum(tokens) * whole if entry["extrapolated"] else statistics.median(seconds), 2
            )
            rows.append(
                [
                    size,
                    f"{corpus['tokens'] / 1e6:.1f} M",
                    arm,
                    f"{whole:,}",
                    f"{entry['seconds_per_evaluation']}"
                    + (" (extrapolated)" if entry["extrapolated"] else ""),
                ]
            )
    small, large = (results[s]["arms"]["after"]["seconds_per_evaluation"] for s in SIZES)
    ratio = large / small
    print_table(["corpus", "prepared tokens", "arm", "val tokens per evaluation", "s per evaluation"], rows)
    print(f"seconds per evaluation 10x / 1x with the defaults: {ratio:.2f} (target <= {TARGET})")
    write_json(
        args.output,
        {
            "benchmark": "eval_cost",
            "machine": measured_on,
            "scale": args.scale,
            "tiny": args.tiny,
            "before_batches": None if args.before_full else args.before_batches,
            "corpora": results,
            "ratio_after": round(ratio, 3),
            "target_ratio": TARGET,
        },
    )


if __name__ == "__main__":
    main()
