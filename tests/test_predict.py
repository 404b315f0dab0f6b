"""bertlab-predict: labels for unlabelled text equal the run's own test predictions, embeddings equal the
backbone's pooled output row for row, bad records skipped or refused, and no partial output ever."""

from __future__ import annotations

import json
import runpy
import sys
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
