"""Finetuned classifiers out of bertlab: Hugging Face (BERT and RoBERTa-based runs) and ONNX give bertlab's
logits with padding, the pipeline gives the run's own predicted labels, and what cannot be expressed is
refused naming the key."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bertlab.errors import BertlabError
from bertlab.export import export_hf, export_onnx, main
from bertlab.run import run
from bertlab.trained_model import load_trained_model
from tests.conftest import (
    FAST_SCRATCH_FINETUNE,
    compose_config,
    decided,
    read_csv,
    right_padded,
    split_texts,
)

transformers = pytest.importorskip("transformers")

TEXTS = [
    "the staff were kind and the visit went well",
    "rude",
    "Waited 45 minutes, then the doctor was late and dismissive!",
]


def classifier_logits(run_dir: Path, texts: list[str] = TEXTS):
    """bertlab's logits of a right-padded batch, and that batch."""
    trained = load_trained_model(run_dir)
    input_ids, mask = right_padded(trained.tokenizer, texts)
    assert (mask == 0).any()  # the batch is padded
    with torch.no_grad():
        return trained.head(trained.backbone(input_ids, mask), mask), input_ids, mask


def test_finetuned_bert_exports_for_auto_classes_and_the_pipeline(finetuned_run, tmp_path):
    out = export_hf(finetuned_run, tmp_path / "cls")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == "BertForSequenceClassification"
    labels = json.loads((finetuned_run / "labels.json").read_text())
    assert model.config.id2label == {i: str(label) for i, label in enumerate(labels)}
    assert model.config.label2id == {str(label): i for i, label in enumerate(labels)}

    ours, input_ids, mask = classifier_logits(finetuned_run)
    with torch.no_grad():
        theirs = model(input_ids=input_ids, attention_mask=mask).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer(TEXTS)["input_ids"] == load_trained_model(finetuned_run).tokenizer.encode_sequences(
        TEXTS
    )

    texts = split_texts(finetuned_run)
    classify = transformers.pipeline("text-classification", model=str(out), device="cpu")
    predicted = [result["label"] for result in classify(texts, batch_size=16)]
    expected = read_csv(finetuned_run / "predictions.csv")
    pairs = [(got, row["prediction"]) for got, row in zip(predicted, expected, strict=True) if decided(row)]
    assert len(pairs) > 0.9 * len(expected)
    assert [got for got, _ in pairs] == [want for _, want in pairs]


@pytest.fixture(scope="module")
def roberta_run(tmp_path_factory) -> Path:
    """A finetune started from a tiny RoBERTa folder, its head with a tanh layer of hidden_size."""
    from tests.test_hf_import import save_model

    root = tmp_path_factory.mktemp("roberta")
    folder = save_model(root / "hf", "roberta")
    overrides = [
        *FAST_SCRATCH_FINETUNE,
        "pretrained_experiment=default",
        f"pretrained_experiment.hf_path={folder}",
        "architecture=from_pretrained",
        "tokenizer.max_length=32",
        "training.max_epochs=1",
        "data.source.count=200",
        "classification_head.hidden_layer_size=32",
        "experiment.name=from_roberta",
    ]
    run_dir = root / "finetuning" / "from_roberta"
    run(compose_config(overrides, root), run_dir)
    return run_dir


@pytest.mark.parametrize("start", ["roberta", "bert"])
def test_runs_export_in_their_family_with_the_same_logits(roberta_run, finetuned_run, tmp_path, start):
    """The head's weights perturbed, so that logits are large and a wrong mapping shows."""
    run_dir = fake_head(roberta_run if start == "roberta" else finetuned_run, tmp_path, noise=0.5)
    out = export_hf(run_dir, tmp_path / "cls")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(model).__name__ == f"{'Roberta' if start == 'roberta' else 'Bert'}ForSequenceClassification"
    ours, input_ids, mask = classifier_logits(run_dir)
    with torch.no_grad():
        theirs = model(input_ids=input_ids, attention_mask=mask).logits
    assert ours.abs().max() > 1.0
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    reference = transformers.AutoTokenizer.from_pretrained(out)
    ids = reference(TEXTS, truncation=True)["input_ids"]  # bertlab cuts at max_length, keeping [SEP]
    assert ids == load_trained_model(run_dir).tokenizer.encode_sequences(TEXTS)


def fake_head(run_dir: Path, tmp_path: Path, noise: float = 0.0, **head: object) -> Path:
    """A copy of a finetuning run with N(0, noise) added to its head weights, and whose saved config names
    another head (`head`: classification_head keys)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("model.ckpt"))
    path = copy / "checkpoints/best-model.ckpt"
    state = torch.load(path, weights_only=True)
    state["bertlab"]["config"]["classification_head"].update(head)
    generator = torch.Generator().manual_seed(0)
    for key, value in state["state_dict"].items():
        if key.startswith("head."):
            state["state_dict"][key] = value + noise * torch.randn(value.shape, generator=generator)
    torch.save(state, path)
    return copy


def test_a_head_hugging_face_cannot_express_is_refused_naming_the_key(finetuned_run, tmp_path, capsys):
    copy = fake_head(finetuned_run, tmp_path, pooling="mean")
    out = tmp_path / "hf"
    assert main([str(copy), "--to", "hf", str(out)]) == 2
    assert "Error: classification_head.pooling: 'mean' cannot be expressed" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())


def onnx_session(folder: Path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])


def test_onnx_runtime_gives_the_classifiers_logits_for_any_batch_and_length(finetuned_run, tmp_path):
    pytest.importorskip("onnxscript")
    assert main([str(finetuned_run), "--to", "onnx", str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx/bertlab_onnx.json").read_text())
    assert info["task"] == "classification" and info["labels"] == json.loads(
        (finetuned_run / "labels.json").read_text()
    )
    session = onnx_session(tmp_path / "onnx")
    for texts in (TEXTS, TEXTS[:1], [*TEXTS, "another visit, another story about the long wait"] * 3):
        ours, input_ids, mask = (
            classifier_logits(finetuned_run, texts) if len(texts) > 1 else (None, None, None)
        )
        if ours is None:  # a single sequence: no padding at all
            trained = load_trained_model(finetuned_run)
            input_ids, mask = right_padded(trained.tokenizer, texts)
            with torch.no_grad():
                ours = trained.head(trained.backbone(input_ids, mask), mask)
        (theirs,) = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        np.testing.assert_allclose(theirs, ours.numpy(), atol=1e-4, rtol=0)


def test_onnx_runtime_gives_a_pretraining_runs_mlm_logits_and_hidden_states(finetuned_run, tmp_path):
    """Any architecture exports to ONNX, also what Hugging Face BERT cannot express (rope, local attention)."""
    pytest.importorskip("onnxscript")
    from tests.test_export import fake_run

    overrides = [
        "architecture.num_heads=4",
        "architecture.position_encoding=rope",
        "architecture.attention=local",
        "architecture.local_window=4",
    ]
    run_dir = fake_run(tmp_path, finetuned_run, overrides, scale=0.1)
    out = export_onnx(run_dir, tmp_path / "onnx")
    trained = load_trained_model(run_dir)
    session = onnx_session(out)
    for texts in (TEXTS, TEXTS[1:2]):
        input_ids, mask = right_padded(trained.tokenizer, texts)
        logits, hidden = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            states = trained.backbone(input_ids, mask)
            real = mask.bool().numpy()
            np.testing.assert_allclose(hidden[real], states.numpy()[real], atol=1e-4, rtol=0)
            np.testing.assert_allclose(logits[real], trained.head(states).numpy()[real], atol=1e-4, rtol=0)


def test_missing_onnx_dependencies_give_one_install_line(finetuned_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    with pytest.raises(BertlabError, match=r"pip install 'bertlab\[onnx\]'"):
        export_onnx(finetuned_run, tmp_path / "onnx")
    assert main([str(finetuned_run), "--to", "onnx", str(tmp_path / "onnx")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "onnx").exists()
