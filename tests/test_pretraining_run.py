"""End to end through launch.py: the run folder, its artifacts, and the refusal to overwrite a run."""

from __future__ import annotations

import json

import torch

from tests.conftest import FAST, launch, read_csv, snapshot


def test_default_run_writes_every_artifact(pretrained_run):
    run = pretrained_run
    for relative in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "tokenizer.json",
        "checkpoints/best-model.ckpt",
        "checkpoints/model.ckpt",
        "metrics/train/metrics.csv",
        "metrics/eval/metrics.csv",
        "run.json",
        "plots/loss.png",
        "plots/learning_rate.png",
        "plots/perplexity.png",
        "plots/accuracy.png",
    ):
        assert (run / relative).is_file(), relative
    train = read_csv(run / "metrics/train/metrics.csv")
    assert list(train[0]) == ["step", "epoch", "loss", "lr", "tokens_per_s"]
    assert [int(row["step"]) for row in train] == list(range(2, 17, 2))
    assert all(float(row["loss"]) > 0 and float(row["lr"]) > 0 for row in train)
    evaluation = read_csv(run / "metrics/eval/metrics.csv")
    assert list(evaluation[0]) == ["step", "epoch", "stage", "loss", "perplexity", "accuracy"]
    val = [row for row in evaluation if row["stage"] == "val"]
    assert [int(row["step"]) for row in val] == [0, 8, 16]
    assert float(val[-1]["loss"]) < float(val[0]["loss"]) - 0.5, "validation loss must fall clearly"
    assert [row["stage"] for row in evaluation].count("test") == 1


def test_checkpoints_load_safely_and_record_the_config(pretrained_run):
    checkpoint = torch.load(pretrained_run / "checkpoints/model.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 16
    assert checkpoint["bertlab"]["config"]["experiment"]["name"] == "shared"
    assert not any(key.startswith("_orig_mod.") for key in checkpoint["state_dict"])
    info = json.loads((pretrained_run / "run.json").read_text())
    assert info["precision"] in ("32-true", "bf16-mixed")


def test_a_config_error_leaves_the_name_free_and_a_finished_run_is_never_overwritten(tmp_path):
    args = ["+experiment=pretrain", "experiment.name=keep", *FAST, "training.max_steps=4"]
    run = tmp_path / "pretraining" / "keep"
    result = launch([*args, "architecture.num_heads=3"], tmp_path, check=False)
    assert result.returncode != 0 and "architecture.num_heads: 3 heads" in result.stderr
    assert not (run / "checkpoints").exists()

    launch(args, tmp_path)  # the corrected command reuses the folder the failed launch left
    before = snapshot(run)
    result = launch(["+experiment=pretrain", "experiment.name=keep", *FAST], tmp_path, check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert f"run folder '{run}' already holds a run" in message
    assert "experiment.name=<new name>" in message and "training.resume.is_resume=true" in message
    assert snapshot(run) == before
