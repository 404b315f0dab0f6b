"""Masked-language-model targets: which tokens to predict and what the model sees in their place.

A fixed number of positions per sequence is selected (round(probability x maskable tokens)), so batches
have static shapes and the head projects only those positions. Of the selected tokens, `mask_token_ratio`
become [MASK], `random_token_ratio` a random non-special token, the rest stay (BERT's 80/10/10). Special
and padding tokens are never selected. Every draw comes from a generator seeded by (seed, epoch, example),
so masking is reproducible and resumes exactly, whatever the worker count.
"""

from __future__ import annotations

import torch

from bertlab.errors import BertlabError

IGNORE_INDEX = -100


def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch, example index)."""
    mixed = (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


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

    def apply(
        self,
        input_ids: torch.Tensor,
        special_ids: torch.Tensor,
        mask_id: int,
        replacement_ids: torch.Tensor,
        num_predictions: int,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Mask one sequence. Returns input_ids, masked_positions [k] and masked_labels [k].

        When a sequence has fewer than k maskable tokens, the missing slots point at position 0 with label
        IGNORE_INDEX, so shapes stay static.
        """
        maskable = torch.nonzero(~torch.isin(input_ids, special_ids)).squeeze(1)
        order = torch.randperm(maskable.numel(), generator=generator)[:num_predictions]
        positions = maskable[order].sort().values
        labels = input_ids[positions].long()
        masked = input_ids.clone()
        roll = torch.rand(positions.numel(), generator=generator)
        to_mask = roll < self.mask_token_ratio
        to_random = (roll >= self.mask_token_ratio) & (roll < self.mask_token_ratio + self.random_token_ratio)
        masked[positions[to_mask]] = mask_id
        random_picks = torch.randint(replacement_ids.numel(), (positions.numel(),), generator=generator)
        masked[positions[to_random]] = replacement_ids[random_picks[to_random]].to(masked.dtype)
        missing = num_predictions - positions.numel()
        if missing > 0:
            positions = torch.cat([positions, positions.new_zeros(missing)])
            labels = torch.cat([labels, labels.new_full((missing,), IGNORE_INDEX)])
        return {"input_ids": masked, "masked_positions": positions, "masked_labels": labels}
