"""The pretraining loader: one gather per batch, batch identities that survive a mid-epoch resume, workers."""

from __future__ import annotations

import pytest
import torch

from bertlab.data.loader_workers import resolve_num_workers
from bertlab.data.mlm_datamodule import BlockDataset
from bertlab.data.sampler import epoch_batch_loader
from bertlab.data.token_store import TokenStore
from bertlab.errors import BertlabError


class CountingBlocks(BlockDataset):
    calls = 0

    def __getitem__(self, key):
        CountingBlocks.calls += 1
        return super().__getitem__(key)


def blocks(num_blocks: int = 40, length: int = 8) -> CountingBlocks:
    ids = torch.arange(5, 5 + num_blocks * (length - 2), dtype=torch.int16)
    return CountingBlocks(TokenStore(ids=ids, offsets=torch.tensor([0, ids.numel()])), length, 2, 3)


def test_each_batch_is_one_dataset_call_of_whole_blocks():
    dataset = blocks()
    CountingBlocks.calls = 0
    batches = list(epoch_batch_loader(dataset, 4, seed=0, shuffle=True, drop_last=True))
    assert len(batches) == 10 and CountingBlocks.calls == 10  # no per-example calls
    seen = []
    for index, batch in enumerate(batches):
        assert (batch["epoch"], batch["batch_index"]) == (0, index)
        ids = batch["input_ids"]
        assert ids.shape == (4, 8) and (ids[:, 0] == 2).all() and (ids[:, -1] == 3).all()
        seen += ((ids[:, 1] - 5) // 6).tolist()  # the block each row is
        assert torch.equal(ids[:, 1:-1], (ids[:, 1:2] + torch.arange(6)).to(ids.dtype))  # contiguous slices
    assert sorted(seen) == list(range(40)) and seen != list(range(40))  # every block once, shuffled


def test_resuming_mid_epoch_yields_the_same_batches_with_the_same_indices():
    full = list(epoch_batch_loader(blocks(), 4, seed=3, shuffle=True, drop_last=True))
    resumed = list(epoch_batch_loader(blocks(), 4, seed=3, shuffle=True, drop_last=True, skip_batches=6))
    assert [b["batch_index"] for b in resumed] == [6, 7, 8, 9]
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(full[6:], resumed, strict=True))


def test_processes_share_an_epoch_without_overlap():
    shares = [
        list(epoch_batch_loader(blocks(), 4, seed=0, shuffle=True, drop_last=True, rank=r, world_size=2))
        for r in (0, 1)
    ]
    rows = [set(torch.cat([b["input_ids"][:, 1] for b in share]).tolist()) for share in shares]
    assert len(shares[0]) == len(shares[1]) == 5 and not rows[0] & rows[1]


def test_auto_workers_none_on_cpu_a_few_on_cuda(monkeypatch):
    import bertlab.data.loader_workers as workers

    assert resolve_num_workers("auto", "cpu") == 0
    monkeypatch.setattr(workers, "available_cpus", lambda: 16)
    assert resolve_num_workers("auto", "cuda") == 4
    assert resolve_num_workers("auto", "cuda", processes_per_node=8) == 1
    monkeypatch.setattr(workers, "available_cpus", lambda: 1)
    assert resolve_num_workers("auto", "cuda") == 0
    assert resolve_num_workers(3, "cuda") == 3
    for bad in (-1, "many", True):
        with pytest.raises(BertlabError, match="num_workers: must be auto or a non-negative integer"):
            resolve_num_workers(bad, "cpu")
