"""The exact message for each bad input the framework checks: it names the key or the file and line, and
says what would fix it."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest
import torch

from bertlab.data.embedded_corpus import generate_documents
from bertlab.errors import BertlabError
from bertlab.run import run
from bertlab.training.resume import check_resume_world
from tests.conftest import compose_config, launch, read_csv

SRC = Path(__file__).resolve().parents[1] / "src"


def pretrain_on(tmp_path, *overrides):
    cfg = compose_config(["+experiment=smoke", "data=text", *overrides], tmp_path)
    run_dir = tmp_path / "pretraining" / "smoke"
    run(cfg, run_dir)
    return run_dir


def text_file(path: Path, documents: int) -> Path:
    path.write_text("\n".join(generate_documents(documents, seed=3)) + "\n")
    return path


def test_smoke_preset_runs_on_the_users_text(tmp_path):
    corpus = text_file(tmp_path / "corpus.txt", 400)
    run_dir = pretrain_on(tmp_path, f"data.source.train={corpus}")
    assert [r["step"] for r in read_csv(run_dir / "metrics/train/metrics.csv")][-1] == "16"


def test_too_small_splits_name_the_key_that_fixes_them(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("".join(f"a short line number {i}\n" for i in range(60)))
    with pytest.raises(BertlabError) as caught:
        pretrain_on(tmp_path, f"data.source.train={tiny}")
    assert str(caught.value) == (
        "data.val_ratio: the val split has fewer than 64 tokens (tokenizer.max_length), not one block; add text "
        "or raise data.val_ratio, or lower tokenizer.max_length"
    )
    val = tmp_path / "val.txt"
    val.write_text("too short\n")
    with pytest.raises(BertlabError) as caught:
        pretrain_on(
            tmp_path, f"data.source.train={text_file(tmp_path / 'big.txt', 400)}", f"data.source.val={val}"
        )
    assert str(caught.value) == (
        "data.source.val: the val split has fewer than 64 tokens (tokenizer.max_length), not one block; add text, "
        "or lower tokenizer.max_length"
    )


def test_undecodable_and_binary_text_name_the_file_and_line(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(BertlabError) as caught:  # data.on_bad_record=skip (the default) counts it instead
        pretrain_on(tmp_path, f"data.source.train={bad}", "data.on_bad_record=error")
    assert str(caught.value) == (
        f"data.source.train: {bad}:2 is not valid UTF-8 (byte 0xe9 at column 4); re-encode the file as UTF-8 "
        f"(e.g. iconv -f latin1 -t utf-8); or set data.on_bad_record=skip to skip and count bad records"
    )
    binary = tmp_path / "model.txt"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(BertlabError) as caught:
        pretrain_on(tmp_path, f"data.source.train={binary}")
    assert str(caught.value) == (
        f"data.source.train: file '{binary}' is not text (it holds NUL bytes: it is binary); give UTF-8 text "
        f"files (.txt, .jsonl, .csv, .parquet, optionally .gz/.zst/.bz2)"
    )


def test_a_broken_json_line_keeps_its_whole_detail(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "tab\tinside"}\n')
    with pytest.raises(BertlabError) as caught:
        pretrain_on(tmp_path, f"data.source.train={corpus}", "data.on_bad_record=error")
    assert str(caught.value) == (
        f"data.source.train: {corpus}:2 is not valid JSON (Invalid control character at column 14); or set "
        f"data.on_bad_record=skip to skip and count bad records"
    )
    labelled = tmp_path / "train.jsonl"
    labelled.write_text('{"text": "ok", "label": 1}\n{"text": "ok", "label": }\n')
    message = finetune_refusal(
        tmp_path, "pretrained_experiment=none", "data=classification", f"data.source.train={labelled}"
    )
    assert message == f"data.source.train: {labelled}:2 is not valid JSON (Expecting value at column 25)"


def finetune_refusal(tmp_path, *overrides: str) -> str:
    """The message of the BertlabError a finetune composed with `overrides` stops with."""
    cfg = compose_config(["+experiment=finetune", *overrides], tmp_path)
    with pytest.raises(BertlabError) as caught:
        run(cfg, tmp_path / "finetuning" / "finetune")
    return str(caught.value)


class NotATensor:
    pass


def test_unreadable_pretrained_checkpoints_blame_pretrained_experiment_checkpoint(tmp_path):
    truncated, pickled = tmp_path / "truncated.ckpt", tmp_path / "pickled.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not a whole zip archive")
    torch.save({"state_dict": collections.OrderedDict(), "payload": NotATensor()}, pickled)
    messages = {}
    for path in (truncated, pickled):
        (tmp_path / "pretraining" / "source" / "checkpoints").mkdir(parents=True, exist_ok=True)
        messages[path] = finetune_refusal(
            tmp_path, "pretrained_experiment.name=source", f"pretrained_experiment.checkpoint={path}"
        )
    assert messages[truncated] == (
        f"pretrained_experiment.checkpoint: checkpoint '{truncated}' cannot be read (RuntimeError: "
        f"PytorchStreamReader failed reading zip archive: failed finding central directory); it is truncated, "
        f"corrupt or not a checkpoint; point pretrained_experiment.checkpoint at another checkpoint"
    )
    assert messages[pickled] == (
        f"pretrained_experiment.checkpoint: checkpoint '{pickled}' holds a Python object "
        f"(tests.test_error_messages.NotATensor) that a safe load (weights_only) refuses to run; bertlab "
        f"checkpoints hold only tensors and plain values, so it was not written by bertlab; point "
        f"pretrained_experiment.checkpoint at another checkpoint"
    )
    assert not (tmp_path / "finetuning").exists()


def test_messages_speak_of_training_batch_size():
    with pytest.raises(BertlabError) as caught:
        check_resume_world(1, 2, weights_only=False, allow=False)
    assert str(caught.value) == (
        "training.devices: the checkpoint was written by 1 process(es), this run would have 2: "
        "training.batch_size is per process, so the global batch and the position in the epoch would change. "
        "Resume with the same training.devices x training.num_nodes, or set "
        "training.resume.allow_config_changes=true to continue anyway"
    )
    stale = [str(path) for path in SRC.rglob("*.py") if "data.batch_size" in path.read_text()]
    assert stale == []  # the key is training.batch_size
    assert "data.train_ratio" not in json.dumps([path.read_text() for path in SRC.rglob("*.py")])


# -- files that cannot be parsed (issue 28) ---------------------------------------------------------------
@pytest.mark.parametrize("source", ["README.md", "binary"])
def test_a_tokenizer_file_that_is_not_one_is_one_error_line_and_nothing_is_created(tmp_path, source):
    if source == "binary":
        source = tmp_path / "weights.bin"
        source.write_bytes(bytes(range(256)) * 64)
    output_dir = tmp_path / "runs"
    result = launch(["+experiment=smoke", f"tokenizer.vocab_source={source}"], output_dir, check=False)
    assert result.returncode == 2, result.stderr
    reason = (
        "expected value at line 1 column 1" if source == "README.md" else "stream did not contain valid UTF-8"
    )
    assert result.stderr.strip().splitlines() == [
        f"Error: tokenizer.vocab_source: tokenizer file '{source}' cannot be read ({reason}); give a "
        f"tokenizer.json saved by bertlab or Hugging Face tokenizers, or a Hugging Face model folder"
    ]
    assert not output_dir.exists()


def test_a_finetune_from_a_run_whose_tokenizer_is_damaged_is_refused_before_anything_is_written(
    pretrained_run, tmp_path
):
    source = tmp_path / "runs" / "pretraining" / "damaged"
    shutil.copytree(pretrained_run, source)
    tokenizer = source / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:2000])  # a copy cut short
    result = launch(
        ["+experiment=finetune", "pretrained_experiment.name=damaged"], tmp_path / "runs", check=False
    )
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip()
    assert error.startswith(
        f"Error: pretrained_experiment.name: tokenizer file '{tokenizer}' cannot be read (EOF while parsing"
    )
    assert (
        error.endswith("; the run's file is damaged: restore it from a copy of the run") and "\n" not in error
    )
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["pretraining"]  # no finetuning folder


def test_evaluates_hint_for_an_unreadable_checkpoint_names_its_option(finetuned_run, tmp_path, capsys):
    from bertlab.evaluate import main as evaluate

    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"PK\x03\x04 not a whole zip archive")
    data = tmp_path / "new.jsonl"
    data.write_text('{"text": "fine", "label": "positive"}\n')
    assert evaluate([str(finetuned_run), "--data", str(data), "--checkpoint", str(damaged)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"Error: --checkpoint: checkpoint '{damaged}' cannot be read (RuntimeError: ")
    assert error.endswith(
        "it is truncated, corrupt or not a checkpoint; point --checkpoint at another checkpoint"
    )
