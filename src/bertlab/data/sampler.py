"""Epoch-seeded shuffling that yields (epoch, index) keys, or whole batches as (epoch, batch index, items)
keys, and can start in the middle of an epoch.

The order of epoch e is a permutation drawn from (seed, e) alone, so it is the same in every process and
after a resume; the keys carry the epoch (and the batch index), so randomness seeded from them (masking)
needs no shared mutable state across data-loader workers and repeats after a resume.

Under DDP each process takes every `world_size`-th item of the same order, starting at its rank. In
training all processes take the same number of items (the remainder of an epoch is left out), so every
process runs the same number of steps; evaluation keeps every item (shares may differ by one; the metrics
are synchronised at the end). `training.batch_size` is per process: the global batch is
batch_size x world_size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bertlab.data.loader_workers import resolve_num_workers


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    def __init__(
        self,
        num_items: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.even = even  # equal shares for every process (training); False keeps every item (evaluation)
        self.epoch = 0
        self.start = 0  # items of the current epoch already consumed (set when resuming mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        return torch.randperm(
            self.num_items, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        )

    def share(self, epoch: int) -> torch.Tensor:
        """This process's items of epoch `epoch`, in order."""
        end = self.num_items - self.num_items % self.world_size if self.even else self.num_items
        return self.order(epoch)[self.rank : end : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.start = 0
        for index in self.share(epoch)[start:].tolist():
            yield epoch, index

    def __len__(self) -> int:
        """Items this process sees per epoch."""
        if self.even:
            return self.num_items // self.world_size
        return len(range(self.rank, self.num_items, self.world_size))


class BatchKey(NamedTuple):
    """One batch of an epoch: its position in the epoch (which seeds its masking) and its items."""

    epoch: int
    batch_index: int
    indices: torch.Tensor


class EpochBatchSampler(Sampler[BatchKey]):
    """Whole batches of an EpochShuffleSampler's share, so a dataset can fetch a batch in one gather.

    Used with `DataLoader(batch_size=None)`: each key is one batch. `start_batch` (set when resuming
    mid-epoch) skips batches without touching them; batch indices stay those of the full epoch.
    """

    def __init__(self, items: EpochShuffleSampler, batch_size: int, drop_last: bool) -> None:
        self.items = items
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        self.items.set_epoch(epoch)

    def __iter__(self) -> Iterator[BatchKey]:
        epoch, start = self.items.epoch, self.start_batch
        self.start_batch = 0
        share = self.items.share(epoch)
        for batch_index in range(start, len(self)):
            begin = batch_index * self.batch_size
            yield BatchKey(epoch, batch_index, share[begin : begin + self.batch_size])

    def __len__(self) -> int:
        count = len(self.items)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)


def process_share(trainer: Any) -> tuple[int, int]:
    """(rank, world_size) of the Trainer a datamodule is attached to; (0, 1) before there is one."""
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int | str = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
    collate_fn=None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over this process's share of an EpochShuffleSampler, `skip_batches` into the epoch.

    It has its own generator: creating an iterator must not draw from the global RNG (dropout's stream).
    """
    num_workers = resolve_num_workers(num_workers, "cuda" if torch.cuda.is_available() else "cpu")
    sampler = EpochShuffleSampler(
        len(dataset), seed, shuffle=shuffle, rank=rank, world_size=world_size, even=shuffle
    )
    sampler.start = skip_batches * batch_size
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def epoch_batch_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """Like `epoch_loader`, but the dataset receives a whole BatchKey and returns the collated batch.

    No per-example Python work and no collate step: one `dataset[key]` call per batch. Workers, when
    asked for, are persistent and the batches pinned (for non-blocking copies to the GPU).
    """
    sampler = EpochBatchSampler(
        EpochShuffleSampler(
            len(dataset), seed, shuffle=shuffle, rank=rank, world_size=world_size, even=shuffle
        ),
        batch_size,
        drop_last,
    )
    sampler.start_batch = skip_batches
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )
