"""Does a run's memory stay flat when its prepared corpus grows 10x? And how fast is text prepared?

1. Writes two text corpora (one document per line, generated like the embedded corpus): 1x and 10x.
2. Trains the tokenizer once (on the 1x corpus) and prepares both corpora into token stores with
   bertlab's MLMDataModule.prepare (read, split, tokenize with encode_batch, save): MB/s of text.
3. Runs launch.py (data=text, data.prepared=<the folder>, tokenizer.vocab_source=<the tokenizer>) on each
   size and measures the run's peak RSS: each run is started by a fresh wrapper process that reports
   resource.getrusage(RUSAGE_CHILDREN).ru_maxrss, so no measurement sees another's peak.

Two run modes:
- `prepared`: data.source.train points at a stub file: what the memory-mapped token store costs.
- `source`: data.source.train points at the full text file, as a user would leave it; the run still reads
  the documents (pretraining reads data.source before it knows the prepared folder makes them unneeded).

Target: peak RSS grows by under 10 % from 1x to 10x.

    python benchmarks/dataset_memory.py            # about 3 minutes on 2 cores
    python benchmarks/dataset_memory.py --tiny     # seconds, for tests (prepared mode only)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    ROOT,
    check_finished,
    launch_argv,
    launch_env,
    machine,
    print_table,
    write_json,
)

DEFAULT_OUTPUT = RESULTS / "dataset_memory.json"
TARGET_GROWTH = 0.10
MODES = ("prepared", "source")

# Runs the command in argv[2:] and writes its peak RSS: getrusage(RUSAGE_CHILDREN) of this fresh wrapper
# covers that command only. It also samples the command's anonymous and file-backed RSS (/proc, every
# 50 ms): memory-mapped store pages a run has touched count as file-backed RSS (clean page cache the
# kernel can drop), copies in Python or torch as anonymous RSS.
PEAK_RSS_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[2:])
sampled = {"RssAnon": 0, "RssFile": 0}
while child.poll() is None:
    try:
        with open(f"/proc/{child.pid}/status") as status:
            for line in status:
                key = line.split(":")[0]
                if key in sampled:
                    sampled[key] = max(sampled[key], int(line.split()[1]))
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as handle:
    json.dump(
        {
            "returncode": child.returncode,
            "max_rss_kb": peak_kb,
            "sampled_anon_kb": sampled["RssAnon"],
            "sampled_file_kb": sampled["RssFile"],
            "seconds": time.perf_counter() - start,
        },
        handle,
    )
sys.exit(child.returncode)
"""


def compose(overrides: list[str], output_dir: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bertlab.launcher.registration import register as register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(
            config_name="config",
            overrides=["+experiment=pretrain", *overrides, f"experiment.output_dir={output_dir}"],
        )


def write_corpus(path: Path, documents: int, seed: int) -> int:
    """`documents` generated documents, one per line; returns the file's size in bytes."""
    from bertlab.data.embedded_corpus import generate_documents

    path.write_text("\n".join(generate_documents(documents, seed)) + "\n", encoding="utf-8")
    return path.stat().st_size


def prepare(corpus: Path, tokenizer_file: Path, work: Path, encode_only: bool) -> dict[str, Any]:
    """Prepare `corpus` with bertlab's data module (fresh cache): seconds, MB/s, folder and store sizes.

    `encode_only` also times the tokenizer alone (encode_batch over the training documents), wall and CPU
    time: the share of preparation that is tokenization, and whether encode_batch used both cores.
    """
    from hydra.utils import instantiate

    from bertlab.tokenizer import WordPieceTokenizer

    cfg = compose(["data=text", f"data.source.train={corpus}"], work)
    datamodule = instantiate(cfg.data, masking=None, batch_size=cfg.training.batch_size)
    tokenizer = WordPieceTokenizer.from_file(tokenizer_file, cfg.tokenizer.max_length)
    start = time.perf_counter()
    folder = datamodule.prepare(tokenizer)
    seconds = time.perf_counter() - start
    text_mb = corpus.stat().st_size / 1e6
    result = {
        "text_mb": round(text_mb, 2),
        "prepare_seconds": round(seconds, 2),
        "prepare_mb_per_s": round(text_mb / seconds, 2),
        "tokens": json.loads((folder / "manifest.json").read_text())["splits"],
        "store_mb": round(sum(p.stat().st_size for p in folder.rglob("*.bin")) / 1e6, 2),
        "folder": str(folder),
    }
    if encode_only:
        train = list(datamodule.tokenizer_sample())
        train_mb = sum(len(text.encode()) + 1 for text in train) / 1e6
        wall, cpu = time.perf_counter(), time.process_time()
        tokenizer.backend.encode_batch(train, add_special_tokens=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result["encode_batch_only_mb_per_s"] = round(train_mb / wall, 2)
        result["encode_batch_cpu_per_wall"] = round(cpu / wall, 2)
    return result


def peak_rss_of_runs(
    runs: dict[str, list[str]], output_dir: Path, parallel: bool
) -> dict[str, dict[str, Any]]:
    """Peak RSS (MB) of launch.py runs, each measured by its own fresh wrapper process.

    `parallel` starts them all at once (for --tiny: the peaks are per process either way, only their
    durations change); otherwise one after the other, in the order given.
    """
    records = {name: output_dir / f"rss-{name}.json" for name in runs}
    output_dir.mkdir(parents=True, exist_ok=True)

    def start(name: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", PEAK_RSS_WRAPPER, str(records[name])]
        return subprocess.Popen(
            [*command, *launch_argv(runs[name], output_dir)],
            cwd=ROOT,
            env=launch_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(name: str, process: subprocess.Popen[str]) -> None:
        stdout, stderr = process.communicate(timeout=1800)
        check_finished(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), runs[name]
        )

    if parallel:
        processes = {name: start(name) for name in runs}
        for name, process in processes.items():
            finish(name, process)
    else:
        for name in runs:
            finish(name, start(name))
    measured = {name: json.loads(record.read_text()) for name, record in records.items()}
    return {
        name: {
            "peak_rss_mb": round(m["max_rss_kb"] / 1024, 1),
            "sampled_peak_anon_mb": round(m["sampled_anon_kb"] / 1024, 1),
            "sampled_peak_file_mb": round(m["sampled_file_kb"] / 1024, 1),
            "seconds": round(m["seconds"], 1),
        }
        for name, m in measured.items()
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small corpora, 2 steps: seconds, for tests")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--documents", type=int, default=None, help="documents in the 1x corpus (20000)")
    parser.add_argument("--factor", type=int, default=10, help="size of the large corpus, in 1x corpora")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 20)")
    parser.add_argument("--modes", default=None, help="comma-separated prepared, source (tiny: prepared)")
    parser.add_argument(
        "--parallel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the runs at once (tiny: yes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.parallel is None:
        args.parallel = args.tiny
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    documents = args.documents or (300 if args.tiny else 20_000)
    steps = args.steps or (2 if args.tiny else 20)
    modes = [m.strip() for m in (args.modes or ("prepared" if args.tiny else ",".join(MODES))).split(",")]
    if set(modes) - set(MODES):
        raise SystemExit(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {list(MODES)}")
    sizes = {"1x": documents, f"{args.factor}x": documents * args.factor}
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "dataset_memory",
        "machine": machine(),
        "documents": sizes,
        "steps_per_run": steps,
        "target_growth": TARGET_GROWTH,
        "corpora": {},
        "runs": {mode: {} for mode in modes},
    }

    with tempfile.TemporaryDirectory(prefix="bertlab-memory-") as temporary:
        work = Path(temporary)
        stub = work / "stub.txt"
        write_corpus(stub, 20, args.seed + 1)
        corpora = {}
        for name, count in sizes.items():
            corpora[name] = work / f"corpus-{name}.txt"
            write_corpus(corpora[name], count, args.seed)

        # The tokenizer is trained once, on the 1x corpus, so both stores share one vocabulary.
        from hydra.utils import instantiate

        cfg = compose([], work)
        tokenizer = instantiate(cfg.tokenizer)
        tokenizer.fit(corpora["1x"].read_text(encoding="utf-8").splitlines())
        tokenizer_file = work / "tokenizer.json"
        tokenizer.save(tokenizer_file)
        result["vocab_size"] = tokenizer.vocab_size
        for name, corpus in corpora.items():
            result["corpora"][name] = prepare(
                corpus, tokenizer_file, work / f"prepare-{name}", encode_only=name == "1x"
            )

        common_args = [
            "data=text",
            f"tokenizer.vocab_source={tokenizer_file}",
            f"training.max_steps={steps}",
            "logging.log_eval=false",
            f"training.checkpoint.every_n_steps={steps}",
        ]
        runs = {
            f"{mode}-{name}": [
                "+experiment=pretrain",
                *common_args,
                f"data.source.train={stub if mode == 'prepared' else corpus}",
                f"data.prepared={result['corpora'][name]['folder']}",
                f"experiment.name={mode}-{name}",
            ]
            for mode in modes
            for name, corpus in corpora.items()
        }
        measured = peak_rss_of_runs(runs, work / "runs", parallel=args.parallel)
        for mode in modes:
            for name in corpora:
                result["runs"][mode][name] = measured[f"{mode}-{name}"]

    large = f"{args.factor}x"
    for runs in result["runs"].values():
        growth = runs[large]["peak_rss_mb"] / runs["1x"]["peak_rss_mb"] - 1
        runs["growth"] = round(growth, 4)
        runs["target_met"] = growth < TARGET_GROWTH
    result["rss_growth"] = result["runs"][modes[0]]["growth"]
    result["target_met"] = result["runs"][modes[0]]["target_met"]
    result["prepare_mb_per_s"] = result["corpora"][large]["prepare_mb_per_s"]
    result["seconds"] = round(time.perf_counter() - started, 1)
    for entry in result["corpora"].values():
        entry.pop("folder")

    m = result["machine"]
    print(f"\ndataset_memory on {m['cpu']} ({m['cores']} cores), {m['date']}")
    print(f"vocabulary {result['vocab_size']}; {steps} training steps per run (bert_tiny, batch 32 x 128)\n")
    print_table(
        [
            "corpus",
            "documents",
            "text MB",
            "store MB",
            "prepare s",
            "prepare MB/s",
            "encode_batch alone MB/s",
        ],
        [
            [
                name,
                f"{sizes[name]:,}",
                c["text_mb"],
                c["store_mb"],
                c["prepare_seconds"],
                c["prepare_mb_per_s"],
                c.get("encode_batch_only_mb_per_s", ""),
            ]
            for name, c in result["corpora"].items()
        ],
    )
    print()
    print_table(
        [
            "run mode",
            "peak RSS 1x (MB)",
            f"peak RSS {large} (MB)",
            "growth",
            "target < 10 %",
            f"anon / file-backed peak {large} (MB, sampled)",
        ],
        [
            [
                mode,
                runs["1x"]["peak_rss_mb"],
                runs[large]["peak_rss_mb"],
                f"{runs['growth']:+.1%}",
                "met" if runs["target_met"] else "MISSED",
                f"{runs[large]['sampled_peak_anon_mb']} / {runs[large]['sampled_peak_file_mb']}",
            ]
            for mode, runs in result["runs"].items()
        ],
    )
    print(
        f"\nRSS growth 1x -> {large} ({modes[0]}): {result['rss_growth']:+.1%}; "
        f"preparation {result['prepare_mb_per_s']} MB/s of text"
    )
    path = write_json(args.output, result)
    print(f"wrote {path} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
