"""Did pretraining help? Baseline / from scratch / pretrained, on a real labelled set, within a time budget.

The dataset folder holds train.jsonl, val.jsonl, test.jsonl ({"text", "label"} per line) and corpus.txt
(unlabelled text of the same domain, one document per line), as ../shared/tools/make_devsets.py builds them.
Everything runs through launch.py, as a user would run it:

1. pretraining on corpus.txt for as many steps as fit in --minutes (measured on a short calibration run),
2. a finetune from its best checkpoint, and one of the same architecture from random initialisation,
   each for every seed (--seeds N: the median and the spread are reported),
3. the TF-IDF + logistic-regression baseline, which every finetune computes on the same split.

    python benchmarks/quality.py devsets/healthtweets --minutes 20 --seeds 3
    python benchmarks/quality.py --tiny            # seconds: generated data, a few steps (checks the script)

Prints a table (test accuracy and macro-F1 with the minutes each row took) and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
from common import RESULTS, launch, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "quality.json"
CALIBRATION_STEPS = 30


def write_tiny_dataset(folder: Path) -> Path:
    """A generated stand-in for a real set: the embedded reviews, and the embedded corpus as corpus.txt."""
    from bertlab.data.embedded_corpus import generate_documents, generate_reviews

    folder.mkdir(parents=True, exist_ok=True)
    reviews = generate_reviews(600, seed=5)
    for split, rows in (("train", reviews[:400]), ("val", reviews[400:500]), ("test", reviews[500:])):
        with (folder / f"{split}.jsonl").open("w") as handle:
            handle.writelines(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)
    (folder / "corpus.txt").write_text("\n".join(generate_documents(600, seed=6)) + "\n")
    return folder


def last_rows(run_dir: Path, stage: str) -> list[dict[str, str]]:
    with (run_dir / "metrics/eval/metrics.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["stage"] == stage]


def pretraining_args(dataset: Path, architecture: str, tiny: bool) -> list[str]:
    args = [
        "+experiment=pretrain",
        f"architecture={architecture}",
        "data=text",
        f"data.source.train={dataset / 'corpus.txt'}",
        "logging.progress_bar=false",
    ]
    if tiny:
        args += ["tokenizer.vocab_size=400", "tokenizer.max_length=64", "training.batch_size=8"]
    return args


def steps_for_budget(output: Path, args: list[str], minutes: float, calibration: int) -> tuple[int, float]:
    """How many optimizer steps fit in `minutes`, from the step rate of a short run of the same setup."""
    run = [*args, "experiment.name=calibration", f"training.max_steps={calibration}"]
    run += [
        f"training.val_check_interval={calibration}",
        f"logging.log_every_n_steps={max(1, calibration // 3)}",
    ]
    launch(run, output)
    with (output / "pretraining/calibration/metrics/train/metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    tokens_per_s = float(rows[-1]["tokens_per_s"])
    config = json.loads((output / "pretraining/calibration/run.json").read_text())
    tokens_per_step = config["global_batch_size"] * _max_length(output / "pretraining/calibration")
    steps_per_second = tokens_per_s / tokens_per_step * 0.9  # validations and checkpoints take the rest
    return max(calibration, int(minutes * 60 * steps_per_second)), tokens_per_s


def _max_length(run_dir: Path) -> int:
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run_dir / ".hydra/config.yaml").tokenizer.max_length)


def finetune(
    output: Path, name: str, dataset: Path, seed: int, source: list[str], tiny: bool
) -> dict[str, Any]:
    args = [
        "+experiment=finetune",
        f"experiment.name={name}",
        f"experiment.seed={seed}",
        *source,
        "data=classification",
        f"data.source.train={dataset / 'train.jsonl'}",
        f"data.source.val={dataset / 'val.jsonl'}",
        f"data.source.test={dataset / 'test.jsonl'}",
        "logging.progress_bar=false",
    ]
    if tiny:
        args += ["training.max_epochs=1", "training.batch_size=16", "tokenizer.max_length=48"]
    started = time.perf_counter()
    launch(args, output)
    seconds = time.perf_counter() - started
    results = json.loads((output / "finetuning" / name / "results.json").read_text())
    return {"seed": seed, "seconds": seconds, **results}


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [run[key] for run in runs]
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dataset", nargs="?", type=Path, help="folder with train/val/test.jsonl and corpus.txt"
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="pretraining budget (default 20)")
    parser.add_argument("--seeds", type=int, default=1, help="finetunes per start (median and spread)")
    parser.add_argument("--architecture", default="bert_mini", help="architecture preset (default bert_mini)")
    parser.add_argument(
        "--runs", type=Path, default=None, help="where the runs go (default: a temporary folder)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--tiny", action="store_true", help="seconds: generated data, a few steps")
    options = parser.parse_args()
    calibration = CALIBRATION_STEPS
    if options.tiny:
        options.minutes, options.architecture, calibration = 0.01, "bert_tiny", 6
    workdir = Path(options.runs or tempfile.mkdtemp(prefix="bertlab-quality-"))
    dataset = options.dataset or write_tiny_dataset(workdir / "tiny_dataset")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "corpus.txt"):
        if not (dataset / name).is_file():
            parser.error(
                f"{dataset / name} does not exist; the folder needs train/val/test.jsonl and corpus.txt"
            )

    started = time.perf_counter()
    args = pretraining_args(dataset, options.architecture, options.tiny)
    steps, tokens_per_s = steps_for_budget(workdir, args, options.minutes, calibration)
    interval = max(1, steps // 10)
    pretrain = [*args, "experiment.name=pretrained", f"training.max_steps={steps}"]
    pretrain += [f"training.val_check_interval={interval}", f"training.checkpoint.every_n_steps={interval}"]
    launch(pretrain, workdir)
    pretrain_seconds = time.perf_counter() - started
    curve = [
        {"step": int(row["step"]), "loss": float(row["loss"]), "accuracy": float(row["accuracy"])}
        for row in last_rows(workdir / "pretraining/pretrained", "val")
    ]
    print(f"pretraining: {steps} steps ({tokens_per_s:,.0f} tokens/s) in {pretrain_seconds / 60:.1f} min")
    for point in curve:
        print(
            f"  step {point['step']:>6}  val loss {point['loss']:.3f}  masked accuracy {point['accuracy']:.3f}"
        )

    seeds = range(options.seeds)
    starts = {
        "pretrained": ["pretrained_experiment.name=pretrained"],
        "scratch": ["pretrained_experiment=none", f"architecture={options.architecture}"],
    }
    runs = {
        start: [finetune(workdir, f"{start}_{seed}", dataset, seed, source, options.tiny) for seed in seeds]
        for start, source in starts.items()
    }
    baseline = runs["pretrained"][0]["baseline"]
    rows = {
        "baseline (TF-IDF + LR)": {
            "accuracy": {"median": baseline["test/accuracy"]},
            "macro_f1": {"median": baseline["test/macro_f1"]},
            "minutes": baseline["seconds"] / 60,
        },
        "from scratch": {
            "accuracy": summarise(runs["scratch"], "test/accuracy"),
            "macro_f1": summarise(runs["scratch"], "test/macro_f1"),
            "minutes": statistics.median(run["seconds"] for run in runs["scratch"]) / 60,
        },
        "pretrained": {
            "accuracy": summarise(runs["pretrained"], "test/accuracy"),
            "macro_f1": summarise(runs["pretrained"], "test/macro_f1"),
            "minutes": (pretrain_seconds + statistics.median(r["seconds"] for r in runs["pretrained"])) / 60,
        },
    }

    def cell(figures: dict[str, float]) -> str:
        spread = (
            f" ({figures['min']:.3f}-{figures['max']:.3f})" if len(seeds) > 1 and "min" in figures else ""
        )
        return f"{figures['median']:.3f}{spread}"

    print(
        f"\n{dataset.name}: {options.architecture}, pretraining budget {options.minutes:g} min, {len(seeds)} seed(s)"
    )
    print_table(
        ["start", "test accuracy", "test macro-F1", "minutes"],
        [
            [name, cell(row["accuracy"]), cell(row["macro_f1"]), f"{row['minutes']:.1f}"]
            for name, row in rows.items()
        ],
    )
    write_json(
        options.output,
        {
            "benchmark": "quality",
            "machine": machine(),
            "dataset": str(dataset),
            "architecture": options.architecture,
            "minutes": options.minutes,
            "pretraining": {
                "steps": steps,
                "tokens_per_s": tokens_per_s,
                "seconds": pretrain_seconds,
                "val": curve,
            },
            "rows": rows,
            "runs": runs,
            "run_folders": str(workdir),
        },
    )


if __name__ == "__main__":
    main()
