"""Starting from a Hugging Face model folder: import with equal logits, continued pretraining, finetuning
from the folder and from the continued run, export back, and refusals before anything is written.

The folders are tiny BERT and RoBERTa models with random weights and tokenizers trained here, saved with
`save_pretrained`: nothing is downloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

from bertlab.data.embedded_corpus import generate_documents, generate_reviews
from bertlab.errors import BertlabError
from bertlab.export import export_hf
from bertlab.finetuning import Finetuning
from bertlab.hf_import import load_weights, read_hf_model
from bertlab.model.encoder import Encoder
from bertlab.model.mlm_head import MLMHead
from bertlab.pretraining import Pretraining
from bertlab.saved_run import SavedRun
from bertlab.tokenizer import TextTokenizer
from tests.conftest import compose_config, launch, read_csv, right_padded

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

TEXTS = ["the quick brown fox jumps over the lazy dog", "a short one", "Numbers like 1234, too!"]
LAUNCH = [  # a few seconds per run
    "tokenizer.max_length=32",
    "training.batch_size=8",
    "training.max_steps=12",
    "training.val_check_interval=6",
    "training.checkpoint.every_n_steps=6",
    "training.precision=32-true",
    "logging.log_every_n_steps=1",
]


def corpus() -> list[str]:
    return generate_documents(300, seed=3) + [text for text, _ in generate_reviews(300, seed=3)] + TEXTS


def bert_tokenizer(folder: Path) -> int:
    """BERT's WordPiece vocabulary, saved only as vocab.txt (what older BERT folders hold)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        corpus(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    )
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return len(vocab)


def roberta_tokenizer(folder: Path) -> int:
    """RoBERTa's byte-level BPE with its special tokens (<s>=0, <pad>=1, </s>=2), saved as tokenizer.json."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.save_pretrained(folder)
    return tokenizer.get_vocab_size()


def save_model(folder: Path, model_type: str, **config) -> Path:
    """A tiny model with random weights (LayerNorms and biases too, so that a wrong mapping shows)."""
    folder.mkdir(parents=True)
    vocab_size = bert_tokenizer(folder) if model_type == "bert" else roberta_tokenizer(folder)
    settings = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        layer_norm_eps=1e-7,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    if model_type == "bert":
        settings.update(max_position_embeddings=64, pad_token_id=0)
        hf_config, hf_class = transformers.BertConfig, transformers.BertForMaskedLM
    else:
        settings.update(
            max_position_embeddings=34, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1
        )
        hf_config, hf_class = transformers.RobertaConfig, transformers.RobertaForMaskedLM
    torch.manual_seed(0)
    model = hf_class(hf_config(**{**settings, **config}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.2)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: save_model(root / kind, kind) for kind in ("bert", "roberta")}


def assert_same_logits(backbone, head, tokenizer, hf_model) -> None:
    """Equal MLM logits at every real token, padded batch and a single unpadded sequence, within 1e-4."""
    input_ids, mask = right_padded(tokenizer, TEXTS)
    assert (input_ids == tokenizer.backend.token_to_id(tokenizer.special.unk)).float().mean() < 0.2
    with torch.no_grad():
        ours, theirs = (
            head(backbone(input_ids, mask)),
            hf_model(input_ids=input_ids, attention_mask=mask).logits,
        )
        assert ours.abs().max() > 1.0  # random weights give logits that differ where a mapping is wrong
        torch.testing.assert_close(ours[mask.bool()], theirs[mask.bool()], atol=1e-4, rtol=0)
        single = input_ids[:1, : int(mask[0].sum())]
        torch.testing.assert_close(
            head(backbone(single)), hf_model(input_ids=single).logits, atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_import_gives_the_hugging_face_models_logits_and_special_tokens(hf_folders, kind):
    model = read_hf_model(hf_folders[kind])
    backbone = Encoder(
        vocab_size=model.tokenizer.vocab_size,
        pad_token_id=model.tokenizer.pad_id,
        **{k: v for k, v in model.architecture.items() if k != "_target_"},
    ).eval()
    head = MLMHead(
        backbone.hidden_size, model.tokenizer.vocab_size, model.tied, model.config["layer_norm_eps"]
    )
    head.tie_to(backbone.word_embeddings)
    load_weights(backbone, head, model.state_dict(), model.folder)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(hf_folders[kind]).eval()
    assert_same_logits(backbone, head.eval(), model.tokenizer, hf)

    tokenizer = model.tokenizer
    names = ["[CLS]", "[SEP]", "[MASK]", "[PAD]"] if kind == "bert" else ["<s>", "</s>", "<mask>", "<pad>"]
    ids = [tokenizer.backend.token_to_id(name) for name in names]
    assert [tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.pad_id] == ids
    assert set(ids) <= set(tokenizer.special_ids)  # masking never selects special tokens
    reference = transformers.AutoTokenizer.from_pretrained(hf_folders[kind])
    assert tokenizer.encode_sequences(TEXTS) == reference(TEXTS)["input_ids"]


def text_file(folder: Path) -> Path:
    path = folder / "corpus.txt"
    path.write_text("\n".join(generate_documents(300, seed=5)) + "\n")
    return path


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_continued_pretraining_then_finetuning_and_export_round_trip(hf_folders, tmp_path, kind):
    folder = hf_folders[kind]
    start = ["+experiment=pretrain", "architecture=from_hf", f"architecture.path={folder}", "data=text"]
    # A random tiny model, not a released one: the from-scratch rate shows it learning in 12 steps.
    fast = "training.optimizer.lr=1e-3"
    launch(
        [*start, f"data.source.train={text_file(tmp_path)}", "experiment.name=dapt", *LAUNCH, fast], tmp_path
    )
    run_dir = tmp_path / "pretraining" / "dapt"

    losses = [
        float(row["loss"]) for row in read_csv(run_dir / "metrics/train/metrics.csv") if row.get("loss")
    ]
    assert len(losses) >= 10 and sum(losses[-3:]) < sum(losses[:3])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["head_warmup_steps"] == 0  # the folder has its MLM head: no head warmup
    assert info["learning_rate"] == {"lr": 1e-3}  # as set (auto would be 1e-4 for an imported model)
    weights = folder / "model.safetensors"
    assert info["hf_source"]["path"] == str(folder.resolve())
    assert info["hf_source"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert info["vocab_size"] == read_hf_model(folder).tokenizer.vocab_size  # the imported vocabulary
    assert json.loads((run_dir / "tokenizer.json").read_text())["model"]["vocab"]

    exported = export_hf(run_dir, tmp_path / "exported")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(exported).eval()
    assert type(hf).__name__ == ("BertForMaskedLM" if kind == "bert" else "RobertaForMaskedLM")
    run = SavedRun.open(run_dir)
    backbone, head = run.rebuild_mlm()
    tokenizer = run.tokenizer()
    assert_same_logits(backbone, head, tokenizer, hf)
    original = transformers.AutoModelForMaskedLM.from_pretrained(folder)
    assert not torch.allclose(hf.get_input_embeddings().weight, original.get_input_embeddings().weight)

    if kind == "roberta":  # finetuning is the same code for both; run it once
        return
    finetune = ["+experiment=finetune", "architecture=from_pretrained", *LAUNCH, "training.max_steps=4"]
    released = [f"pretrained_experiment.hf_path={folder}", "tokenizer.tail_tokens=3"]
    launch([*finetune, "experiment.name=released", *released], tmp_path)
    assert SavedRun.open(tmp_path / "finetuning/released").tokenizer().tail_tokens == 3  # as trained
    launch([*finetune, "experiment.name=adapted", "pretrained_experiment.name=dapt"], tmp_path)
    released = json.loads((tmp_path / "finetuning/released/run.json").read_text())
    adapted = json.loads((tmp_path / "finetuning/adapted/run.json").read_text())
    assert released["pretrained_from"]["hf_source"]["path"] == str(folder.resolve())
    assert adapted["pretrained_from"]["run"] == str(run_dir)
    for name in ("released", "adapted"):
        assert (tmp_path / "finetuning" / name / "tokenizer.json").read_text() == (
            run_dir / "tokenizer.json"
        ).read_text()
        assert (tmp_path / "finetuning" / name / "results.json").is_file()


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"model_type": "gpt2"}, ["model_type 'gpt2'", "'bert'", "'roberta'"]),
        ({"hidden_act": "gelu_new"}, ["hidden_act='gelu_new'", "'bert'", "'roberta'"]),
        ({"position_embedding_type": "relative_key"}, ["position_embedding_type='relative_key'"]),
    ],
)
def test_a_model_bertlab_cannot_reproduce_is_refused_before_anything_is_written(
    hf_folders, tmp_path, config, named
):
    folder = tmp_path / "model"
    folder.mkdir()
    for file in hf_folders["bert"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    settings = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**settings, **config}))
    with pytest.raises(BertlabError) as caught:
        read_hf_model(folder)
    assert caught.value.key == "architecture.path"
    for text in named:
        assert text in caught.value.message

    if config.get("model_type") == "gpt2":  # the whole command: refused, and no file written
        output = tmp_path / "runs"
        args = ["+experiment=pretrain", "architecture=from_hf", f"architecture.path={folder}", "data=text"]
        result = launch([*args, f"data.source.train={text_file(tmp_path)}"], output, check=False)
        assert result.returncode != 0
        assert "architecture.path" in result.stderr and "model_type 'gpt2'" in result.stderr
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert not output.exists()  # no folder, no .hydra/, no cache: nothing at all


def copied_model(hf_folders, folder: Path) -> Path:
    folder.mkdir()
    for file in hf_folders["bert"].iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def test_a_folder_without_its_tokenizer_is_refused_saying_what_to_copy(hf_folders, tmp_path):
    folder = copied_model(hf_folders, tmp_path / "model")
    (folder / "vocab.txt").unlink()
    output = tmp_path / "runs"
    result = launch(["+experiment=finetune", f"pretrained_experiment.hf_path={folder}"], output, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: pretrained_experiment.hf_path: {str(folder)!r} holds no tokenizer: expected tokenizer.json or "
        f"vocab.txt; copy the model's tokenizer files (tokenizer.json, or vocab.txt with tokenizer_config.json) "
        f"into it"
    )
    assert not output.exists()


def test_unreadable_or_pickled_weights_are_named_in_one_error_line(hf_folders, tmp_path):
    truncated = copied_model(hf_folders, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    output = tmp_path / "runs"
    output.mkdir()
    args = [
        "+experiment=pretrain",
        "architecture=from_hf",
        "data=text",
        f"data.source.train={text_file(tmp_path)}",
    ]
    result = launch([*args, f"architecture.path={truncated}"], output, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: architecture.path: file '{weights}' cannot be read as weights (Error while deserializing "
        f"header: incomplete metadata, file not fully covered): it is truncated or damaged; copy or download "
        f"the model folder again"
    )
    assert not any(output.iterdir())  # no run folder, no .hydra/, no run.log

    pickled = copied_model(hf_folders, tmp_path / "pickled")
    state = load_file_tensors(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save({**state, "note": argparse.Namespace(run="code")}, pickled / "pytorch_model.bin")
    with pytest.raises(BertlabError) as caught:  # the same path as the launch above, in this process
        read_hf_model(pickled).state_dict()
    assert "weights_only" not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.message == (
        f"file '{pickled / 'pytorch_model.bin'}' is a pickle that holds objects other than tensors; bertlab "
        f"reads weights only as plain tensors and never runs code from a model file: use a folder with "
        f"model.safetensors instead"
    )


def load_file_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def base_model(hf_folders, folder: Path) -> Path:
    """The tiny BERT saved as a base model (BertModel, no MLM head), as many released encoders are."""
    folder.mkdir()
    transformers.BertForMaskedLM.from_pretrained(hf_folders["bert"]).bert.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((hf_folders["bert"] / name).read_bytes())
    return folder


def test_a_new_mlm_head_trains_alone_first_then_the_encoder_joins_gradually(hf_folders, tmp_path):
    base = base_model(hf_folders, tmp_path / "base")
    assert read_hf_model(hf_folders["bert"]).has_mlm_head and not read_hf_model(base).has_mlm_head
    steps = ["training.max_steps=5", "training.val_check_interval=5", "training.checkpoint.every_n_steps=5"]
    steps += ["training.optimizer.lr=1e-3"]
    args = ["+experiment=pretrain", "architecture=from_hf", f"architecture.path={base}", "data=text"]
    args += [f"data.source.train={text_file(tmp_path)}", "experiment.name=dapt", *LAUNCH, *steps]
    with pytest.raises(BertlabError) as caught:
        Pretraining(
            compose_config([*args, "training.head_warmup_steps=-1"], tmp_path), tmp_path / "x"
        ).resolve()
    assert (
        caught.value.key == "training.head_warmup_steps" and "auto or a non-negative" in caught.value.message
    )
    launch([*args, "training.head_warmup_steps=2", "training.scheduler.warmup_steps=1"], tmp_path)
    run_dir = tmp_path / "pretraining" / "dapt"
    log = (run_dir / "run.log").read_text()
    assert "has no MLM head (a base model): a new head starts from BERT's initialisation" in log
    assert json.loads((run_dir / "run.json").read_text())["head_warmup_steps"] == 2
    # train/lr is the encoder's rate: 0 for 2 steps, then half the schedule's (1e-3 x 1, 1, 0.75, 0.5, 0.25)
    # at the third step, then all of it
    lrs = [float(row["lr"]) for row in read_csv(run_dir / "metrics/train/metrics.csv") if row.get("lr")]
    assert lrs == pytest.approx([0.0, 0.0, 0.375e-3, 0.5e-3, 0.25e-3])
    run = SavedRun.open(run_dir, "last")
    imported = read_hf_model(base).state_dict()
    assert not all(torch.equal(run.state_dict[key], value) for key, value in imported.items())
    assert run.state_dict["head.decoder.bias"].abs().max() > 0  # the new head learned
    assert torch.equal(
        run.state_dict["head.decoder.weight"], run.state_dict["backbone.word_embeddings.weight"]
    )


def test_max_length_reaches_the_models_positions_and_no_further(hf_folders, tmp_path):
    folder = hf_folders["bert"]  # max_position_embeddings 64
    finetune = ["+experiment=finetune", f"pretrained_experiment.hf_path={folder}", "data.source.count=60"]
    cfg = compose_config([*finetune, "tokenizer.max_length=64"], tmp_path)
    assert Finetuning(cfg, tmp_path / "run").resolve().tokenizer.max_length == 64
    with pytest.raises(BertlabError) as caught:
        Finetuning(
            compose_config([*finetune, "tokenizer.max_length=65"], tmp_path), tmp_path / "run"
        ).resolve()
    assert caught.value.key == "tokenizer.max_length"
    assert f"({folder})" in caught.value.message and "at most 64" in caught.value.message

    pretrain = ["+experiment=pretrain", "architecture=from_hf", f"architecture.path={folder}", "data=text"]
    pretrain.append(f"data.source.train={text_file(tmp_path)}")
    Pretraining(compose_config([*pretrain, "tokenizer.max_length=64"], tmp_path), tmp_path / "run").resolve()
    with pytest.raises(BertlabError) as caught:
        cfg = compose_config([*pretrain, "tokenizer.max_length=65"], tmp_path)
        Pretraining(cfg, tmp_path / "run").resolve()
    assert caught.value.key == "tokenizer.max_length"
    assert f"the model in {str(folder)!r} has no positions beyond 64" in caught.value.message
    assert not (tmp_path / "run").exists()


def test_head_and_tail_truncation_keeps_the_start_and_the_end_of_a_long_text(hf_folders):
    text = " ".join(generate_documents(20, seed=1))
    full = TextTokenizer.from_file(hf_folders["bert"], max_length=64).backend.encode(text).ids
    assert len(full) > 40
    (head_only,) = TextTokenizer.from_file(hf_folders["bert"], max_length=16).encode_sequences([text])
    (head_tail,) = TextTokenizer.from_file(hf_folders["bert"], 16, tail_tokens=5).encode_sequences([text])
    assert head_only == [*full[:15], full[-1]]
    assert head_tail == [*full[:10], *full[-6:-1], full[-1]] and len(head_tail) == 16
    short = "a short one"
    assert TextTokenizer.from_file(hf_folders["bert"], 16, tail_tokens=5).encode_sequences([short]) == [
        TextTokenizer.from_file(hf_folders["bert"], 16).backend.encode(short).ids
    ]
    with pytest.raises(BertlabError) as caught:
        TextTokenizer.from_file(hf_folders["bert"], 16, tail_tokens=14)
    assert caught.value.key == "tail_tokens" and "[0, 13]" in caught.value.message
