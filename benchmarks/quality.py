"""Did pretraining help? Baseline / from scratch / pretrained, on a real labelled set, within a time budget.

The dataset folder holds train.jsonl, val.jsonl, test.jsonl ({"text", "label"} per line, plus "text_pair"
for pairs) and corpus.txt (unlabelled text of the same domain, one document per line), as
../shared/tools/make_devsets.py builds them. The task's shape comes from its first training record: a
"text_pair" field (pairs), a list label (multi-label), a number (regression), else single label; the
table reports that shape's figures (accuracy and macro-F1; micro- and macro-F1; Spearman and RMSE).
Everything runs through launch.py, as a user would run it:

1. pretraining on corpus.txt with a time budget of --minutes (training.budget.minutes: the schedule ends
   when the time does),
2. a finetune from its best checkpoint, and one of the same architecture from random initialisation,
   each for every seed (--seeds N: the median and the spread are reported),
3. the TF-IDF + logistic-regression baseline, which every finetune computes on the same split.

    python benchmarks/quality.py devsets/healthtweets --minutes 15 --seeds 3
    python benchmarks/quality.py devsets/debian_sections --minutes 3 --train-examples 2000 \
        --pretrain-override mlm_head.masking.unit=word          # one arm of an ablation
    python benchmarks/quality.py --tiny            # seconds: generated data, a few steps (checks the script)

--train-examples N finetunes on the first N training examples (the devsets are in random order), and
--val-examples N picks its best checkpoint on the first N validation examples; the test split is always
whole; --pretrained-run reuses a finished pretraining run folder instead of pretraining;
--no-scratch leaves the random-initialisation finetunes out (they do not depend on the pretraining).

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


# Per problem type: the finetune's overrides and the figures reported (the first two are the table's).
SHAPES = {
    "single_label_classification": ("accuracy", "macro_f1"),
    "multi_label_classification": ("micro_f1", "macro_f1", "exact_match"),
    "regression": ("spearman", "rmse", "pearson", "r2"),
}


def task_shape(dataset: Path) -> tuple[str, list[str]]:
    """The problem type of a devset and the launch.py overrides that finetune it, from its first record."""
    with (dataset / "train.jsonl").open() as handle:
        record = json.loads(handle.readline())
    label = record["label"]
    if isinstance(label, list):
        problem_type = "multi_label_classification"
    elif isinstance(label, float):  # an integer label is a class, as bertlab reads it
        problem_type = "regression"
    else:
        problem_type = "single_label_classification"
    overrides = [f"classification_head.problem_type={problem_type}"]
    if "text_pair" in record:
        overrides.append("data.text_pair_field=text_pair")
    return problem_type, overrides


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


def subset(dataset: Path, split: str, examples: int | None, workdir: Path) -> Path:
    """`<split>.jsonl`, or its first `examples` lines in a file of their own (the devsets are shuffled)."""
    if examples is None:
        return dataset / f"{split}.jsonl"
    path = workdir / f"{split}_{examples}.jsonl"
    with (dataset / f"{split}.jsonl").open() as source, path.open("w") as target:
        lines = [line for _, line in zip(range(examples), source, strict=False)]
        target.writelines(lines)
    if len(lines) < examples:
        raise SystemExit(f"{dataset / split}.jsonl has only {len(lines)} examples, fewer than {examples}")
    return path


def finetune(
    output: Path, name: str, dataset: Path, train: Path, val: Path, seed: int, source: list[str], tiny: bool
) -> dict[str, Any]:
    args = [
        "+experiment=finetune",
        f"experiment.name={name}",
        f"experiment.seed={seed}",
        *source,
        "data=classification",
        f"data.source.train={train}",
        f"data.source.val={val}",
        f"data.source.test={dataset / 'test.jsonl'}",
        "logging.progress_bar=false",
    ]
    if tiny:
        args += ["training.max_epochs=1", "training.min_steps=null", "training.batch_size=16"]
        args += ["tokenizer.max_length=48"]
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


def pretrain(
    workdir: Path, dataset: Path, options: argparse.Namespace, interval: int
) -> tuple[Path, dict[str, Any], float]:
    """The pretraining run of the budget: its folder, run.json's budget entry, and its wall-clock seconds."""
    args = pretraining_args(dataset, options.architecture, options.tiny)
    args += [
        "experiment.name=pretrained",
        f"training.budget.minutes={options.minutes}",
        f"training.val_check_interval={interval}",
        f"training.checkpoint.every_n_steps={interval}",
        *options.pretrain_override,
    ]
    started = time.perf_counter()
    launch(args, workdir, timeout=options.minutes * 60 * 2 + 1800)  # + preparation and the test
    run_dir = workdir / "pretraining/pretrained"
    return run_dir, json.loads((run_dir / "run.json").read_text())["budget"], time.perf_counter() - started


def _architecture_choice(run_dir: Path) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.load(run_dir / ".hydra/hydra.yaml").hydra.runtime.choices.architecture)


def reused_run(run_dir: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A finished pretraining run to finetune from (linked where pretrained_experiment.name looks), and its
    budget entry (minutes_spent by its own clock; the steps for a run without a budget)."""
    run_dir = run_dir.resolve()
    info = json.loads((run_dir / "run.json").read_text())
    link = workdir / "pretraining" / run_dir.name
    if link.exists() and link.resolve() != run_dir:
        raise SystemExit(f"{link} exists and is not {run_dir}; give another --runs folder")
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(run_dir, target_is_directory=True)
    budget = info.get("budget") or {}
    steps = int(float(last_rows(run_dir, "val")[-1]["step"]))
    return run_dir, {
        "minutes": budget.get("minutes"),
        "minutes_spent": budget.get("minutes_spent"),
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dataset", nargs="?", type=Path, help="folder with train/val/test.jsonl and corpus.txt"
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="pretraining budget (default 15)")
    parser.add_argument("--seeds", type=int, default=1, help="finetunes per start (median and spread)")
    parser.add_argument("--architecture", default="bert_mini", help="architecture preset (default bert_mini)")
    parser.add_argument("--val-every", type=int, default=100, help="pretraining steps between validations")
    parser.add_argument("--train-examples", type=int, default=None, help="finetune on the first N examples")
    parser.add_argument(
        "--val-examples", type=int, default=None, help="pick checkpoints on the first N val examples"
    )
    parser.add_argument(
        "--pretrain-override", action="append", default=[], help="a launch.py override for the pretraining"
    )
    parser.add_argument(
        "--finetune-override", action="append", default=[], help="a launch.py override for every finetune"
    )
    parser.add_argument("--pretrained-run", type=Path, default=None, help="reuse this pretraining run folder")
    parser.add_argument("--no-scratch", action="store_true", help="no finetunes from random initialisation")
    parser.add_argument(
        "--runs", type=Path, default=None, help="where the runs go (default: a temporary folder)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--tiny", action="store_true", help="seconds: generated data, a few steps")
    options = parser.parse_args()
    interval = options.val_every
    if options.tiny:
        options.minutes, options.architecture, interval = 0.05, "bert_tiny", 10
    workdir = Path(options.runs or tempfile.mkdtemp(prefix="bertlab-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = options.dataset or write_tiny_dataset(workdir / "tiny_dataset")
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "corpus.txt"):
        if not (dataset / name).is_file():
            parser.error(
                f"{dataset / name} does not exist; the folder needs train/val/test.jsonl and corpus.txt"
            )
    problem_type, shape_overrides = task_shape(dataset)
    train = subset(dataset, "train", options.train_examples, workdir)
    val = subset(dataset, "val", options.val_examples, workdir)

    if options.pretrained_run is None:
        pretrained_run, budget, pretrain_seconds = pretrain(workdir, dataset, options, interval)
    else:
        pretrained_run, budget = reused_run(options.pretrained_run, workdir)
        pretrain_seconds = (budget["minutes_spent"] or 0.0) * 60
        chosen = _architecture_choice(pretrained_run)
        if chosen != options.architecture:
            parser.error(f"{pretrained_run} is {chosen}; pass --architecture {chosen} (the from-scratch arm)")
    curve = [
        {"step": int(row["step"]), "loss": float(row["loss"]), "accuracy": float(row["accuracy"])}
        for row in last_rows(pretrained_run, "val")
    ]
    print(
        f"pretraining: budget {budget['minutes']} min -> {budget['steps']} steps, "
        f"{budget['minutes_spent']} min by its clock ({pretrain_seconds / 60:.2f} min launch to exit)"
    )
    for point in curve:
        print(
            f"  step {point['step']:>6}  val loss {point['loss']:.3f}  masked accuracy {point['accuracy']:.3f}"
        )

    seeds = range(options.seeds)
    starts = {
        "pretrained": [f"pretrained_experiment.name={pretrained_run.name}"],
    }
    if not options.no_scratch:
        starts["scratch"] = ["pretrained_experiment=none", f"architecture={options.architecture}"]
    runs = {
        start: [
            finetune(
                workdir,
                f"{start}_{seed}",
                dataset,
                train,
                val,
                seed,
                [*source, *shape_overrides, *options.finetune_override],
                options.tiny,
            )
            for seed in seeds
        ]
        for start, source in starts.items()
    }
    baseline = runs["pretrained"][0]["baseline"]
    figures = SHAPES[problem_type]
    rows = {
        "baseline (TF-IDF + LR)": {
            **{name: {"median": baseline[f"test/{name}"]} for name in figures},
            "minutes": baseline["seconds"] / 60,
        },
    }
    if "scratch" in runs:
        rows["from scratch"] = {
            **{name: summarise(runs["scratch"], f"test/{name}") for name in figures},
            "minutes": statistics.median(run["seconds"] for run in runs["scratch"]) / 60,
        }
    rows["pretrained"] = {
        **{name: summarise(runs["pretrained"], f"test/{name}") for name in figures},
        "minutes": (pretrain_seconds + statistics.median(r["seconds"] for r in runs["pretrained"])) / 60,
    }

    def cell(figures: dict[str, float]) -> str:
        spread = (
            f" ({figures['min']:.3f}-{figures['max']:.3f})" if len(seeds) > 1 and "min" in figures else ""
        )
        return f"{figures['median']:.3f}{spread}"

    examples = f", finetuned on {options.train_examples} examples" if options.train_examples else ""
    print(
        f"\n{dataset.name} ({problem_type}): {options.architecture}, pretraining budget {budget['minutes']} min"
        f"{examples}, {len(seeds)} seed(s)"
    )
    print_table(
        ["start", *[f"test {name}" for name in figures[:2]], "minutes"],
        [[name, *[cell(row[f]) for f in figures[:2]], f"{row['minutes']:.1f}"] for name, row in rows.items()],
    )
    write_json(
        options.output,
        {
            "benchmark": "quality",
            "machine": machine(),
            "dataset": str(dataset),
            "architecture": options.architecture,
            "problem_type": problem_type,
            "minutes": budget["minutes"],
            "train_examples": options.train_examples,
            "val_examples": options.val_examples,
            "pretrain_overrides": options.pretrain_override,
            "finetune_overrides": options.finetune_override,
            "pretraining": {
                **budget,
                "run": str(pretrained_run),
                "launch_seconds": pretrain_seconds,
                "val": curve,
            },
            "rows": rows,
            "runs": runs,
            "run_folders": str(workdir),
        },
    )


if __name__ == "__main__":
    main()
