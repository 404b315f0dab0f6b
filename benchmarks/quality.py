"""Did pretraining help? Baseline / from scratch / pretrained, on a real labelled set, within a time budget.

The dataset folder holds train.jsonl, val.jsonl, test.jsonl ({"text", "label"} per line, plus "text_pair"
for pairs) and corpus.txt (unlabelled text of the same domain, one document per line), as
../shared/tools/make_devsets.py builds them. The task's shape comes from its first training record: a
"text_pair" field (pairs), a list label (multi-label), a number (regression), else single label; the
table reports that shape's figures (accuracy and macro-F1; micro- and macro-F1; Spearman and RMSE).
Everything runs through launch.py, as a user would run it:

1. pretraining on corpus.txt with a time budget of --minutes (training.budget.minutes: the schedule ends
   when the time does),
2. a suite of one task (the devset), written to <runs>/suite_conf/suite/quality.yaml and run with
   `launch.py -m +experiment=suite suite=quality suite.starts=[run:pretrained,scratch]`: a finetune from the
   pretraining's best checkpoint and one of the same architecture from random initialisation, for every seed
   (--seeds N). The figures are the suite's (suite.csv: median and range over seeds), so the suite command
   reproduces them; a rerun with the same --runs folder skips the finetunes that finished,
3. the TF-IDF + logistic-regression baseline, which every finetune computes on the same split.

    python benchmarks/quality.py devsets/healthtweets --minutes 15 --seeds 3
    python benchmarks/quality.py devsets/debian_sections --minutes 3 --train-examples 2000 \
        --pretrain-override mlm_head.masking.unit=word          # one arm of an ablation
    python benchmarks/quality.py --tiny            # seconds: generated data, a few steps (checks the script)

--train-examples N finetunes on the first N training examples (the devsets are in random order; the suite
task's train_examples), and --val-examples N picks its best checkpoint on the first N validation examples;
the test split is always whole; --pretrained-run reuses a finished pretraining run folder instead of pretraining;
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

from bertlab.suite.starts import parse_start

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


def task_shape(dataset: Path) -> tuple[str, bool]:
    """The problem type of a devset and whether its records are text pairs, from its first record."""
    with (dataset / "train.jsonl").open() as handle:
        record = json.loads(handle.readline())
    label = record["label"]
    if isinstance(label, list):
        problem_type = "multi_label_classification"
    elif isinstance(label, float):  # an integer label is a class, as bertlab reads it
        problem_type = "regression"
    else:
        problem_type = "single_label_classification"
    return problem_type, "text_pair" in record


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


SUITE = "quality"
TINY_FINETUNE = [
    "training.max_epochs=1",
    "training.min_steps=null",
    "training.batch_size=16",
    "tokenizer.max_length=48",
]


def write_suite(conf: Path, dataset: Path, options: argparse.Namespace) -> tuple[Path, str, str]:
    """<conf>/suite/quality.yaml: the devset as the one task of a suite (a suite file of the user's form;
    JSON is YAML), with the seeds and finetuning overrides asked. Returns it, the task's name and shape."""
    problem_type, pairs = task_shape(dataset)
    name = "".join(c if c.isalnum() or c in "_.+-" else "_" for c in dataset.resolve().name)
    task: dict[str, Any] = {
        "data": {split: str((dataset / f"{split}.jsonl").resolve()) for split in ("train", "val", "test")},
        "problem_type": problem_type,
    }
    if pairs:
        task["text_pair_field"] = "text_pair"
    if options.train_examples:
        task["train_examples"] = options.train_examples
    if options.val_examples:
        task["val_examples"] = options.val_examples
    suite = {
        "description": f"benchmarks/quality.py on {dataset.name}",
        "seeds": list(range(options.seeds)),
        "scratch_architecture": options.architecture,
        "overrides": [
            "logging.progress_bar=false",
            *(TINY_FINETUNE if options.tiny else []),
            *options.finetune_override,
        ],
        "tasks": {name: task},
    }
    path = conf / "suite" / f"{SUITE}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2) + "\n")
    return path, name, problem_type


def finetune_suite(workdir: Path, conf: Path, starts: dict[str, str]) -> float:
    """Every finetune of the suite, one launch (`-m +experiment=suite`); returns its wall-clock seconds.
    `starts`: the table's row name -> the suite start."""
    started = time.perf_counter()
    launch(
        [
            "-m",
            "+experiment=suite",
            f"suite={SUITE}",
            f"hydra.searchpath=[file://{conf.resolve()}]",
            f"suite.starts=[{','.join(starts.values())}]",
        ],
        workdir,
        timeout=24 * 3600,
    )
    return time.perf_counter() - started


def suite_rows(suite_dir: Path, task: str) -> dict[tuple[str, str], dict[str, str]]:
    """The suite's table (suite.csv) for `task`: (metric, start label) -> its row."""
    with (suite_dir / "suite.csv").open(newline="") as handle:
        return {(row["metric"], row["start"]): row for row in csv.DictReader(handle) if row["task"] == task}


def job_runs(suite_dir: Path, label: str, task: str, seeds: range) -> list[dict[str, Any]]:
    """Each seed's results.json of one start, with the seconds its finetune took (from its folder's config,
    written as the job started, to its results)."""
    runs = []
    for seed in seeds:
        folder = suite_dir / label / task / f"seed{seed}"
        results = folder / "results.json"
        seconds = results.stat().st_mtime - (folder / ".hydra" / "config.yaml").stat().st_mtime
        runs.append({"seed": seed, "seconds": seconds, **json.loads(results.read_text())})
    return runs


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
    suite_file, task, problem_type = write_suite(workdir / "suite_conf", dataset, options)

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
    starts = {"pretrained": f"run:{pretrained_run.name}"}  # table row -> suite start
    if not options.no_scratch:
        starts["from scratch"] = f"scratch:{options.architecture}"
    finetune_seconds = finetune_suite(workdir, suite_file.parent.parent, starts)
    suite_dir = workdir / "suites" / SUITE
    labels = {row: parse_start(start, options.architecture).label for row, start in starts.items()}
    runs = {row: job_runs(suite_dir, label, task, seeds) for row, label in labels.items()}
    table = suite_rows(suite_dir, task)
    figures = SHAPES[problem_type]

    def figures_of(label: str) -> dict[str, dict[str, float]]:
        """The suite's median and range (suite.csv) of each figure, and their spread over the seeds."""
        return {
            name: {
                **{key: float(table[name, label][key]) for key in ("median", "min", "max")},
                "stdev": statistics.stdev(values)
                if len(values := [r[f"test/{name}"] for r in runs_of(label)]) > 1
                else 0.0,
            }
            for name in figures
        }

    def runs_of(label: str) -> list[dict[str, Any]]:
        return next(runs[row] for row, found in labels.items() if found == label)

    baseline = runs["pretrained"][0]["baseline"]
    rows = {
        "baseline (TF-IDF + LR)": {
            **{name: {"median": float(table[name, labels["pretrained"]]["baseline"])} for name in figures},
            "minutes": baseline["seconds"] / 60,
        },
    }
    if "from scratch" in runs:
        rows["from scratch"] = {
            **figures_of(labels["from scratch"]),
            "minutes": statistics.median(run["seconds"] for run in runs["from scratch"]) / 60,
        }
    rows["pretrained"] = {
        **figures_of(labels["pretrained"]),
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
            "suite": {
                "file": str(suite_file),
                "folder": str(suite_dir),
                "starts": starts,
                "launch_seconds": finetune_seconds,
            },
            "run_folders": str(workdir),
        },
    )


if __name__ == "__main__":
    main()
