"""Epoch-seeded shuffling that yields (epoch, index) keys and can start in the middle of an epoch.

The order of epoch e is a permutation drawn from (seed, e) alone, so it is the same in every process and
after a resume; yielding the epoch with the index lets the dataset seed per-example randomness (masking)
without shared mutable state across data-loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    def __init__(self, num_items: int, seed: int, shuffle: bool = True) -> None:
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.start = 0
        for index in self.order(epoch)[start:].tolist():
            yield epoch, index

    def __len__(self) -> int:
        return self.num_items


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_workers: int = 0,
    skip_batches: int = 0,
    drop_last: bool = False,
    collate_fn=None,
) -> DataLoader:
    """A DataLoader over an EpochShuffleSampler, starting `skip_batches` into the epoch (resume).

    It has its own generator: creating an iterator must not draw from the global RNG (dropout's stream).
    """
    sampler = EpochShuffleSampler(len(dataset), seed, shuffle=shuffle)
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
