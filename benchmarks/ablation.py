"""Which parts of the small-budget recipe help? One quality.py run per (devset, arm) at equal minutes.

Every arm pretrains with the same time budget (training.budget.minutes), then finetunes from its best
checkpoint on the same labelled examples; the random-initialisation finetune runs once per devset (it does
not depend on the pretraining). Results are kept per arm (results/ablation/<devset>/<arm>.seed<N>.json), so
an interrupted ablation continues where it stopped; the table gives each arm's median test accuracy over
seeds and its difference to the defaults, per devset.

    python benchmarks/ablation.py devsets/healthtweets devsets/debian_sections --minutes 3 \\
        --train-examples 2000 --seeds 1
    python benchmarks/ablation.py --tiny          # seconds: generated data (checks the script)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
from common import RESULTS, check_finished, machine, print_table, write_json

HERE = Path(__file__).resolve().parent

# The components issue 21 asks about, each alone against today's defaults.
ARMS: dict[str, list[str]] = {
    "defaults": [],
    "wsd": ["training/scheduler=wsd"],
    "triangle": ["training/scheduler=triangle"],
    "whole-word": ["mlm_head.masking.unit=word"],
    "span": ["mlm_head.masking.unit=span"],
    "rate 0.3->0.15": ["mlm_head.masking.probability=0.3", "mlm_head.masking.final_probability=0.15"],
    "document packing": ["data.packing=documents"],
}


def arm_result(
    folder: Path, dataset: Path, arm: str, seed: int, options: argparse.Namespace
) -> dict[str, Any]:
    """The quality.py result of one arm and pretraining seed, run now unless it is already on disk."""
    name = arm.replace(" ", "_").replace(">", "").replace("/", "_")
    output = folder / dataset.name / f"{name}.seed{seed}.json"
    if output.is_file():  # an earlier run of this ablation: only if it measured the same thing
        kept = json.loads(output.read_text())
        asked = {
            "minutes": options.minutes,
            "architecture": options.architecture,
            "train_examples": options.train_examples,
            "val_examples": options.val_examples,
        }
        found = {key: kept.get(key) for key in asked}
        if found != asked:
            raise SystemExit(
                f"{output} was measured with {found}, not {asked}; give another --results folder"
            )
        return kept
    command = [
        sys.executable,
        str(HERE / "quality.py"),
        *([str(dataset)] if not options.tiny else ["--tiny"]),
        "--minutes",
        str(options.minutes),
        "--architecture",
        options.architecture,
        "--output",
        str(output),
        "--runs",
        str(options.runs / dataset.name / f"{name}.seed{seed}"),
        *(["--train-examples", str(options.train_examples)] if options.train_examples else []),
        *(["--val-examples", str(options.val_examples)] if options.val_examples else []),
        *([] if arm == "defaults" and seed == 0 else ["--no-scratch"]),
        "--pretrain-override",
        f"experiment.seed={seed}",
        *[flag for override in ARMS[arm] for flag in ("--pretrain-override", override)],
    ]
    print(f"[{dataset.name}] {arm}, seed {seed}", flush=True)
    result = subprocess.run(command, capture_output=not options.verbose, text=True)
    check_finished(result, command[2:], program="quality.py")
    return json.loads(output.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="*", type=Path, help="devset folders (make_devsets.py)")
    parser.add_argument("--minutes", type=float, default=3.0, help="pretraining budget of every arm")
    parser.add_argument("--seeds", type=int, default=1, help="pretraining seeds per arm")
    parser.add_argument("--train-examples", type=int, default=2000, help="finetune on the first N (0: all)")
    parser.add_argument("--val-examples", type=int, default=2000, help="checkpoint choice on N (0: all)")
    parser.add_argument("--architecture", default="bert_mini")
    parser.add_argument("--arms", nargs="*", default=[a for a in ARMS if a != "triangle"], choices=list(ARMS))
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS / "ablation", help="per-arm JSON folder")
    parser.add_argument("--output", type=Path, default=RESULTS / "ablation.json")
    parser.add_argument("--tiny", action="store_true", help="seconds: generated data")
    parser.add_argument("--verbose", action="store_true", help="show every run's output")
    options = parser.parse_args()
    if options.tiny:
        options.datasets, options.arms = [Path("tiny_dataset")], ["defaults", "whole-word"]
        options.train_examples, options.minutes, options.architecture = 0, 0.05, "bert_tiny"
        options.val_examples = 0
        options.results = Path(tempfile.mkdtemp(prefix="bertlab-ablation-tiny-"))
    if not options.datasets:
        parser.error("name at least one devset folder (or --tiny)")
    options.train_examples = options.train_examples or None
    options.val_examples = options.val_examples or None
    options.runs = options.runs or Path(tempfile.mkdtemp(prefix="bertlab-ablation-"))

    table: dict[str, dict[str, Any]] = {}
    for arm in options.arms:  # arm by arm: a stopped ablation has compared arms on every devset
        for dataset in options.datasets:
            results = [
                arm_result(options.results, dataset, arm, seed, options) for seed in range(options.seeds)
            ]
            accuracies = [r["rows"]["pretrained"]["accuracy"]["median"] for r in results]
            table.setdefault(arm, {})[dataset.name] = {
                "accuracy": statistics.median(accuracies),
                "min": min(accuracies),
                "max": max(accuracies),
                "steps": statistics.median(r["pretraining"]["steps"] for r in results),
                "minutes_spent": max(r["pretraining"]["minutes_spent"] for r in results),
            }
            if "from scratch" in results[0]["rows"]:
                table.setdefault("from scratch", {})[dataset.name] = {
                    "accuracy": results[0]["rows"]["from scratch"]["accuracy"]["median"]
                }
                table.setdefault("TF-IDF + LR", {})[dataset.name] = {
                    "accuracy": results[0]["rows"]["baseline (TF-IDF + LR)"]["accuracy"]["median"]
                }

    names = [d.name for d in options.datasets]

    def cell(arm: str, name: str) -> str:
        entry = table.get(arm, {}).get(name)
        if entry is None:
            return "-"
        text = f"{entry['accuracy']:.3f}"
        if options.seeds > 1 and "min" in entry:
            text += f" ({entry['min']:.3f}-{entry['max']:.3f})"
        base = table.get("defaults", {}).get(name)
        if base is not None and arm != "defaults":
            text += f" ({entry['accuracy'] - base['accuracy']:+.3f})"
        if "steps" in entry:
            text += f", {entry['steps']:.0f} steps in {entry['minutes_spent']:.2f} min"
        return text

    examples = options.train_examples or "all"
    print(
        f"\nTest accuracy after {options.minutes:g} min of pretraining ({options.architecture}) and a finetune "
        f"on {examples} labelled examples; median of {options.seeds} pretraining seed(s); (difference to defaults)"
    )
    print_table(["arm", *names], [[arm, *(cell(arm, n) for n in names)] for arm in table])
    write_json(
        options.output,
        {
            "benchmark": "ablation",
            "machine": machine(),
            "minutes": options.minutes,
            "seeds": options.seeds,
            "train_examples": options.train_examples,
            "architecture": options.architecture,
            "arms": {arm: ARMS.get(arm, []) for arm in table},
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
