"""MLM masking: fixed count, never special tokens, 80/10/10, reproducible from the seed."""

from __future__ import annotations

import pytest
import torch

from bertlab.data.masking import IGNORE_INDEX, MaskingPolicy, batch_generator
from bertlab.errors import BertlabError

SPECIAL = torch.tensor([0, 1, 2, 3, 4])
IS_SPECIAL = torch.isin(torch.arange(100), SPECIAL)  # the lookup table batch masking takes
MASK_ID = 4
REPLACEMENTS = torch.arange(5, 100)


def mask_one(policy, ids, k, generator):
    """Masks `ids` as a batch of one; the per-sequence view of the batch result."""
    out = policy.mask_batch(ids.unsqueeze(0), IS_SPECIAL, MASK_ID, REPLACEMENTS, k, generator)
    return {key: value[0] for key, value in out.items()}


def sequence(length: int = 64) -> torch.Tensor:
    ids = torch.randint(5, 100, (length,), generator=torch.Generator().manual_seed(1))
    ids[0], ids[20], ids[-1] = 2, 3, 3  # [CLS], a document separator, [SEP]
    return ids


def test_fixed_count_and_special_tokens_never_selected():
    policy = MaskingPolicy(0.15)
    ids = sequence()
    for index in range(50):
        out = mask_one(policy, ids, 9, batch_generator(0, 0, index))
        positions = out["masked_positions"]
        assert positions.shape == (9,) and positions.unique().numel() == 9
        assert not torch.isin(ids[positions], SPECIAL).any()
        assert torch.equal(out["masked_labels"], ids[positions])
        unselected = torch.ones_like(ids, dtype=torch.bool)
        unselected[positions] = False
        assert torch.equal(out["input_ids"][unselected], ids[unselected])


def test_replacement_shares_follow_80_10_10():
    policy = MaskingPolicy(0.15, mask_token_ratio=0.8, random_token_ratio=0.1)
    ids = sequence(200)
    masked = kept = 0
    total = 0
    for index in range(400):
        out = mask_one(policy, ids, 30, batch_generator(3, 1, index))
        seen = out["input_ids"][out["masked_positions"]]
        masked += int((seen == MASK_ID).sum())
        kept += int((seen == out["masked_labels"]).sum())
        total += seen.numel()
    assert abs(masked / total - 0.8) < 0.02
    # unchanged = the 10 % kept plus random draws that hit the original token (1/95 of 10 %)
    assert abs(kept / total - 0.1) < 0.02


def test_reproducible_from_seed_epoch_and_batch_index():
    policy = MaskingPolicy()
    ids = sequence()
    first = mask_one(policy, ids, 9, batch_generator(7, 2, 5))
    again = mask_one(policy, ids, 9, batch_generator(7, 2, 5))
    other_epoch = mask_one(policy, ids, 9, batch_generator(7, 3, 5))
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["masked_positions"], other_epoch["masked_positions"])


def test_short_sequences_pad_predictions_with_ignored_labels():
    ids = torch.tensor([2, 50, 51, 3, 0, 0])
    out = mask_one(MaskingPolicy(), ids, 4, batch_generator(0, 0, 0))
    assert out["masked_positions"].shape == (4,)
    assert (out["masked_labels"] == IGNORE_INDEX).sum() == 2


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"probability": 1.0}, "probability"),
        ({"mask_token_ratio": 0.8, "random_token_ratio": 0.3}, "random_token_ratio"),
    ],
)
def test_invalid_policies_name_the_parameter(kwargs, key):
    with pytest.raises(BertlabError) as caught:
        MaskingPolicy(**kwargs)
    assert caught.value.key == key


def test_batch_masking_is_per_row_and_seeded_by_epoch_batch_and_rank():
    policy = MaskingPolicy()
    ids = torch.stack([sequence(), sequence(), torch.tensor([2, 50, 51, 3] + [0] * 60)])
    out = policy.mask_batch(ids, IS_SPECIAL, MASK_ID, REPLACEMENTS, 9, batch_generator(1, 2, 3, rank=0))
    for row in range(2):  # full rows: 9 distinct, ascending, non-special positions
        positions = out["masked_positions"][row]
        assert torch.equal(positions, positions.unique())
        assert not torch.isin(ids[row, positions], SPECIAL).any()
    assert not torch.equal(out["masked_positions"][0], out["masked_positions"][1])  # rows draw apart
    assert out["masked_positions"][2].tolist() == [1, 2] + [0] * 7  # the short row: real slots first
    assert (out["masked_labels"][2] == IGNORE_INDEX).sum() == 7
    assert torch.equal(out["input_ids"][2, 3:], ids[2, 3:])  # specials and padding untouched
    same = policy.mask_batch(ids, IS_SPECIAL, MASK_ID, REPLACEMENTS, 9, batch_generator(1, 2, 3, rank=0))
    assert all(torch.equal(out[key], same[key]) for key in out)
    for other in (batch_generator(1, 2, 4, rank=0), batch_generator(1, 2, 3, rank=1)):
        moved = policy.mask_batch(ids, IS_SPECIAL, MASK_ID, REPLACEMENTS, 9, other)
        assert not torch.equal(moved["masked_positions"][:2], out["masked_positions"][:2])
