"""Validation and test read a bounded, fixed subset of their split (data.eval_tokens), or all of it."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from bertlab.data.mlm_datamodule import BlockDataset, MLMDataModule, evenly_spaced
from bertlab.data.sampler import epoch_batch_loader
from bertlab.data.token_store import TokenStore
from bertlab.errors import BertlabError
from bertlab.run import run
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import FAST, compose_config, read_csv
from tests.test_resume import interrupt_at, weights

LENGTH = 64  # FAST's tokenizer.max_length
CAP_BLOCKS = 10


def recorded_run(monkeypatch, tmp_path, name: str, *overrides: str) -> tuple[dict, dict]:
    """A real pretraining run (in this process); returns the blocks each evaluation read, and run.json.

    The rows are recorded where the datamodule hands a batch to the model, before masking, so they
    identify the blocks themselves.
    """
    seen: dict[tuple[str, int], list[tuple[int, ...]]] = defaultdict(list)
    original = MLMDataModule.on_after_batch_transfer

    def recording(self, batch, dataloader_idx):
        trainer = self.trainer
        if trainer.validating or trainer.testing:
            stage = "val" if trainer.validating else "test"
            seen[(stage, trainer.global_step)] += [tuple(row) for row in batch["input_ids"].tolist()]
        return original(self, batch, dataloader_idx)

    monkeypatch.setattr(MLMDataModule, "on_after_batch_transfer", recording)
    args = [
        "+experiment=pretrain",
        f"experiment.name={name}",
        *FAST,
        "training.max_steps=2",
        "training.val_check_interval=1",
        "training.precision=32-true",
        *overrides,
    ]
    run_dir = tmp_path / "pretraining" / name
    run(compose_config(args, tmp_path), run_dir)
    monkeypatch.setattr(MLMDataModule, "on_after_batch_transfer", original)
    evaluations = [(row["stage"], int(row["step"])) for row in read_csv(run_dir / "metrics/eval/metrics.csv")]
    assert sorted(evaluations) == sorted(seen), "one eval row per evaluation the model ran"
    return dict(seen), json.loads((run_dir / "run.json").read_text())["evaluation"]


def test_each_evaluation_reads_the_same_capped_blocks_and_all_reads_the_whole_split(monkeypatch, tmp_path):
    cap = f"data.eval_tokens={CAP_BLOCKS * LENGTH}"
    capped, info = recorded_run(monkeypatch, tmp_path, "capped", cap)
    assert sorted(capped) == [("test", 2), ("val", 0), ("val", 1), ("val", 2)]
    for stage in ("val", "test"):
        recorded = info[stage]
        assert recorded["capped"] and recorded["blocks"] == CAP_BLOCKS
        assert recorded["tokens"] == CAP_BLOCKS * LENGTH and recorded["split_blocks"] > 3 * CAP_BLOCKS
    val = [capped[("val", step)] for step in (0, 1, 2)]
    assert all(len(rows) == CAP_BLOCKS and len(set(rows)) == CAP_BLOCKS for rows in val)
    assert val[0] == val[1] == val[2], "the same blocks, in the same order, at every evaluation"
    assert len(capped[("test", 2)]) == CAP_BLOCKS and set(capped[("test", 2)]) != set(val[0])

    other_batch, _ = recorded_run(monkeypatch, tmp_path, "batch3", cap, "training.batch_size=3")
    assert other_batch[("val", 0)] == val[0] and other_batch[("test", 2)] == capped[("test", 2)]

    whole, whole_info = recorded_run(monkeypatch, tmp_path, "whole", "data.eval_tokens=all")
    for stage, step in (("val", 0), ("test", 2)):
        assert not whole_info[stage]["capped"]
        assert len(whole[(stage, step)]) == whole_info[stage]["blocks"] == info[stage]["split_blocks"]
        assert set(capped[(stage, step)]) < set(whole[(stage, step)]), "the capped blocks are the split's"


def test_the_capped_subset_spreads_over_the_split_and_processes_share_it():
    length, total = 8, 103
    ids = torch.arange(total * (length - 2), dtype=torch.int32)
    whole = BlockDataset(TokenStore(ids, torch.tensor([0, ids.numel()])), length, -1, -2)
    capped = BlockDataset(TokenStore(ids, torch.tensor([0, ids.numel()])), length, -1, -2, max_blocks=10)
    assert len(whole) == total and whole.selected is None and len(capped) == 10
    chosen = evenly_spaced(total, 10).tolist()
    assert chosen[0] == 0 and chosen[-1] > 0.85 * total and len(set(chosen)) == 10
    assert torch.equal(capped.rows(torch.arange(10)), whole.rows(torch.tensor(chosen)))

    def blocks(batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
        loader = epoch_batch_loader(capped, batch_size, 0, shuffle=False, rank=rank, world_size=world_size)
        return [int(row[1]) // (length - 2) for batch in loader for row in batch["input_ids"]]

    assert blocks(3) == blocks(4) == chosen
    assert sorted(blocks(3, 0, 2) + blocks(3, 1, 2)) == chosen  # DDP: every process a share, all covered


def test_a_capped_run_resumes_exactly(monkeypatch, tmp_path):
    settings = [
        *FAST,
        "training.max_steps=10",
        "training.val_check_interval=4",
        "training.checkpoint.every_n_steps=5",
        "training.precision=32-true",
        f"data.eval_tokens={CAP_BLOCKS * LENGTH}",
    ]
    straight, cut = tmp_path / "pretraining" / "straight", tmp_path / "pretraining" / "cut"
    run(compose_config(["+experiment=pretrain", "experiment.name=straight", *settings], tmp_path), straight)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 6)
        with pytest.raises(TrainingInterrupted):
            run(compose_config(["+experiment=pretrain", "experiment.name=cut", *settings], tmp_path), cut)
    resumed = ["+experiment=pretrain", "experiment.name=cut", *settings, "training.resume.is_resume=true"]
    run(compose_config(resumed, tmp_path), cut)
    rows = [read_csv(folder / "metrics/eval/metrics.csv") for folder in (straight, cut)]
    assert [(r["stage"], r["step"], r["loss"]) for r in rows[0]] == [
        (r["stage"], r["step"], r["loss"]) for r in rows[1]
    ]
    assert [r["step"] for r in rows[0]] == ["0", "4", "8", "10", "10"]
    assert all(
        torch.equal(a, b) for a, b in zip(weights(straight).values(), weights(cut).values(), strict=True)
    )
    info = json.loads((cut / "run.json").read_text())["evaluation"]
    assert info["val"]["capped"] and info["val"]["blocks"] == CAP_BLOCKS


@pytest.mark.parametrize("value", [0, -5, "some", 1.5, True])
def test_a_wrong_cap_names_the_key(value):
    with pytest.raises(BertlabError, match=r"eval_tokens.*positive number of tokens, or null/all"):
        MLMDataModule(source=None, eval_tokens=value)
