"""Masked-language-model targets: which tokens to predict and what the model sees in their place.

A fixed number of positions per sequence is selected (round(probability x maskable tokens)), so batches
have static shapes and the head projects only those positions. Of the selected tokens, `mask_token_ratio`
become [MASK], `random_token_ratio` a random non-special token, the rest stay (BERT's 80/10/10). Special
and padding tokens are never selected.

Masking is one vectorised operation on a whole batch, run where the batch already is (the model's
device), so no per-example Python work sits between the data and the accelerator. Every draw comes from
a generator seeded by (seed, epoch, batch index, process rank): masking is reproducible and a resume
repeats it exactly, whatever the worker count.
"""

from __future__ import annotations

import torch

from bertlab.errors import BertlabError

IGNORE_INDEX = -100
_KEY_BITS = 39  # random sort keys; key * length + position is unique, so the selection has no ties
_UNMASKABLE = 1 << 62  # the key of special tokens: they sort after every maskable one
_ROLL_SCALE = 1 << 24  # the low 24 bits of each draw decide [MASK] / random / kept
_ROLL_MASK = _ROLL_SCALE - 1


def batch_generator(
    seed: int, epoch: int, batch_index: int, rank: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator on `device` whose stream depends only on (seed, epoch, batch index, rank)."""
    mixed = (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + batch_index * 0xC2B2AE3D + rank * 0x27D4EB2F) % (
        2**63 - 1
    )
    return torch.Generator(device=device).manual_seed(mixed)


class MaskingPolicy:
    """BERT masking with a fixed count of predicted positions per sequence."""

    def __init__(
        self, probability: float = 0.15, mask_token_ratio: float = 0.8, random_token_ratio: float = 0.1
    ):
        if not 0.0 < probability < 1.0:
            raise BertlabError(f"must be in (0, 1), got {probability}", "probability")
        for key, value in (
            ("mask_token_ratio", mask_token_ratio),
            ("random_token_ratio", random_token_ratio),
        ):
            if not 0.0 <= value <= 1.0:
                raise BertlabError(f"must be in [0, 1], got {value}", key)
        if mask_token_ratio + random_token_ratio > 1.0 + 1e-9:
            raise BertlabError(
                f"mask_token_ratio + random_token_ratio = {mask_token_ratio + random_token_ratio} exceeds 1",
                "random_token_ratio",
            )
        self.probability = probability
        self.mask_token_ratio = mask_token_ratio
        self.random_token_ratio = random_token_ratio

    def num_predictions(self, maskable: int) -> int:
        return max(1, round(self.probability * maskable))

    def mask_batch(
        self,
        input_ids: torch.Tensor,
        is_special: torch.Tensor,
        mask_id: int,
        replacement_ids: torch.Tensor,
        num_predictions: int,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Mask a batch [B, L] on its device. Returns input_ids [B, L], masked_positions [B, k] (ascending)
        and masked_labels [B, k], all int64.

        `is_special` is a bool table over the vocabulary (a lookup is far cheaper than `isin`);
        `replacement_ids` are the ids a random replacement draws from. The selection is the k smallest of
        unique random keys per row (special tokens keyed last), so the count is exact and every maskable
        subset of size k is equally likely. When a sequence has fewer than k maskable tokens, its missing
        slots come last, point at position 0 and carry IGNORE_INDEX, so shapes stay static. Everything is
        elementwise or a row-wise gather/top-k (no scatter): deterministic on CUDA too.
        """
        input_ids = input_ids.long()
        batch, length = input_ids.shape
        device = input_ids.device
        special = is_special[input_ids]
        bits = torch.empty((batch, length), dtype=torch.int64, device=device).random_(generator=generator)
        keys = (bits >> (63 - _KEY_BITS)) * length + torch.arange(length, device=device)
        keys = keys.masked_fill_(special, _UNMASKABLE)
        chosen = keys.topk(num_predictions, dim=1, largest=False)
        missing = chosen.values >= _UNMASKABLE
        # ascending positions, missing slots after the real ones
        positions = (chosen.indices + missing.long() * length).sort(dim=1).values
        missing = positions >= length
        positions = positions.masked_fill_(missing, 0)
        selected = (keys <= chosen.values[:, -1:]) & ~special
        # 80/10/10 from the low bits of the same draw (independent of the key's high bits)
        roll = bits & _ROLL_MASK
        to_mask = selected & (roll < round(self.mask_token_ratio * _ROLL_SCALE))
        to_random = selected & ~to_mask
        to_random &= roll < round((self.mask_token_ratio + self.random_token_ratio) * _ROLL_SCALE)
        picks = torch.randint(0, replacement_ids.numel(), (batch, length), generator=generator, device=device)
        masked = input_ids.masked_fill(to_mask, mask_id)
        masked = torch.where(to_random, replacement_ids[picks], masked)
        labels = input_ids.gather(1, positions).masked_fill_(missing, IGNORE_INDEX)
        return {"input_ids": masked, "masked_positions": positions, "masked_labels": labels}
