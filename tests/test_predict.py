"""bertlab-predict: labels for unlabelled text equal the run's own test predictions, embeddings equal the
backbone's pooled output row for row, bad records skipped or refused, and no partial output ever."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
import torch.nn.functional as F
from pyarrow import parquet

from bertlab.errors import BertlabError
from bertlab.predict import Predictor, main, predict
from bertlab.trained_model import load_trained_model
from tests.conftest import ROOT, decided, read_csv, split_texts


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def leftovers(folder: Path) -> list[str]:
    """Hidden private files a write in progress uses: none may remain."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_predictions_over_many_batches_and_chunks_equal_the_runs_own_test_predictions(
    finetuned_run, tmp_path
):
    texts = split_texts(finetuned_run)
    expected = read_csv(finetuned_run / "predictions.csv")
    assert len(texts) == len(expected) > 3 * 8
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": text} for text in texts])
    out = tmp_path / "predictions.csv"
    # 8 texts a batch and 1 KiB chunks: several chunks, each sorted by length and put back in order
    summary = predict(finetuned_run, [data], out, batch_size=8, chunk_bytes=1024, progress=False)
    assert summary.records == summary.written == len(texts)
    rows = read_csv(out)
    labels = json.loads((finetuned_run / "labels.json").read_text())
    assert list(rows[0]) == ["file", "line", "label", *[f"p_{label}" for label in labels]]
    assert [int(row["line"]) for row in rows] == list(range(1, len(texts) + 1))
    decisive = [i for i, row in enumerate(expected) if decided(row)]  # a near-tie may flip with the padding
    assert len(decisive) > 0.9 * len(expected)
    assert [rows[i]["label"] for i in decisive] == [expected[i]["prediction"] for i in decisive]
    for name in (f"p_{label}" for label in labels):
        got = np.array([float(row[name]) for row in rows])
        want = np.array([float(row[name]) for row in expected])
        np.testing.assert_allclose(got, want, atol=2e-6)

    parquet_out = tmp_path / "predictions.parquet"
    predict(finetuned_run, [data], parquet_out, batch_size=8, chunk_bytes=1024, progress=False)
    table = parquet.read_table(parquet_out).to_pylist()
    assert [row["label"] for row in table] == [row["label"] for row in rows]
    assert leftovers(tmp_path) == []


def test_an_interrupted_predict_leaves_no_output_and_an_existing_one_untouched(
    finetuned_run, tmp_path, monkeypatch
):
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": f"visit number {i} went well"} for i in range(40)])
    out = tmp_path / "out.jsonl"
    calls = {"n": 0}
    original = Predictor.__call__

    def failing(self, encoded, *segments):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C (SIGTERM unwinds the same way) in the middle of the stream
        return original(self, encoded, *segments)

    monkeypatch.setattr(Predictor, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        predict(finetuned_run, [data], out, batch_size=4, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []

    out.write_text("earlier output\n")
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        predict(finetuned_run, [data], out, batch_size=4, progress=False, overwrite=True)
    assert out.read_text() == "earlier output\n" and leftovers(tmp_path) == []
    monkeypatch.setattr(Predictor, "__call__", original)
    with pytest.raises(BertlabError, match="exists; choose another file, or --overwrite") as refused:
        predict(finetuned_run, [data], out, progress=False)
    assert refused.value.key == "--out"
    predict(finetuned_run, [data], out, progress=False, overwrite=True)
    assert len(out.read_text().splitlines()) == 40


def test_bad_records_are_skipped_and_counted_or_refused_naming_the_line(finetuned_run, tmp_path, capsys):
    data = tmp_path / "mixed.jsonl"
    data.write_text(
        '{"text": "the visit went well"}\n{"text": broken\n{"text": ""}\n\n{"text": "rude and late"}\n'
    )
    out = tmp_path / "labels.csv"
    assert main([str(finetuned_run), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert [row["line"] for row in read_csv(out)] == ["1", "5"]
    assert "Skipped 2 bad records" in capsys.readouterr().err

    refused = tmp_path / "refused.csv"
    args = [str(finetuned_run), "--data", str(data), "--out", str(refused), "--on-bad-record", "error"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error: --data: {data}:2 is not valid JSON")
    assert not refused.exists() and leftovers(tmp_path) == []

    vectors = tmp_path / "vectors.npy"
    predict(finetuned_run, [data], vectors, embeddings=True, progress=False)
    matrix = np.load(vectors)  # one row per record (non-blank line), a bad one NaN: rows stay aligned
    assert matrix.shape[0] == 4
    assert [bool(np.isnan(row).all()) for row in matrix] == [False, True, True, False]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embeddings_are_the_backbones_pooled_output_row_aligned_with_the_input(
    finetuned_run, tmp_path, pooling
):
    texts = split_texts(finetuned_run)[:30]
    data = tmp_path / "new.txt.gz"
    import gzip

    data.write_bytes(gzip.compress(("\n".join(texts) + "\n").encode()))
    out = tmp_path / "vectors.npy"
    predict(
        finetuned_run,
        [data],
        out,
        embeddings=True,
        pooling=pooling,
        normalize=True,
        batch_size=7,
        progress=False,
    )
    matrix = np.load(out)
    run = load_trained_model(finetuned_run)
    assert matrix.shape == (len(texts), run.backbone.hidden_size) and matrix.dtype == np.float32
    with torch.no_grad():  # each text alone: no padding, so batching and sorting must not change a row
        for row, ids in zip(matrix, run.tokenizer.encode_sequences(texts), strict=True):
            hidden = run.backbone(torch.tensor([ids]))[0]
            pooled = hidden[0] if pooling == "cls" else hidden.mean(0)
            np.testing.assert_allclose(row, F.normalize(pooled, dim=-1).numpy(), atol=1e-5)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)

    table = tmp_path / "vectors.parquet"
    predict(finetuned_run, [data], table, embeddings=True, pooling=pooling, normalize=True, progress=False)
    rows = parquet.read_table(table).to_pydict()
    assert rows["line"] == list(range(1, len(texts) + 1))
    np.testing.assert_allclose(np.array(rows["embedding"]), matrix, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_wrong_requests_fail_in_one_line_and_the_command_runs_as_a_module(
    finetuned_run, tmp_path, monkeypatch, capsys
):
    data = write_jsonl(tmp_path / "new.jsonl", [{"body": "fine"}])
    for args, message in [
        (["--out", str(tmp_path / "x.npy")], "Error: --out: "),
        (["--out", str(tmp_path / "x.csv"), "--embeddings"], "Error: --out: "),
        (["--out", str(tmp_path / "x.csv"), "--text-field", "missing"], "Error: --data: "),
        (["--out", str(tmp_path / "no" / "x.csv")], "does not exist; create it first"),
    ]:
        assert main([str(finetuned_run), "--data", str(data), "--on-bad-record", "error", *args]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl"]

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["bertlab-predict"] == "bertlab.predict:main"
    out = tmp_path / "labels.parquet"
    argv = [
        "bertlab-predict",
        str(finetuned_run),
        "--data",
        str(data),
        "--text-field",
        "body",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("bertlab.predict", run_name="__main__", alter_sys=True)
    assert exited.value.code == 0
    assert parquet.read_table(out).num_rows == 1
    assert "Wrote 1 rows for 1 records" in capsys.readouterr().out


# -- one writer per --out (issue 28) ---------------------------------------------------------------------
def predict_process(run_dir: Path, data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """bertlab-predict as a user starts it: its own process."""
    command = [sys.executable, "-m", "bertlab.predict", str(run_dir), "--data", str(data), "--out", str(out)]
    return subprocess.Popen(
        [*command, "--no-progress", "--batch-size", "8", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def many_lines(path: Path, count: int, word: str) -> Path:
    path.write_text(
        "".join(f"the {word} visit number {i} went on and on, and then it ended\n" for i in range(count))
    )
    return path


def test_two_predicts_racing_for_one_out_one_is_refused_at_once_and_the_file_is_whole(
    finetuned_run, tmp_path
):
    first, second = many_lines(tmp_path / "a.txt", 4000, "good"), many_lines(tmp_path / "b.txt", 30, "bad")
    out = tmp_path / "out" / "o.csv"
    out.parent.mkdir()
    writer = predict_process(finetuned_run, first, out)
    wait_for(lambda: (out.parent / ".o.csv.lock").exists(), writer)  # it holds --out and is working
    loser = predict_process(finetuned_run, second, out)
    _, refused = loser.communicate(timeout=120)
    assert writer.poll() is None  # refused while the first one still works
    assert loser.returncode == 2
    assert refused.strip().splitlines() == [
        f"Error: --out: {str(out)!r} is being written by another command (process {writer.pid} on "
        f"{socket.gethostname()}); nothing was changed. Wait for it to end, or choose another --out"
    ]
    stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr
    assert f"Wrote 4000 rows for 4000 records to {out}" in stdout
    rows = read_csv(out)
    assert len(rows) == 4000 and {row["file"] for row in rows} == {str(first)}
    assert leftovers(out.parent) == []


def test_a_killed_predicts_hidden_file_is_removed_by_the_next_predict_to_that_out(finetuned_run, tmp_path):
    out = tmp_path / "out" / "vectors.npy"  # a .npy is opened at once: its hidden file lives the whole run
    out.parent.mkdir()
    killed = predict_process(finetuned_run, many_lines(tmp_path / "a.txt", 4000, "good"), out, "--embeddings")
    wait_for(lambda: any(p.suffix == ".tmp" for p in out.parent.iterdir()), killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    stale = [p.name for p in out.parent.iterdir() if p.suffix == ".tmp"]
    assert len(stale) == 1 and stale[0].startswith(".vectors.npy.") and not out.exists()

    data = many_lines(tmp_path / "b.txt", 30, "bad")
    assert (
        main([str(finetuned_run), "--data", str(data), "--out", str(out), "--embeddings", "--no-progress"])
        == 0
    )
    assert np.load(out).shape[0] == 30
    assert leftovers(out.parent) == []  # the hidden file and the dead writer's lock are gone


@pytest.mark.parametrize("out", ["/sys/predictions.csv", "/sys/kernel/predictions.csv"])
def test_an_out_that_cannot_be_written_is_refused_before_the_model_is_loaded(
    finetuned_run, tmp_path, monkeypatch, capsys, out
):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("bertlab.predict.load_trained_model", never)
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "fine"}])
    assert main([str(finetuned_run), "--data", str(data), "--out", out, "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"Error: --out: cannot write into {str(Path(out).parent)!r} (")
    assert error.endswith("); choose a --out in a writable folder") and "\n" not in error


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder regardless")
def test_a_read_only_folder_is_refused_naming_out(finetuned_run, tmp_path, capsys):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "fine"}])
    assert main([str(finetuned_run), "--data", str(data), "--out", str(folder / "o.csv")]) == 2
    assert "Error: --out: cannot write into" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_a_predict_in_which_every_record_was_skipped_fails_and_writes_nothing(
    finetuned_run, tmp_path, capsys, suffix
):
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "fine"}, {"text": "rude"}])
    out = tmp_path / "out" / f"o{suffix}"
    out.parent.mkdir()
    extra = ["--embeddings"] if suffix == ".npy" else []
    args = [str(finetuned_run), "--data", str(data), "--out", str(out), "--text-field", "body", *extra]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --text-field: all 2 records were skipped, so nothing was written; first: {data}:1: no text "
        f"field (no field 'body'). Give the field that holds the text with --text-field"
    )
    assert list(out.parent.iterdir()) == []


def test_a_missing_run_names_the_run_argument(tmp_path, capsys):
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "fine"}])
    missing = tmp_path / "runs" / "finetuning" / "nope"
    assert main([str(missing), "--data", str(data), "--out", str(tmp_path / "o.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"Error: run: run folder {str(missing)!r} does not exist"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.jsonl"]


def test_a_damaged_tokenizer_of_the_run_is_one_error_naming_the_run_and_the_file(
    finetuned_run, tmp_path, capsys
):
    run_dir = tmp_path / "damaged"
    shutil.copytree(finetuned_run, run_dir)
    tokenizer = run_dir / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:1000])  # a copy cut short
    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "fine"}])
    out = tmp_path / "o.csv"
    assert main([str(run_dir), "--data", str(data), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        f"Error: run: tokenizer file {str(tokenizer)!r} cannot be read (EOF while parsing"
    )
    assert error.endswith("; the run's file is damaged: restore it from a copy of the run")
    assert "\n" not in error and not out.exists() and leftovers(tmp_path) == []
