"""Masked-language-model targets: which tokens to predict and what the model sees in their place.

A fixed number of positions per sequence is selected (round(probability x maskable tokens)), so batches
have static shapes and the head projects only those positions. Of the selected tokens, `mask_token_ratio`
become [MASK], `random_token_ratio` a random non-special token, the rest stay (BERT's 80/10/10). Special
and padding tokens are never selected.

The unit of selection is a token (default), a whole word (`unit=word`: every piece of a chosen word is
masked together; words start where the tokenizer's vocabulary says, a per-token-id table) or a span of
whole words (`unit=span`: SpanBERT's geometric number of words, cut at `max_span`). Units are taken in a
random order while they fit the count; later units that fit `unit_slack` extra slots complete it, the
last one taken with the probability that makes the expected count exact.
`final_probability` moves the rate linearly from `probability` at the first step to it at the last
(evaluation masks at the final rate); the slots stay those of the higher rate, so shapes never change.

Masking is one vectorised operation on a whole batch, run where the batch already is (the model's
device), so no per-example Python work sits between the data and the accelerator. Every draw comes from
a generator seeded by (seed, epoch, batch index, process rank): masking is reproducible and a resume
repeats it exactly, whatever the worker count.
"""

from __future__ import annotations

import math

import torch

from bertlab.errors import BertlabError

IGNORE_INDEX = -100
_KEY_BITS = 39  # random sort keys; key * length + position is unique, so the selection has no ties
_UNMASKABLE = 1 << 62  # the key of special tokens: they sort after every maskable one
_ROLL_SCALE = 1 << 24  # the low 24 bits of each draw decide [MASK] / random / kept
_ROLL_MASK = _ROLL_SCALE - 1
UNITS = ("token", "word", "span")
_COMPLETION_PASSES = 3  # later units tried, one at a time, to complete a count the whole units left short


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
        self,
        probability: float = 0.15,
        mask_token_ratio: float = 0.8,
        random_token_ratio: float = 0.1,
        unit: str | None = None,
        final_probability: float | None = None,
        span_probability: float | None = None,
        max_span: int | None = None,
        unit_slack: float | None = None,
    ):
        """The new options are None (off) by default: runs saved before they existed resume unchanged."""
        if not 0.0 < probability < 1.0:
            raise BertlabError(f"must be in (0, 1), got {probability}", "probability")
        if final_probability is not None and not 0.0 < final_probability < 1.0:
            raise BertlabError(f"must be in (0, 1) or null, got {final_probability}", "final_probability")
        unit = unit or "token"
        if unit not in UNITS:
            raise BertlabError(f"unknown unit {unit!r}; choose one of {list(UNITS)}", "unit")
        span_probability = 0.2 if span_probability is None else span_probability
        if not 0.0 < span_probability <= 1.0:
            raise BertlabError(f"must be in (0, 1], got {span_probability}", "span_probability")
        max_span = 10 if max_span is None else max_span
        if max_span < 1:
            raise BertlabError(f"must be a positive number of words, got {max_span}", "max_span")
        unit_slack = (0.5 if unit == "span" else 0.25) if unit_slack is None else unit_slack
        if unit_slack < 0:
            raise BertlabError(f"must be non-negative, got {unit_slack}", "unit_slack")
        self.unit = unit
        self.final_probability = final_probability
        self.span_probability = span_probability
        self.max_span = max_span
        self.unit_slack = unit_slack
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

    def count(self, maskable: int, progress: float = 1.0) -> int:
        """Tokens to select of `maskable` at `progress` (0: first step, 1: last step and evaluation)."""
        probability = self.probability
        if self.final_probability is not None:
            probability += (self.final_probability - probability) * min(1.0, max(0.0, progress))
        return max(1, round(probability * maskable))

    def num_predictions(self, maskable: int) -> int:
        """Prediction slots per sequence: the count (at the higher rate of a schedule), plus the slack of
        whole units."""
        count = max(self.count(maskable, 0.0), self.count(maskable, 1.0))
        if self.unit == "token":
            return count
        return min(maskable, count + max(1, math.ceil(self.unit_slack * count)))

    @property
    def needs_word_starts(self) -> bool:
        return self.unit != "token"

    @property
    def scheduled(self) -> bool:
        return self.final_probability is not None

    def mask_batch(
        self,
        input_ids: torch.Tensor,
        is_special: torch.Tensor,
        mask_id: int,
        replacement_ids: torch.Tensor,
        num_predictions: int,
        generator: torch.Generator,
        is_word_start: torch.Tensor | None = None,
        num_selected: int | None = None,
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
        if self.unit != "token":
            if is_word_start is None:
                raise ValueError(f"unit={self.unit} needs the vocabulary's word-start table")
            selected = self._select_units(
                input_ids, special, is_word_start[input_ids], bits, num_predictions, num_selected, generator
            )
            # ascending selected positions, the unused slots after them
            ranked = torch.arange(length, device=device) + (~selected).long() * length
            positions = ranked.topk(num_predictions, dim=1, largest=False).values
            missing = positions >= length
            positions = positions.masked_fill_(missing, 0)
        else:
            keys = (bits >> (63 - _KEY_BITS)) * length + torch.arange(length, device=device)
            keys = keys.masked_fill_(special, _UNMASKABLE)
            chosen = keys.topk(num_predictions, dim=1, largest=False)
            values = chosen.values
            fewer = num_selected is not None and num_selected < num_predictions
            if fewer:  # a scheduled rate below the slots: the last slots stay unused
                values = values.clone()
                values[:, num_selected:] = _UNMASKABLE
            missing = values >= _UNMASKABLE
            # ascending positions, missing slots after the real ones
            positions = (chosen.indices + missing.long() * length).sort(dim=1).values
            missing = positions >= length
            positions = positions.masked_fill_(missing, 0)
            if not fewer:
                selected = (keys <= chosen.values[:, -1:]) & ~special
            else:
                selected = keys <= values.masked_fill(values >= _UNMASKABLE, -1).amax(1, keepdim=True)
                selected &= ~special
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

    def unit_starts(
        self, special: torch.Tensor, word_start: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """[B, L] bool: where a unit begins. Words begin at a word-start token and after a special token
        (a block may begin inside a word); a span begins at a word with probability `span_probability`
        and after `max_span` words of the same span."""
        after_special = torch.zeros_like(special)
        after_special[:, 1:] = special[:, :-1]
        forced = special | after_special
        forced[:, 0] = True
        starts = word_start | forced
        if self.unit != "span":
            return starts
        word_index = starts.long().cumsum(1)
        coin = torch.rand(starts.shape, generator=generator, device=starts.device) < self.span_probability
        natural = starts & (coin | forced)
        first_word = torch.where(natural, word_index, torch.zeros_like(word_index)).cummax(1).values
        return natural | (starts & ((word_index - first_word) % self.max_span == 0))

    def _select_units(
        self,
        input_ids: torch.Tensor,
        special: torch.Tensor,
        word_start: torch.Tensor,
        bits: torch.Tensor,
        slots: int,
        count: int | None,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """[B, L] bool: whole units (words or spans of words) in a random order while they fit `count`
        tokens; then the first later unit that fits the `slots`, with probability (count - tokens so far) /
        its length, so that the expected number is `count` (short only where no later unit fits, or after
        _COMPLETION_PASSES units each shorter than what was left)."""
        batch, length = input_ids.shape
        device = input_ids.device
        count = slots if count is None else count
        position = torch.arange(length, device=device).expand(batch, length)
        starts = self.unit_starts(special, word_start, generator)
        start_of = torch.where(starts, position, torch.zeros_like(position)).cummax(1).values
        # the next unit's start, from the right: a reversed running minimum
        next_start = torch.where(starts, position, torch.full_like(position, length))
        next_start = torch.cat([next_start[:, 1:], torch.full_like(next_start[:, :1], length)], 1)
        end_of = next_start.flip(1).cummin(1).values.flip(1)
        unit_length = end_of - start_of
        # a unit's random key and coin are those drawn at its start position
        # the key keeps clear of the low 24 bits (the 80/10/10 roll) and stays below 2^61 once shifted back
        length_bits = max(1, (length - 1).bit_length())
        key_bits = min(_KEY_BITS, 61 - 2 * length_bits)
        unit_key = (bits >> (63 - key_bits)).gather(1, start_of)
        coin = torch.rand((batch, length), generator=generator, device=device).gather(1, start_of)
        order_key = ((unit_key << length_bits) | start_of) << length_bits | position
        order_key = order_key.masked_fill_(special, _UNMASKABLE)
        order = order_key.argsort(dim=1)
        rank = order.argsort(dim=1)  # where each token sits in the random order of units
        before = rank - (position - start_of)  # tokens of earlier units in that order
        after = before + unit_length
        selected = (after <= count) & ~special  # the units that fit the count whole
        pointer = torch.where(selected, after, torch.zeros_like(after)).amax(1, keepdim=True)
        remaining = count - pointer
        none = torch.full_like(before, 2 * length)
        for _ in range(_COMPLETION_PASSES):
            # the first later unit that fits the slots, taken with probability remaining / its length: a
            # longer one ends the selection (count reached in expectation), a shorter one leaves a rest
            fits = (
                ~special
                & (before >= pointer)
                & (unit_length <= remaining + (slots - count))
                & (remaining > 0)
            )
            first = torch.where(fits, before, none).amin(1, keepdim=True)
            chosen = fits & (before == first)
            selected |= chosen & (coin * unit_length < remaining)
            chosen_length = torch.where(chosen, unit_length, torch.zeros_like(unit_length)).amax(
                1, keepdim=True
            )
            rest = (chosen_length > 0) & (chosen_length < remaining)
            remaining = torch.where(rest, remaining - chosen_length, torch.zeros_like(remaining))
            pointer = first + chosen_length
        return selected
