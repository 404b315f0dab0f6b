"""Masking a pretraining batch after it reaches the model's device.

The loader hands over unmasked blocks plus the batch's identity (epoch, index within the epoch); this
turns them into MLM inputs and targets with one vectorised pass on the device, seeded from (seed, epoch,
batch index, process rank). Keeping the identity in the batch (plain ints, never moved or synced) means the
same batch is masked the same way after a resume or with any number of loader workers.
"""

from __future__ import annotations

from typing import Any

import torch

from bertlab.data.masking import MaskingPolicy, batch_generator


class BatchMasker:
    """Applies `policy` to batches of full-length blocks; caches the token-id tables per device."""

    def __init__(
        self,
        policy: MaskingPolicy,
        special_ids: list[int],
        mask_id: int,
        vocab_size: int,
        num_predictions: int,
        seed: int,
        word_starts: list[bool] | None = None,
        maskable: int | None = None,
    ) -> None:
        """`word_starts` (per token id: does it begin a word) is needed by whole-word and span masking;
        `maskable` (tokens per block that may be masked) by a masking-rate schedule."""
        self.policy = policy
        self.is_word_start = None if word_starts is None else torch.tensor(word_starts, dtype=torch.bool)
        self.maskable = maskable
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[torch.tensor(special_ids, dtype=torch.long)] = True
        self.replacement_ids = torch.arange(vocab_size)[~self.is_special]
        self.mask_id = mask_id
        self.num_predictions = num_predictions
        self.seed = seed
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if device not in self._tables:
            word_starts = None if self.is_word_start is None else self.is_word_start.to(device)
            self._tables[device] = (self.is_special.to(device), self.replacement_ids.to(device), word_starts)
        return self._tables[device]

    def __call__(
        self, batch: dict[str, Any], rank: int = 0, progress: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """`batch` holds input_ids [B, L] and the ints `epoch` and `batch_index`; returns the MLM batch.

        `progress` (0 at the first training step, 1 at the last and in evaluation) sets a scheduled rate.
        """
        input_ids = batch["input_ids"]
        is_special, replacement_ids, word_starts = self._on(input_ids.device)
        generator = batch_generator(
            self.seed, int(batch["epoch"]), int(batch["batch_index"]), rank, input_ids.device
        )
        extra: dict[str, Any] = {}
        if word_starts is not None:
            extra["is_word_start"] = word_starts
        if (self.policy.scheduled or self.policy.unit != "token") and self.maskable is not None:
            extra["num_selected"] = self.policy.count(self.maskable, progress)
        return self.policy.mask_batch(
            input_ids, is_special, self.mask_id, replacement_ids, self.num_predictions, generator, **extra
        )
