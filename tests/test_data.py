"""Data pipeline: compact memory-mapped token stores, blocks without padding, cache reuse and rebuild."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from bertlab.data.chunk_encoding import BadRecords, chunk_documents
from bertlab.data.corpus import TextCorpus
from bertlab.data.masking import MaskingPolicy
from bertlab.data.mlm_datamodule import MLMDataModule
from bertlab.data.token_store import load_token_store, save_token_store, to_token_store
from bertlab.tokenizer import BPETokenizer, UnigramTokenizer, WordPieceTokenizer


def test_token_store_is_one_tensor_plus_offsets_and_memory_mapped(tmp_path):
    store = to_token_store([[5, 6, 7], [8], [9, 10]], vocab_size=300)
    assert store.ids.dtype == torch.int16 and store.offsets.tolist() == [0, 3, 4, 6]
    save_token_store(store, tmp_path / "train.pt")
    loaded = load_token_store(tmp_path / "train.pt")
    assert loaded.document(2).tolist() == [9, 10]
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "train.pt") in maps, "the store must be memory-mapped, not read into memory"


def test_prepared_shards_are_memory_mapped_and_read_as_one_dataset(tmp_path):
    corpus = tmp_path / "a.txt"
    write_corpus(corpus, [f"the fox number {i} runs over the hill near the river" for i in range(300)])
    datamodule = make_datamodule(tmp_path, corpus, shard_tokens=500, chunk_bytes=2000)
    tokenizer = fitted_tokenizer(datamodule.tokenizer_sample())
    folder = datamodule.prepare(tokenizer)
    datamodule.setup()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["shards"] > 2 and len(manifest["splits"]["train"]["shard_tokens"]) == manifest["shards"]
    assert str(folder / "train" / "00001.bin") in Path("/proc/self/maps").read_text()
    dataset = datamodule.datasets["train"]
    everything = dataset.rows(torch.arange(len(dataset)))  # gathered across every shard
    one_by_one = torch.stack([dataset.rows(torch.tensor([i]))[0] for i in range(len(dataset))])
    assert torch.equal(everything, one_by_one) and len(dataset.parts) == manifest["shards"]


def write_corpus(path, lines):
    path.write_text("\n".join(lines) + "\n")


def make_datamodule(tmp_path, train_file, num_proc=1, **kwargs):
    return MLMDataModule(
        TextCorpus(train=str(train_file)),
        val_ratio=0.1,
        test_ratio=0.1,
        cache_dir=str(tmp_path / "cache"),
        seed=0,
        masking=MaskingPolicy(),
        batch_size=4,
        num_proc=num_proc,
        **kwargs,
    )


def fitted_tokenizer(documents, cls=WordPieceTokenizer):
    tokenizer = cls(vocab_size=200, min_frequency=1, max_length=16)
    tokenizer.fit(documents)
    return tokenizer


def test_blocks_have_static_length_and_start_with_cls(tmp_path):
    corpus = tmp_path / "a.txt"
    write_corpus(corpus, [f"the fox number {i} runs over the hill near the river" for i in range(60)])
    datamodule = make_datamodule(tmp_path, corpus)
    tokenizer = fitted_tokenizer(datamodule.tokenizer_sample())
    datamodule.prepare(tokenizer)
    datamodule.setup()
    raw = next(iter(datamodule.train_dataloader()))
    assert (raw["epoch"], raw["batch_index"]) == (0, 0)  # what seeds its masking
    batch = datamodule.on_after_batch_transfer(raw, 0)  # masked where the batch lands (here the CPU)
    assert batch["input_ids"].shape == (4, 16)
    assert (batch["input_ids"][:, 0] == tokenizer.cls_id).all()
    assert (batch["input_ids"][:, -1] == tokenizer.sep_id).all()
    assert (batch["input_ids"] != tokenizer.pad_id).all()
    assert batch["masked_positions"].shape == (4, 2)  # round(0.15 * 14)


def test_prepared_datasets_are_reused_and_rebuilt_when_inputs_change(tmp_path):
    corpus = tmp_path / "a.txt"
    write_corpus(corpus, [f"a line about owls and foxes {i}" for i in range(40)])
    first = make_datamodule(tmp_path, corpus)
    tokenizer = fitted_tokenizer(first.tokenizer_sample())
    folder = first.prepare(tokenizer)
    stamp = (folder / "train" / "00000.bin").stat().st_mtime_ns
    time.sleep(0.01)
    again = make_datamodule(tmp_path, corpus)
    assert again.prepare(tokenizer) == folder
    assert (folder / "train" / "00000.bin").stat().st_mtime_ns == stamp
    write_corpus(corpus, [f"a changed line about bears {i}" for i in range(40)])
    changed = make_datamodule(tmp_path, corpus)
    assert changed.prepare(tokenizer) != folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "val", "test"}


def test_jsonl_text_field_and_explicit_splits(tmp_path):
    records = [json.dumps({"body": f"record {i} about the whale"}) for i in range(30)]
    (tmp_path / "t.jsonl").write_text("\n".join(records))
    (tmp_path / "v.txt").write_text("one\ntwo\n")
    corpus = TextCorpus(train=str(tmp_path / "t.jsonl"), val=str(tmp_path / "v.txt"), text_field="body")
    bad = BadRecords()
    train = [d for c in corpus.chunks(["train"]) for d in chunk_documents(c, "body", False, bad)]
    val = [d for c in corpus.chunks(["val"]) for d in chunk_documents(c, "body", False, bad)]
    assert train[0] == "record 0 about the whale" and len(train) == 30 and val == ["one", "two"]
    assert corpus.given_splits() == {"train", "val"} and not bad.counts


def test_every_tokenizer_registers_special_tokens_and_adds_cls_sep():
    documents = [f"the otter eats fish number {i}" for i in range(50)]
    for cls in (WordPieceTokenizer, BPETokenizer, UnigramTokenizer):
        tokenizer = fitted_tokenizer(documents, cls)
        ids = tokenizer.encode_sequences(["the otter [MASK] fish"])[0]
        assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id, cls
        assert tokenizer.mask_id in ids, cls
        assert tokenizer.special_ids == [0, 1, 2, 3, 4]


def test_a_split_smaller_than_one_batch_is_refused_before_training(tmp_path):
    from bertlab.errors import BertlabError
    from bertlab.run import run
    from tests.conftest import FAST, compose_config

    cfg = compose_config(["+experiment=pretrain", *FAST, "training.batch_size=100000"], tmp_path)
    with pytest.raises(
        BertlabError, match=r"training\.batch_size: the training split has \d+ examples, fewer"
    ):
        run(cfg, tmp_path / "pretraining" / "big_batch")
    assert not (tmp_path / "pretraining" / "big_batch" / "checkpoints").exists()
