"""Does preparing a corpus stay within bounded memory as it grows 10x, and run at the tokenizer's speed?

1. Writes a 1x text corpus (one generated document per line, like the embedded corpus) and a 10x one
   (the 1x text ten times over, streamed).
2. Trains the tokenizer once on a sample of the 1x corpus (tokenizer.json).
3. Prepares each corpus with `python launch.py +experiment=prepare data=text data.source.train=<file>
   tokenizer.vocab_source=<tokenizer.json>` in its own wrapper process that records its peak RSS
   (getrusage of the children: the launch and its worker processes' largest).
4. Times bare `tokenizers` encode_batch (its Rust threads on every core) over the same 1x text, read in
   the same 4 MiB batches, right before and right after the 1x preparation, and divides: ratio = mean
   bare encode seconds / bertlab preparation seconds (the preparation's own timing from its log:
   reading, splitting, encoding, writing, bookkeeping; not the launch's start-up).

Targets: peak RSS grows < 10 % from 1x to 10x and stays < 2 GB; ratio >= 0.8.

    python benchmarks/prepare_throughput.py                 # 250 MB and 2.5 GB: about 20 minutes on 2 cores
    python benchmarks/prepare_throughput.py --mb 10         # 10 MB and 100 MB
    python benchmarks/prepare_throughput.py --tiny          # 1 MB and 10 MB, for tests
    python benchmarks/prepare_throughput.py --ratio-only    # the 1x preparation against bare encoding only
    python benchmarks/prepare_throughput.py --corpus my.txt # a given corpus as the 1x
    python benchmarks/prepare_throughput.py --long-line 20 200   # one line of 20 MB, one of 200 MB
                                                            # (no newline at all): peak RSS of preparing each
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, print_table, write_json
from dataset_memory import peak_rss_of_runs

DEFAULT_OUTPUT = RESULTS / "prepare_throughput.json"
BATCH_BYTES = 4 << 20


def write_generated(path: Path, megabytes: float, separator: str = "\n") -> None:
    """`megabytes` MB of generated documents, one per line; with separator " " one line with no newline."""
    from bertlab.data.embedded_corpus import generate_documents

    with path.open("w", encoding="utf-8") as handle:
        seed = 0
        while handle.tell() < megabytes * 1e6:
            handle.write(
                separator.join(generate_documents(20000 if megabytes >= 20 else 2000, seed)) + separator
            )
            seed += 1


def write_nx(source: Path, path: Path, factor: int) -> None:
    with path.open("wb") as out:
        for _ in range(factor):
            with source.open("rb") as handle:
                shutil.copyfileobj(handle, out, 16 << 20)


def bare_encode_seconds(corpus: Path, tokenizer_file: Path) -> tuple[float, int]:
    """encode_batch alone over the corpus's non-empty lines, in 4 MiB batches; (seconds, tokens)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    seconds, tokens = 0.0, 0
    with corpus.open("rb") as handle:
        while block := handle.read(BATCH_BYTES):
            block += handle.readline()
            lines = [line for line in block.decode("utf-8").split("\n") if line.strip()]
            start = time.perf_counter()
            encoded = tokenizer.encode_batch(lines, add_special_tokens=False)
            seconds += time.perf_counter() - start
            tokens += sum(len(e.ids) for e in encoded)
    return seconds, tokens


def long_lines(sizes: list[float], work: Path, output: Path) -> None:
    """Peak RSS of preparing single lines of `sizes` MB (the tokenizer trained on them, as by default)."""
    runs, files = {}, {}
    for mb in sizes:
        name = f"line_{mb:g}mb"
        files[name] = work / f"{name}.txt"
        if not files[name].is_file():
            write_generated(files[name], mb, separator=" ")
        runs[name] = ["+experiment=prepare", f"experiment.name={name}", f"data.source.train={files[name]}"]
    rss = peak_rss_of_runs(runs, work / "runs", parallel=False)
    results = {}
    for name in runs:
        run_dir = work / "runs" / "preparation" / name
        manifest = json.loads((run_dir / "manifest.json").read_text())
        results[name] = {
            "text_mb": round(files[name].stat().st_size / 1e6, 1),
            "documents": sum(s["documents"] for s in manifest["splits"].values()),
            "tokens": {split: s["tokens"] for split, s in manifest["splits"].items()},
            "preparation_seconds": logged_preparation_seconds(run_dir),
            **rss[name],
        }
    print_table(
        ["line", "text MB", "pieces", "train/val/test tokens", "preparation s", "peak RSS MB"],
        [
            [
                n,
                r["text_mb"],
                r["documents"],
                "/".join(f"{t:,}" for t in r["tokens"].values()),
                r["preparation_seconds"],
                r["peak_rss_mb"],
            ]
            for n, r in results.items()
        ],
    )
    write_json(
        output, {"benchmark": "prepare_long_lines", "machine": machine(), "runs": results, "work": str(work)}
    )


def logged_preparation_seconds(run_dir: Path) -> float:
    match = re.search(
        r"Prepared [\d,]+ tokens in \d+ shard\(s\) in ([\d.]+) s", (run_dir / "run.log").read_text()
    )
    if match is None:
        raise RuntimeError(f"no preparation summary in {run_dir / 'run.log'}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=250.0, help="size of the generated 1x corpus (MB)")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--corpus", type=Path, default=None, help="a .txt corpus to use as the 1x instead")
    parser.add_argument("--work", type=Path, default=None, help="folder for the corpora and runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--tiny", action="store_true", help="1 MB and 10 MB: seconds, for tests")
    parser.add_argument("--ratio-only", action="store_true", help="only the 1x preparation and the ratio")
    parser.add_argument(
        "--long-line", type=float, nargs="+", default=None, metavar="MB", help="single lines of these sizes"
    )
    args = parser.parse_args(argv)
    if args.long_line:
        work = args.work or Path(tempfile.mkdtemp(prefix="prepare_long_lines_"))
        work.mkdir(parents=True, exist_ok=True)
        output = args.output if args.output != DEFAULT_OUTPUT else RESULTS / "prepare_long_lines.json"
        long_lines(args.long_line, work, output)
        return
    if args.tiny:
        args.mb = 1.0
    work = args.work or Path(tempfile.mkdtemp(prefix="prepare_throughput_"))
    work.mkdir(parents=True, exist_ok=True)
    one = args.corpus or work / "corpus_1x.txt"
    if args.corpus is None and not one.is_file():
        write_generated(one, args.mb)
    big = work / f"corpus_{args.factor}x.txt"
    if not big.is_file() and not args.ratio_only:
        write_nx(one, big, args.factor)

    from bertlab.tokenizer import WordPieceTokenizer

    tokenizer_file = work / "tokenizer.json"
    tokenizer = WordPieceTokenizer(train_sample_bytes=50_000_000)
    with one.open(encoding="utf-8") as handle:
        tokenizer.fit(line.strip() for line in handle if line.strip())
    tokenizer.save(tokenizer_file)

    corpora = {"1x": one} if args.ratio_only else {"1x": one, f"{args.factor}x": big}
    runs = {
        name: [
            "+experiment=prepare",
            f"experiment.name={name}",
            f"data.source.train={corpus}",
            f"tokenizer.vocab_source={tokenizer_file}",
        ]
        for name, corpus in corpora.items()
    }
    # The bare encoding runs right before and right after the 1x preparation, and the ratio takes their
    # mean: on a shared machine the load changes over minutes, and this way both see about the same.
    before, bare_tokens = bare_encode_seconds(one, tokenizer_file)
    rss = peak_rss_of_runs({"1x": runs["1x"]}, work / "runs", parallel=False)
    after, _ = bare_encode_seconds(one, tokenizer_file)
    bare_seconds = (before + after) / 2
    if not args.ratio_only:
        rss.update(
            peak_rss_of_runs({k: v for k, v in runs.items() if k != "1x"}, work / "runs", parallel=False)
        )
    results = {}
    for name, corpus in corpora.items():
        run_dir = work / "runs" / "preparation" / name
        manifest = json.loads((run_dir / "manifest.json").read_text())
        results[name] = {
            "text_mb": round(corpus.stat().st_size / 1e6, 1),
            "tokens": sum(s["tokens"] for s in manifest["splits"].values()),
            "preparation_seconds": logged_preparation_seconds(run_dir),
            **rss[name],
        }
    first, last = results["1x"], results.get(f"{args.factor}x", results["1x"])
    growth = last["peak_rss_mb"] / first["peak_rss_mb"] - 1
    ratio = bare_seconds / first["preparation_seconds"]
    print_table(
        ["corpus", "text MB", "tokens", "preparation s", "launch s", "peak RSS MB"],
        [
            [n, r["text_mb"], f"{r['tokens']:,}", r["preparation_seconds"], r["seconds"], r["peak_rss_mb"]]
            for n, r in results.items()
        ],
    )
    if not args.ratio_only:
        print(f"peak RSS growth 1x -> {args.factor}x: {100 * growth:+.1f} % (target < 10 %, and < 2048 MB)")
    print(
        f"bare encode_batch over the 1x text: {bare_seconds:.0f} s (before {before:.0f} s, after {after:.0f} s; "
        f"{bare_tokens:,} tokens); "
        f"ratio to bertlab's preparation: {ratio:.2f} (target >= 0.8)"
    )
    write_json(
        args.output,
        {
            "benchmark": "prepare_throughput",
            "machine": machine(),
            "runs": results,
            "rss_growth": round(growth, 4),
            "target_growth": 0.10,
            "target_peak_rss_mb": 2048,
            "target_ratio": 0.8,
            "bare_encode_seconds": round(bare_seconds, 1),
            "bare_encode_seconds_before_after": [round(before, 1), round(after, 1)],
            "ratio_to_bare_encode": round(ratio, 3),
            "work": str(work),
        },
    )
    if args.tiny and args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
