"""Is bertlab-predict faster than transformers' pipeline on the same model, and flat in memory?

1. Finetunes a classifier (`+experiment=finetune pretrained_experiment=none`, `architecture=<--architecture>`,
   a few steps: speed does not depend on training) and exports it with `bertlab-export --to hf`.
2. Writes N texts (generated visit reports and corpus documents: short and long, max_length 128), one per line.
3. Times, in this process, on the same threads, one run each after a warm-up:
   - bertlab: `bertlab.predict.predict(run, [texts.txt], out.csv)` (reads the file, writes the csv);
   - Hugging Face: `pipeline("text-classification", model=<exported folder>, batch_size=B, truncation=True)`
     over the same texts already in memory (nothing read or written).
   ratio = bertlab texts/s / pipeline texts/s.
4. Runs `python -m bertlab.predict` on 10k and on 1M input lines (visit reports only, so that 1M lines
   take minutes), each in a fresh wrapper process that reads its child's peak RSS (getrusage).

Targets: ratio >= 1.5 on a CPU; peak RSS at 1M lines within 10 % of 10k's.

    python benchmarks/predict_throughput.py            # bert_tiny, 20k texts timed; RSS at 10k and 1M lines
    python benchmarks/predict_throughput.py --architecture bert_mini --skip-rss   # a wider model, speed only
    python benchmarks/predict_throughput.py --tiny     # 1k texts; RSS at 1k and 10k lines
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, launch, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "predict_throughput.json"
PEAK_RSS = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(json.dumps({"code": code, "peak_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def write_texts(path: Path, count: int, documents: bool = True) -> None:
    """`count` lines: visit reports (a sentence or two) and, with `documents`, corpus documents (a
    paragraph) shuffled among them."""
    from bertlab.data.embedded_corpus import generate_documents, generate_reviews

    block = [text for text, _ in generate_reviews(2000, seed=1)]
    block += generate_documents(500, seed=1) if documents else []
    block = [" ".join(text.split()) for text in block]
    import random

    random.Random(0).shuffle(block)
    with path.open("w", encoding="utf-8") as handle:
        written = 0
        while written < count:
            part = block[: count - written]
            handle.write("\n".join(part) + "\n")
            written += len(part)


def finetuned_run(folder: Path, architecture: str) -> Path:
    launch(
        [
            "+experiment=finetune",
            "experiment.name=predict_bench",
            "pretrained_experiment=none",
            f"architecture={architecture}",
            "training.max_steps=10",
            "training.baseline=false",
            "data.source.count=600",
            "tokenizer.max_length=128",
        ],
        folder,
    )
    return folder / "finetuning" / "predict_bench"


def throughput(run_dir: Path, exported: Path, texts_file: Path, batch_size: int, folder: Path) -> dict:
    import torch
    from transformers import pipeline

    from bertlab.predict import predict

    texts = texts_file.read_text(encoding="utf-8").splitlines()
    classify = pipeline(
        "text-classification", model=str(exported), device="cpu", batch_size=batch_size, truncation=True
    )
    warm = folder / "warm.txt"
    warm.write_text("\n".join(texts[:256]) + "\n")
    predict(run_dir, [warm], folder / "warm.csv", batch_size=batch_size, progress=False, overwrite=True)
    classify(texts[:256])

    start = time.perf_counter()
    summary = predict(run_dir, [texts_file], folder / "bertlab.csv", batch_size=batch_size, progress=False)
    bertlab_s = time.perf_counter() - start
    start = time.perf_counter()
    results = classify(texts)
    pipeline_s = time.perf_counter() - start
    ours = [row.split(",")[2] for row in (folder / "bertlab.csv").read_text().splitlines()[1:]]
    agree = sum(a == b["label"] for a, b in zip(ours, results, strict=True)) / len(texts)
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "bertlab_seconds": round(bertlab_s, 2),
        "pipeline_seconds": round(pipeline_s, 2),
        "bertlab_texts_per_s": round(summary.records / bertlab_s, 1),
        "pipeline_texts_per_s": round(len(texts) / pipeline_s, 1),
        "ratio": round(pipeline_s / bertlab_s, 2),
        "labels_agree": round(agree, 4),
    }


def peak_rss(run_dir: Path, texts_file: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "bertlab.predict", str(run_dir), "--data", str(texts_file)]
    command += ["--out", str(out), "--no-progress", "--overwrite"]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True, cwd=ROOT, check=False
    )
    seconds = time.perf_counter() - start
    record = json.loads(result.stdout.strip().splitlines()[-1])
    if record["code"] != 0:
        raise RuntimeError(f"bertlab.predict failed: {result.stderr[-2000:]}")
    lines = sum(1 for _ in texts_file.open("rb"))
    return {
        "lines": lines,
        "peak_rss_mb": round(record["peak_rss_kb"] / 1024, 1),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="seconds-long check (tests)")
    parser.add_argument("--architecture", default="bert_tiny", help="the classifier's (default bert_tiny)")
    parser.add_argument(
        "--texts", type=int, default=None, help="texts timed (default 20000, 1000 with --tiny)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-rss", action="store_true", help="only the throughput comparison")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    architecture = args.architecture
    count = args.texts or (1000 if args.tiny else 20000)
    small, large = (1000, 10000) if args.tiny else (10_000, 1_000_000)

    with tempfile.TemporaryDirectory(prefix="predict_bench_") as tmp:
        folder = Path(tmp)
        run_dir = finetuned_run(folder / "runs", architecture)
        exported = folder / "hf"
        subprocess.run(
            [sys.executable, "-m", "bertlab.export", str(run_dir), "--to", "hf", str(exported)],
            check=True,
            cwd=ROOT,
            capture_output=True,
        )
        texts_file = folder / "texts.txt"
        write_texts(texts_file, count)
        result = throughput(run_dir, exported, texts_file, args.batch_size, folder)
        rss = {}
        if not args.skip_rss:
            for name, lines in (("small", small), ("large", large)):
                path = folder / f"{name}.txt"
                write_texts(path, lines, documents=False)  # short lines: 1M of them in minutes
                rss[name] = peak_rss(run_dir, path, folder / f"{name}.csv")
                path.unlink()

    growth = round(rss["large"]["peak_rss_mb"] / rss["small"]["peak_rss_mb"] - 1, 4) if rss else None
    payload = {
        "benchmark": "predict_throughput",
        "machine": machine(),
        "architecture": architecture,
        "throughput": result,
        "target_ratio": 1.5,
        "rss": rss,
        "rss_growth": growth,
        "target_growth": 0.1,
    }
    write_json(args.output, payload)
    print_table(
        ["arm", "texts", "seconds", "texts/s"],
        [
            [
                "bertlab predict (file -> csv)",
                result["texts"],
                result["bertlab_seconds"],
                result["bertlab_texts_per_s"],
            ],
            [
                "transformers pipeline (in memory)",
                result["texts"],
                result["pipeline_seconds"],
                result["pipeline_texts_per_s"],
            ],
        ],
    )
    print(
        f"ratio bertlab/pipeline: {result['ratio']}x (target >= 1.5); labels agree on {result['labels_agree']:.2%}"
    )
    if rss:
        print_table(
            ["input lines", "peak RSS (MB)", "seconds"],
            [[r["lines"], r["peak_rss_mb"], r["seconds"]] for r in rss.values()],
        )
        print(f"peak RSS growth {small:,} -> {large:,} lines: {growth:+.1%} (target within 10 %)")
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
