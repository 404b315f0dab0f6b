"""Finetuning from a pretraining run: the run folder, weights that really come from the pretrained run,
freezing, user data, and the errors for bad input."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch

from bertlab.errors import BertlabError
from bertlab.run import run
from tests.conftest import compose_config, launch, read_csv

FAST_FINETUNE = [
    "training.max_epochs=2",
    "training.min_steps=null",
    "training.batch_size=16",
    "data.source.count=600",
    "tokenizer.max_length=48",
]


def finetune(output_dir, name, *overrides):
    cfg = compose_config(
        ["+experiment=finetune", f"experiment.name={name}", "pretrained_experiment.name=shared", *overrides],
        output_dir,
    )
    run_dir = output_dir / "finetuning" / name
    run(cfg, run_dir)
    return run_dir


def backbone_weights(path):
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("backbone.")}


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # forced, whatever this CPU would pick
def test_default_chain_writes_the_finetuning_folder(pretrained_run, precision):
    output_dir = pretrained_run.parent.parent
    launch(
        [
            "+experiment=finetune",
            f"experiment.name=chain_{precision}",
            "pretrained_experiment.name=shared",
            "data.source.count=1200",
            "training.max_epochs=3",
            "training.min_steps=null",
            "tokenizer.max_length=48",
            f"training.precision={precision}",
        ],
        output_dir,
    )
    run_dir = output_dir / "finetuning" / f"chain_{precision}"
    for relative in (
        "checkpoints/best-model.ckpt",
        "checkpoints/model.ckpt",
        "metrics/train/metrics.csv",
        "predictions.csv",
        "results.json",
        "labels.json",
        "tokenizer.json",
        ".hydra/config.yaml",
        "plots/loss.png",
        "plots/learning_rate.png",
        "plots/accuracy.png",
        "plots/macro_f1.png",
    ):
        assert (run_dir / relative).is_file(), relative
    test_rows = [r for r in read_csv(run_dir / "metrics/eval/metrics.csv") if r["stage"] == "test"]
    assert len(test_rows) == 1 and {"accuracy", "macro_f1"} <= set(test_rows[0])
    predictions = read_csv(run_dir / "predictions.csv")
    gold = [row["label"] for row in predictions]
    majority = max(gold.count(label) for label in set(gold)) / len(gold)
    accuracy = sum(row["label"] == row["prediction"] for row in predictions) / len(predictions)
    assert accuracy == pytest.approx(float(test_rows[0]["accuracy"]), abs=1e-6)
    assert accuracy > majority + 0.2, (accuracy, majority)
    results = json.loads((run_dir / "results.json").read_text())
    baseline = results["baseline"]  # TF-IDF + logistic regression on the same split, beside the model
    assert baseline["test/accuracy"] > majority + 0.2 and 0 < baseline["test/macro_f1"] <= 1
    assert baseline["C"] in (1.0, 4.0, 16.0) and baseline["seconds"] < 30
    assert results["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    log_tail = (run_dir / "run.log").read_text().splitlines()[-5:]
    assert any(
        f"Test accuracy {accuracy:.4f}" in line
        and f"baseline: accuracy {baseline['test/accuracy']:.4f}" in line
        for line in log_tail
    ), log_tail
    info = json.loads((run_dir / "run.json").read_text())
    assert info["precision"] == precision
    # training.optimizer.lr: auto, for a pretrained encoder: 1.2 / hidden_size^1.5
    assert info["learning_rate"]["lr"] == pytest.approx(1.2 / info["architecture"]["hidden_size"] ** 1.5)
    assert info["learning_rate"]["head_lr"] == info["learning_rate"]["lr"]  # head_lr: null
    assert info["pretrained_from"]["checkpoint"] == str(pretrained_run / "checkpoints/best-model.ckpt")
    assert (run_dir / "tokenizer.json").read_bytes() == (pretrained_run / "tokenizer.json").read_bytes()


def test_frozen_backbone_stays_bitwise_equal_to_the_pretrained_weights(pretrained_run):
    output_dir = pretrained_run.parent.parent
    run_dir = finetune(output_dir, "frozen", *FAST_FINETUNE, "training.freeze.backbone=true")
    pretrained = backbone_weights(pretrained_run / "checkpoints/best-model.ckpt")
    for name in ("model.ckpt", "best-model.ckpt"):
        finetuned = backbone_weights(run_dir / "checkpoints" / name)
        assert finetuned.keys() == pretrained.keys()
        assert all(torch.equal(finetuned[k], pretrained[k]) for k in pretrained), name
    losses = [float(row["loss"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    # The head learns. Single-batch losses are noisy around ln 2 here: with the (now deterministic) smoke
    # vocabulary the last one is above the first, so ask only that some later one falls below it.
    assert min(losses[1:]) < losses[0], losses


def test_load_backbone_loads_every_pretrained_backbone_weight(pretrained_run):
    """What a finetune without freezing starts from (pretrained.load_backbone), checked without training."""
    from bertlab.model.encoder import Encoder
    from bertlab.pretrained import load_backbone, open_pretrained_run

    path = open_pretrained_run(pretrained_run.parent.parent, "shared", "best").checkpoint
    checkpoint = torch.load(path, weights_only=True)
    architecture = {
        k: v for k, v in checkpoint["bertlab"]["config"]["architecture"].items() if k != "_target_"
    }
    backbone = Encoder(
        vocab_size=checkpoint["state_dict"]["backbone.word_embeddings.weight"].shape[0], **architecture
    )
    load_backbone(backbone, checkpoint["state_dict"], path)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("backbone.")], v) for k, v in backbone_weights(path).items())


def test_a_non_default_pretrained_architecture_is_inherited_whole(tmp_path, caplog):
    """bert_mini with local attention, window 4 and no dropout: the finetune builds exactly that backbone;
    only the key set on its command line (attention_dropout) changes, and that is logged and recorded."""
    pretrained = [
        "architecture=bert_mini",
        "architecture.attention=local",
        "architecture.local_window=4",
        "architecture.dropout=0.0",
    ]
    source = tmp_path / "pretraining" / "mini"
    run(
        compose_config(
            ["+experiment=smoke", "experiment.name=mini", "training.max_steps=2", *pretrained], tmp_path
        ),
        source,
    )
    saved = torch.load(source / "checkpoints/best-model.ckpt", weights_only=True)["bertlab"]["config"]
    run_dir = tmp_path / "finetuning" / "from_mini"
    cfg = compose_config(
        [
            "+experiment=finetune",
            "experiment.name=from_mini",
            "pretrained_experiment.name=mini",
            *FAST_FINETUNE,
            "training.max_epochs=1",
            "architecture.attention_dropout=0.0",
        ],
        tmp_path,
    )
    with caplog.at_level("INFO", logger="bertlab.finetuning"):
        run(cfg, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["learning_rate"]["lr"] == pytest.approx(1.2 / 256**1.5)  # auto, for bert_mini's width
    assert "training.optimizer.lr: auto is 0.00029 (pretrained encoder, hidden_size 256)" in caplog.text
    expected = {**saved["architecture"], "attention_dropout": 0.0}
    assert info["architecture"] == expected
    assert (
        expected["hidden_size"],
        expected["attention"],
        expected["local_window"],
        expected["dropout"],
    ) == (
        256,
        "local",
        4,
        0.0,
    )
    assert info["architecture_overrides"] == {"attention_dropout": {"pretrained": 0.1, "used": 0.0}}
    assert "architecture.attention_dropout: 0.0 instead of the pretrained 0.1" in caplog.text
    finetuned = torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["bertlab"]["backbone"]
    assert finetuned == expected


def test_overriding_a_shape_key_of_the_pretrained_backbone_is_refused(pretrained_run, tmp_path):
    cfg = compose_config(
        ["+experiment=finetune", "pretrained_experiment.name=shared", "architecture.hidden_size=64"],
        pretrained_run.parent.parent,
    )
    with pytest.raises(
        BertlabError, match=r"architecture\.hidden_size: is 64 but the pretrained backbone has 128"
    ):
        run(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_missing_pretrained_run_lists_the_existing_ones(pretrained_run, tmp_path):
    cfg = compose_config(
        ["+experiment=finetune", "pretrained_experiment.name=nope"], pretrained_run.parent.parent
    )
    with pytest.raises(BertlabError, match=r"no pretraining run 'nope' .* runs there: \[.*'shared'"):
        run(cfg, tmp_path / "x")


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")


def review_rows(count, offset=0):
    words = {"good": ["great", "lovely", "fine"], "bad": ["awful", "dull", "boring"]}
    rows = []
    for i in range(count):
        stars = "good" if (i + offset) % 2 else "bad"
        rows.append(
            {"review": f"the visit was {words[stars][i % 3]} and the owls were there", "stars": stars}
        )
    return rows


def test_user_jsonl_and_csv_with_custom_fields_and_string_labels(tmp_path, pretrained_run):
    output_dir = pretrained_run.parent.parent
    write_jsonl(tmp_path / "train.jsonl", review_rows(120))
    write_jsonl(tmp_path / "val.jsonl", review_rows(20, 1))
    with (tmp_path / "test.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["review", "stars"])
        writer.writeheader()
        writer.writerows(review_rows(20, 1))
    data = [
        "data=classification",
        f"data.source.train={tmp_path / 'train.jsonl'}",
        f"data.source.val={tmp_path / 'val.jsonl'}",
        f"data.source.test={tmp_path / 'test.csv'}",
        "data.text_field=review",
        "data.label_field=stars",
        "training.max_epochs=3",
        "training.min_steps=null",
        "training.batch_size=16",
    ]
    run_dir = finetune(output_dir, "reviews", *data)
    assert json.loads((run_dir / "labels.json").read_text()) == ["bad", "good"]
    predictions = read_csv(run_dir / "predictions.csv")
    assert len(predictions) == 20 and {row["label"] for row in predictions} == {"bad", "good"}
    assert list(predictions[0]) == ["id", "label", "prediction", "p_bad", "p_good"]


@pytest.mark.parametrize(
    ("problem", "fragment"),
    [
        ("unseen_label", "val.jsonl' has labels never seen in training: ['meh']"),
        ("empty", "data.source.train: file '{train}' holds no examples"),
        ("missing_text", "train.jsonl:1 has no 'review' field; set data.text_field"),
        ("single_class", "has a single label ['good']"),
    ],
)
def test_bad_labelled_data_fails_before_training(tmp_path, pretrained_run, problem, fragment):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    write_jsonl(train, review_rows(40))
    write_jsonl(val, review_rows(10))
    if problem == "unseen_label":
        write_jsonl(val, [*review_rows(5), {"review": "so so", "stars": "meh"}])
    elif problem == "empty":
        train.write_text("")
    elif problem == "missing_text":
        write_jsonl(train, [{"text": "x", "stars": "good"}])
    elif problem == "single_class":
        write_jsonl(train, [row for row in review_rows(40) if row["stars"] == "good"])
    cfg = compose_config(
        [
            "+experiment=finetune",
            "pretrained_experiment.name=shared",
            "data=classification",
            f"data.source.train={train}",
            f"data.source.val={val}",
            "data.text_field=review",
            "data.label_field=stars",
        ],
        pretrained_run.parent.parent,
    )
    with pytest.raises(BertlabError) as caught:
        run(cfg, tmp_path / "bad")
    assert fragment.format(train=train) in str(caught.value)
    assert not (tmp_path / "bad").exists()


def test_scratch_baseline_without_pretraining(tmp_path):
    run_dir = finetune_scratch(tmp_path)
    assert (run_dir / "predictions.csv").is_file()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["pretrained_from"] is None
    assert info["learning_rate"]["lr"] == 1e-3  # auto, for a randomly initialised encoder


def finetune_scratch(output_dir):
    cfg = compose_config(
        [
            "+experiment=finetune",
            "experiment.name=scratch",
            "pretrained_experiment=none",
            *FAST_FINETUNE,
            "tokenizer.vocab_size=300",
        ],
        output_dir,
    )
    run_dir = output_dir / "finetuning" / "scratch"
    run(cfg, run_dir)
    return run_dir


def test_evaluate_an_existing_run_on_a_new_file_without_retraining(tmp_path, pretrained_run):
    from bertlab.evaluate import main

    run_dir = finetune(pretrained_run.parent.parent, "to_evaluate", *FAST_FINETUNE)
    from bertlab.data.embedded_corpus import generate_reviews

    write_jsonl(tmp_path / "new.jsonl", [{"text": t, "label": y} for t, y in generate_reviews(50, seed=99)])
    before = (run_dir / "checkpoints/best-model.ckpt").read_bytes()
    assert main([str(run_dir), "--data", str(tmp_path / "new.jsonl")]) == 0
    assert main([str(run_dir), "--data", str(tmp_path / "new.jsonl")]) == 0
    first, second = run_dir / "evaluations/new", run_dir / "evaluations/new-2"
    results = json.loads((first / "results.json").read_text())
    assert 0.0 <= results["test/accuracy"] <= 1.0 and "test/macro_f1" in results
    assert len(read_csv(first / "predictions.csv")) == 50
    assert (second / "results.json").read_text() == (first / "results.json").read_text()
    assert (run_dir / "checkpoints/best-model.ckpt").read_bytes() == before


def test_min_steps_raises_the_default_epochs_of_a_small_labelled_set_and_says_so(pretrained_run, caplog):
    output_dir = pretrained_run.parent.parent
    with caplog.at_level(logging.INFO, logger="bertlab.flow"):
        run_dir = finetune(
            output_dir, "min_steps", *FAST_FINETUNE, "training.max_epochs=null", "training.min_steps=120"
        )
    epochs = json.loads((run_dir / "run.json").read_text())["max_epochs"]
    rows = read_csv(run_dir / "metrics/train/metrics.csv")
    last_step = int(float(rows[-1]["step"]))
    assert epochs > 3 and last_step % epochs == 0  # more than the default 3, whole epochs
    assert last_step // epochs * (epochs - 1) < 120 <= last_step  # the fewest epochs that reach 120 steps
    assert float(rows[-1]["lr"]) < float(rows[len(rows) // 2]["lr"])  # the schedule spans the longer run
    assert (
        f"training.min_steps=120 raises the default 3 epochs to {epochs} ({last_step // epochs} optimizer steps "
        f"each); set training.max_epochs or training.max_steps to train exactly that long"
    ) in caplog.messages


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (("training.max_epochs=1",), "one_epoch"),
        (("training.max_epochs=null", "training.max_steps=5"), "five"),
    ],
)
def test_an_explicit_max_epochs_or_max_steps_is_never_raised_by_min_steps(
    pretrained_run, caplog, overrides, name
):
    output_dir = pretrained_run.parent.parent
    with caplog.at_level(logging.INFO, logger="bertlab.flow"):
        run_dir = finetune(output_dir, name, *FAST_FINETUNE, "training.min_steps=1500", *overrides)
    last = torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)
    if name == "one_epoch":
        info = json.loads((run_dir / "run.json").read_text())
        assert info["max_epochs"] == 1
        assert last["global_step"] == -(-info["examples"]["train"] // 16) < 1500  # one epoch of batches of 16
    else:
        assert last["global_step"] == 5
    assert not any("raises the default" in message for message in caplog.messages)
