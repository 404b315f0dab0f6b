"""Streaming data preparation: the same bytes whatever the number of processes, restartable after a kill,
the input formats people have, bad records counted or refused, a prepared folder that pretraining reads."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from bertlab.data.corpus import TextCorpus
from bertlab.data.mlm_datamodule import MLMDataModule
from bertlab.errors import BertlabError
from bertlab.run import run
from bertlab.tokenizer import TextTokenizer, WordPieceTokenizer
from tests.conftest import ROOT, compose_config, launch, snapshot

WORDS = [
    "the",
    "fox",
    "owl",
    "river",
    "hill",
    "runs",
    "over",
    "near",
    "bear",
    "whale",
    "eats",
    "fish",
    "green",
    "small",
    "old",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    return [
        " ".join(WORDS[(i * 7 + j * seed + j * j) % len(WORDS)] for j in range(4 + i % 9)) + f" {i}"
        for i in range(count)
    ]


def tokenizer() -> WordPieceTokenizer:
    fitted = WordPieceTokenizer(vocab_size=200, min_frequency=1, max_length=16)
    fitted.fit(sentences(200))
    return fitted


def datamodule(tmp_path, train, **kwargs) -> MLMDataModule:
    source = {k: kwargs.pop(k) for k in ("text_field", "txt_documents", "val") if k in kwargs}
    return MLMDataModule(
        TextCorpus(train=train, **source),
        val_ratio=0.1,
        test_ratio=0.1,
        cache_dir=str(tmp_path / "cache"),
        **{"num_proc": 1, **kwargs},
    )


def stores(folder) -> dict[str, bytes]:
    """The token stores and the manifest: what must not depend on how the preparation ran."""
    files = snapshot(folder)
    return {
        k: v
        for k, v in files.items()
        if k.split("/")[0] in ("train", "val", "test", "shards", "manifest.json")
    }


def test_one_or_two_processes_write_byte_identical_stores(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(sentences(3000)) + "\n")
    fitted = tokenizer()
    folders = {}
    for num_proc in (1, 2):
        data = datamodule(
            tmp_path / str(num_proc),
            str(tmp_path / "a.txt"),
            num_proc=num_proc,
            chunk_bytes=8000,
            shard_tokens=6000,
        )
        folders[num_proc] = data.prepare(fitted)
    one, two = stores(folders[1]), stores(folders[2])
    manifest = json.loads(one["manifest.json"])
    assert manifest["shards"] >= 3 and all(manifest["splits"][s]["documents"] > 100 for s in ("val", "test"))
    assert one == two


def test_a_killed_preparation_continues_to_the_same_bytes(tmp_path, caplog):
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n".join(sentences(40000, seed=3)) + "\n")
    common = [
        "+experiment=prepare",
        f"data.source.train={corpus}",
        "tokenizer.vocab_size=300",
        "data.num_proc=1",
        "data.shard_tokens=20000",
        "+data.chunk_bytes=30000",
    ]
    whole, killed = tmp_path / "preparation" / "whole", tmp_path / "preparation" / "killed"
    run(compose_config([*common, "experiment.name=whole"], tmp_path), whole)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    argv = [
        sys.executable,
        str(ROOT / "launch.py"),
        f"experiment.output_dir={tmp_path}",
        *common,
        "experiment.name=killed",
    ]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "shards" / "00002.json").is_file() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "manifest.json").exists(), "the preparation finished before it could be killed"
    with pytest.raises(BertlabError, match=r"not a finished prepared dataset.*relaunch the same preparation"):
        MLMDataModule(TextCorpus(train=str(corpus)), prepared=str(killed))
    caplog.set_level(logging.INFO)
    run(compose_config([*common, "experiment.name=killed"], tmp_path), killed)  # the relaunch
    assert "Continuing the preparation" in caplog.text and "starting it over" not in caplog.text
    assert stores(killed) == stores(whole)
    assert json.loads((whole / "manifest.json").read_text())["shards"] > 3
    with pytest.raises(BertlabError, match="already holds a finished prepared dataset"):
        run(compose_config([*common, "experiment.name=whole"], tmp_path), whole)


def test_compressed_jsonl_parquet_csv_and_datasets_folders_prepare(tmp_path):
    texts = sentences(400)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(texts))
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import csv

    table = pa.table({"body": texts, "id": list(range(len(texts)))})
    pq.write_table(table, tmp_path / "a.parquet")
    csv.write_csv(table, tmp_path / "a.csv")
    (tmp_path / "a.csv.bz2").write_bytes(bz2.compress((tmp_path / "a.csv").read_bytes()))
    (tmp_path / "a.csv").unlink()
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(tmp_path / "saved"))
    fitted = tokenizer()
    counts = {}
    for name in ("a.jsonl.gz", "a.parquet", "a.csv.bz2", "saved"):
        data = datamodule(tmp_path / name.replace(".", "_"), str(tmp_path / name), text_field="body")
        manifest = json.loads((data.prepare(fitted) / "manifest.json").read_text())
        counts[name] = {s: manifest["splits"][s]["tokens"] for s in ("train", "val", "test")}
        assert sum(manifest["splits"][s]["documents"] for s in counts[name]) == len(texts), name
        assert manifest["bad_records"]["total"] == 0, name
    assert len({json.dumps(c) for c in counts.values()}) == 1  # the same documents, whatever the format


def test_bad_records_are_counted_or_refused_naming_file_and_line(tmp_path):
    good = [json.dumps({"text": t}) for t in sentences(50)]
    lines = [*good[:10], "{broken json", *good[10:20], '{"text": ""}', *good[20:]]
    raw = "\n".join(lines).encode() + b"\n" + b'{"text": "caf\xe9 latin-1"}\n'
    (tmp_path / "web.jsonl").write_bytes(raw)
    fitted = tokenizer()
    manifest = json.loads(
        (
            datamodule(tmp_path / "skip", str(tmp_path / "web.jsonl")).prepare(fitted) / "manifest.json"
        ).read_text()
    )
    report = manifest["bad_records"]["per_file"][str(tmp_path / "web.jsonl")]
    assert report["counts"] == {"broken_json": 1, "empty": 1, "undecodable": 1}
    assert report["first"][0].startswith(f"{tmp_path / 'web.jsonl'}:11: broken_json")
    assert sum(manifest["splits"][s]["documents"] for s in ("train", "val", "test")) == 50
    with pytest.raises(
        BertlabError, match=r"source\.train: .*web\.jsonl:11 is not valid JSON .*data\.on_bad_record=skip"
    ):
        datamodule(tmp_path / "error", str(tmp_path / "web.jsonl"), on_bad_record="error").prepare(fitted)
    (tmp_path / "bad.txt").write_bytes(b"a fine line\nnot \xff utf-8\nanother fine line\n")
    with pytest.raises(BertlabError, match=r"bad\.txt:2 is not valid UTF-8 \(byte 0xff at column 5\)"):
        datamodule(tmp_path / "error2", str(tmp_path / "bad.txt"), on_bad_record="error").prepare(fitted)
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    with pytest.raises(BertlabError, match=r"image\.txt' is not text \(it holds NUL bytes"):
        datamodule(tmp_path / "binary", str(tmp_path / "image.txt")).prepare(fitted)


def test_globs_folders_and_paragraphs(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.txt.gz").write_bytes(gzip.compress(b"first para\nstill first\n\nsecond para\n"))
    (tmp_path / "docs" / "a.txt").write_text("third\n")
    corpus = TextCorpus(train=str(tmp_path / "docs"), txt_documents="paragraph")
    assert [i.location.rsplit("/", 1)[1] for i in corpus.inputs["train"]] == ["a.txt", "b.txt.gz"]
    assert [i.location for i in TextCorpus(train=str(tmp_path / "docs" / "*.gz")).inputs["train"]] == [
        str(tmp_path / "docs" / "b.txt.gz")
    ]
    data = MLMDataModule(corpus, val_ratio=0.0, test_ratio=0.0, cache_dir=str(tmp_path / "c"), num_proc=1)
    assert list(data.tokenizer_sample()) == ["third", "first para still first", "second para"]


def test_pretraining_trains_on_a_prepared_folder_with_its_tokenizer(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(sentences(3000)) + "\n")
    prepared = tmp_path / "preparation" / "corpus"
    run(
        compose_config(
            ["+experiment=prepare", f"data.source.train={tmp_path / 'a.txt'}", "experiment.name=corpus"],
            tmp_path,
        ),
        prepared,
    )
    run_dir = tmp_path / "pretraining" / "smoke"
    overrides = [
        "+experiment=smoke",
        f"data.prepared={prepared}",
        "training.max_steps=4",
        "logging.log_eval=false",
    ]
    run(compose_config(overrides, tmp_path), run_dir)
    assert (run_dir / "tokenizer.json").read_bytes() == (prepared / "tokenizer.json").read_bytes()
    assert json.loads((run_dir / "run.json").read_text())["prepared_data"] == str(prepared)
    assert (run_dir / "checkpoints" / "model.ckpt").is_file()


PREPARE_UNDER_IGNORED_SIGTERM = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: None)  # as submitit's job environment does
from bertlab.errors import BertlabError
from tests.test_preparation import datamodule, tokenizer
from pathlib import Path
tmp, train, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    datamodule(tmp, train, num_proc=2, on_bad_record=mode, chunk_bytes=2048).prepare(tokenizer())
    print("prepared")
except BertlabError as error:
    print("refused:", error)
"""


@pytest.mark.parametrize("mode", ["skip", "error"])
def test_two_process_preparation_ends_when_the_parent_ignores_sigterm(tmp_path, mode):
    """Pool workers once inherited a handler that ignores SIGTERM (submitit's), and the pool's shutdown,
    which stops them with SIGTERM, then waited forever: a sweep on submitit hung at its preparation."""
    lines = sentences(600)
    (tmp_path / "a.txt").write_bytes(
        "\n".join(lines[:500]).encode() + b"\nnot \xff utf-8\n" + "\n".join(lines[500:]).encode()
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PREPARE_UNDER_IGNORED_SIGTERM,
            str(tmp_path / mode),
            str(tmp_path / "a.txt"),
            mode,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("refused: source.train: " if mode == "error" else "prepared"), (
        result.stdout
    )


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_error_mode_leaves_no_cache_lock_or_tokenizer_where_there_was_none(tmp_path):
    """A run and a preparation stopped by a bad record: one Error line, exit 2, the output folder as it was."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(("\n".join(sentences(300)) + "\n").encode() + b"caf\xe9 latin-1\n")
    output = tmp_path / "out"
    output.mkdir()
    (output / "kept.txt").write_text("a file of the user's")
    expected = (
        f"Error: data.source.train: {bad}:301 is not valid UTF-8 (byte 0xe9 at column 4); re-encode the file "
        f"as UTF-8 (e.g. iconv -f latin1 -t utf-8); or set data.on_bad_record=skip to skip and count bad records"
    )
    common = [f"data.source.train={bad}", "data.on_bad_record=error", "data.num_proc=1"]
    for args in (["+experiment=smoke", "data=text", *common], ["+experiment=prepare", *common]):
        result = launch(args, output, check=False)
        assert (result.returncode, last_line(result)) == (2, expected), result.stderr[-2000:]
        assert sorted(p.name for p in output.rglob("*")) == ["kept.txt"]


def test_a_damaged_prepared_folder_is_refused_naming_the_shard_and_the_command(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(sentences(3000)) + "\n")
    args = ["+experiment=prepare", f"data.source.train={tmp_path / 'a.txt'}", "experiment.name=corpus"]
    prepared = tmp_path / "preparation" / "corpus"
    run(compose_config(args, tmp_path), prepared)
    (prepared / ".hydra").mkdir()  # what launch.py's Hydra saves there: the command's overrides
    (prepared / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {item}\n" for item in [f"experiment.output_dir={tmp_path}", *args])
    )
    shard = prepared / "train" / "00000.bin"
    whole = shard.read_bytes()
    rebuild = (
        f"the folder is damaged; prepare it again with `python launch.py experiment.output_dir={tmp_path} "
        f"{' '.join(args)}` after moving the damaged folder away (or with another experiment.name), then "
        f"point data.prepared at the new folder"
    )
    pretrain = ["+experiment=smoke", f"data.prepared={prepared}", "training.max_steps=2"]
    shard.write_bytes(whole[: len(whole) // 2])
    result = launch(pretrain, tmp_path / "runs", check=False)
    assert (result.returncode, last_line(result)) == (
        2,
        f"Error: data.prepared: shard 'train/00000.bin' of prepared folder '{prepared}' has "
        f"{len(whole) // 2:,} bytes, its manifest records {len(whole):,}: {rebuild}",
    )
    assert not (tmp_path / "runs").exists()
    shard.write_bytes(whole[:100] + bytes([whole[100] ^ 1]) + whole[101:])  # one bit flipped
    data = MLMDataModule(TextCorpus(train=str(tmp_path / "a.txt")), prepared=str(prepared))
    with pytest.raises(BertlabError) as caught:
        data.prepare(TextTokenizer.from_file(prepared / "tokenizer.json"))
    assert str(caught.value) == (
        f"prepared: shard 'train/00000.bin' of prepared folder '{prepared}' does not match the checksum its "
        f"manifest records: {rebuild}"
    )


def test_a_line_of_megabytes_is_read_and_encoded_in_bounded_pieces(tmp_path):
    from bertlab.data.chunk_encoding import MAX_DOCUMENT_CHARS, BadRecords, chunk_documents

    words = " ".join(sentences(2000))
    line = (words + " ") * (3_000_000 // len(words)) + "naïve café"  # 3 MB, no newline, ends in UTF-8
    (tmp_path / "long.txt").write_text(line)
    corpus = TextCorpus(train=str(tmp_path / "long.txt"))
    chunks = list(corpus.chunks(chunk_bytes=1 << 20))
    assert len(chunks) == 3 and all(len(chunk.data) <= 1 << 20 for chunk in chunks)
    documents = [d for chunk in chunks for d in chunk_documents(chunk, "text", False, BadRecords())]
    assert all(len(d) <= MAX_DOCUMENT_CHARS for d in documents) and len(documents) > 3_000_000 / (1 << 16)
    assert " ".join(documents) == line.strip()  # cut only at spaces: every word whole
    data = datamodule(tmp_path, str(tmp_path / "long.txt"), chunk_bytes=1 << 20)
    manifest = json.loads((data.prepare(tokenizer()) / "manifest.json").read_text())
    assert manifest["splits"]["train"]["documents"] == len(documents) - sum(
        manifest["splits"][s]["documents"] for s in ("val", "test")
    )


def test_a_split_that_comes_out_empty_says_so_at_once_with_advice_that_fits(tmp_path):
    output = tmp_path / "out"
    one = tmp_path / "one.txt"
    one.write_text(" ".join(sentences(50)) + "\n")  # one document: a ratio cannot split it
    result = launch(["+experiment=prepare", f"data.source.train={one}"], output, check=False)
    assert (result.returncode, last_line(result)) == (
        2,
        "Error: data.val_ratio: the val split came out empty: the training text is a single document, which "
        "a ratio cannot split (documents go to a split whole); give val text of its own with "
        "data.source.val=<file>",
    )
    assert not output.exists()
    few = tmp_path / "few.txt"
    few.write_text("\n".join(sentences(4)) + "\n")
    with pytest.raises(BertlabError) as caught:
        datamodule(tmp_path / "few", str(few)).prepare(tokenizer())
    assert str(caught.value) == (
        "val_ratio: the val split came out empty: data.val_ratio=0.1 of 4 documents gave none (documents go to "
        "a split whole, by a hash of their text); give val text of its own with data.source.val=<file>, or "
        "raise data.val_ratio"
    )
    assert not (tmp_path / "few").exists()  # nothing left: no shards, state, lock or cache folder


def test_error_mode_keeps_the_finished_shards_of_a_folder_that_existed(tmp_path):
    lines = sentences(3000)
    (tmp_path / "a.txt").write_bytes("\n".join(lines).encode() + b"\nnot \xff utf-8\n")
    settings = {"on_bad_record": "error", "chunk_bytes": 8000, "shard_tokens": 6000}
    fresh = datamodule(tmp_path / "fresh", str(tmp_path / "a.txt"), **settings)
    with pytest.raises(BertlabError, match=r"a\.txt:3001 is not valid UTF-8"):
        fresh.prepare(tokenizer())
    assert not (tmp_path / "fresh").exists()  # created by this preparation: gone, lock and all
    again = datamodule(tmp_path / "again", str(tmp_path / "a.txt"), **settings)
    folder = again.cache_dir / again.fingerprint(tokenizer())
    folder.mkdir(parents=True)  # as an interrupted preparation leaves it, to be continued
    with pytest.raises(BertlabError, match=r"a\.txt:3001 is not valid UTF-8"):
        again.prepare(tokenizer())
    assert len(list((folder / "shards").glob("*.json"))) >= 3  # what it finished stays for the relaunch
