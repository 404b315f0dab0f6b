"""Whole-word and span masking for the three tokenizer kinds, and the masking-rate schedule."""

from __future__ import annotations

import pytest
import torch

from bertlab.data.batch_masking import BatchMasker
from bertlab.data.embedded_corpus import generate_documents
from bertlab.data.masking import IGNORE_INDEX, MaskingPolicy
from bertlab.errors import BertlabError
from bertlab.tokenizer import BPETokenizer, UnigramTokenizer, WordPieceTokenizer

LENGTH = 64
KINDS = {WordPieceTokenizer: "wordpiece", BPETokenizer: "bpe", UnigramTokenizer: "unigram"}
VOCAB = {WordPieceTokenizer: 250, BPETokenizer: 400, UnigramTokenizer: 250}  # byte-level BPE: 256 + merges


@pytest.fixture(scope="module", params=list(KINDS), ids=list(KINDS.values()))
def tokenized(request):
    """A tiny tokenizer of the kind trained on the embedded corpus, and 32 blocks as the loader cuts them."""
    documents = generate_documents(600, seed=3)
    tokenizer = request.param(vocab_size=VOCAB[request.param], max_length=LENGTH)
    tokenizer.fit(documents)
    stream = [i for ids in tokenizer.encode_documents(documents) for i in [*ids, tokenizer.sep_id]]
    inner = LENGTH - 2
    blocks = torch.tensor(stream[: 32 * inner]).view(32, inner)
    ids = torch.cat([torch.full((32, 1), tokenizer.cls_id), blocks, torch.full((32, 1), tokenizer.sep_id)], 1)
    return tokenizer, ids


def words_of(tokenizer, ids: torch.Tensor) -> list[list[int]]:
    """Word number of each position, from the token strings (an independent reading of the markers)."""
    special = set(tokenizer.special_ids)
    rows = []
    for row in ids.tolist():
        word, numbers, previous_special = -1, [], True
        for token_id in row:
            token = tokenizer.backend.id_to_token(token_id)
            if isinstance(tokenizer, WordPieceTokenizer):
                starts = not token.startswith("##")
            else:
                starts = token.startswith("Ġ" if isinstance(tokenizer, BPETokenizer) else "▁")
            if starts or previous_special or token_id in special:
                word += 1
            previous_special = token_id in special
            numbers.append(word)
        rows.append(numbers)
    return rows


def masker(tokenizer, policy: MaskingPolicy, seed: int = 0) -> BatchMasker:
    return BatchMasker(
        policy,
        tokenizer.special_ids,
        tokenizer.mask_id,
        tokenizer.vocab_size,
        policy.num_predictions(LENGTH - 2),
        seed,
        word_starts=tokenizer.word_starts() if policy.needs_word_starts else None,
        maskable=LENGTH - 2,
    )


def selected_positions(out: dict[str, torch.Tensor]) -> list[set[int]]:
    counted = out["masked_labels"] != IGNORE_INDEX
    return [set(out["masked_positions"][row][counted[row]].tolist()) for row in range(counted.shape[0])]


@pytest.mark.parametrize("unit", ["word", "span"])
def test_whole_units_never_split_a_word_nor_touch_special_tokens(tokenized, unit):
    tokenizer, ids = tokenized
    mask = masker(tokenizer, MaskingPolicy(0.15, unit=unit))
    words = words_of(tokenizer, ids)
    special = torch.isin(ids, torch.tensor(tokenizer.special_ids))
    assert tokenizer.word_starts().count(False) > 10  # the vocabulary does split words
    split_seen = False
    for index in range(4):
        out = mask({"input_ids": ids, "epoch": 0, "batch_index": index})
        for row, chosen in enumerate(selected_positions(out)):
            assert not special[row, sorted(chosen)].any()
            chosen_words = {words[row][p] for p in chosen}
            members = {p for p, w in enumerate(words[row]) if w in chosen_words}
            assert members == chosen, f"a word was split in row {row}"
            split_seen |= any(words[row].count(w) > 1 for w in chosen_words)
            unchanged = [p for p in range(LENGTH) if p not in chosen]
            assert torch.equal(out["input_ids"][row, unchanged], ids[row, unchanged])
    assert split_seen  # multi-piece words were among the chosen


@pytest.mark.parametrize(("unit", "tolerance"), [("word", 0.03), ("span", 0.1)])
def test_whole_units_mask_the_configured_share_in_expectation(tokenized, unit, tolerance):
    """Words of this tiny vocabulary are often several pieces long, and spans longer still."""
    tokenizer, ids = tokenized
    policy = MaskingPolicy(0.15, unit=unit)
    mask = masker(tokenizer, policy)
    counted = 0
    for index in range(40):
        out = mask({"input_ids": ids, "epoch": 0, "batch_index": index})
        counted += int((out["masked_labels"] != IGNORE_INDEX).sum())
    share = counted / (40 * ids.shape[0])
    assert abs(share - policy.count(LENGTH - 2)) < tolerance * policy.count(LENGTH - 2)
    assert out["masked_positions"].shape == (32, policy.num_predictions(LENGTH - 2))  # static slots


def test_same_masks_for_the_same_seed_epoch_batch_and_rank(tokenized):
    tokenizer, ids = tokenized
    for unit in ("word", "span"):
        mask = masker(tokenizer, MaskingPolicy(0.15, unit=unit, final_probability=0.3))
        batch = {"input_ids": ids, "epoch": 1, "batch_index": 2}
        first, again = mask(batch, rank=1, progress=0.5), mask(batch, rank=1, progress=0.5)
        assert all(torch.equal(first[key], again[key]) for key in first)
        for other in ({**batch, "batch_index": 3}, {**batch, "epoch": 2}):
            assert not torch.equal(
                mask(other, rank=1, progress=0.5)["masked_positions"], first["masked_positions"]
            )
        assert not torch.equal(
            mask(batch, rank=0, progress=0.5)["masked_positions"], first["masked_positions"]
        )


def test_span_lengths_follow_the_geometric_law_and_the_cap():
    special = torch.zeros(8, 4096, dtype=torch.bool)
    every_token_a_word = torch.ones_like(special)
    generator = torch.Generator().manual_seed(0)
    free = MaskingPolicy(unit="span", span_probability=0.25, max_span=10_000)
    starts = free.unit_starts(special, every_token_a_word, generator)
    lengths = torch.diff(starts.nonzero()[:, 1])
    lengths = lengths[lengths > 0].float()
    assert abs(lengths.mean().item() - 4.0) < 0.2  # geometric with p = 0.25: mean 1 / p
    capped = MaskingPolicy(unit="span", span_probability=0.05, max_span=3)
    starts = capped.unit_starts(special, every_token_a_word, generator)
    gaps = torch.diff(starts[0].nonzero()[:, 0])
    assert gaps.max().item() == 3 and (gaps == 3).float().mean() > 0.8
    # spans count words: a word of two pieces is one word of the span
    words = torch.tensor([[True, False] * 2048])
    starts = MaskingPolicy(unit="span", span_probability=0.05, max_span=2).unit_starts(
        special[:1], words, generator
    )
    assert torch.diff(starts[0].nonzero()[:, 0]).max().item() == 4


def test_rate_schedule_moves_from_start_to_end_with_static_slots(tokenized):
    tokenizer, ids = tokenized
    for unit in ("token", "word"):
        policy = MaskingPolicy(0.3, unit=unit, final_probability=0.15)
        mask = masker(tokenizer, policy)
        assert policy.count(LENGTH - 2, 0.0) == round(0.3 * 62) and policy.count(LENGTH - 2, 1.0) == round(
            0.15 * 62
        )
        shares = {}
        for progress in (0.0, 1.0):
            counted = 0
            for index in range(20):
                out = mask({"input_ids": ids, "epoch": 0, "batch_index": index}, progress=progress)
                assert out["masked_positions"].shape[1] == policy.num_predictions(LENGTH - 2)
                counted += int((out["masked_labels"] != IGNORE_INDEX).sum())
            shares[progress] = counted / (20 * ids.shape[0] * (LENGTH - 2))
        assert shares[0.0] == pytest.approx(0.3, abs=0.02) and shares[1.0] == pytest.approx(0.15, abs=0.015)


def test_token_unit_and_null_options_mask_as_before(tokenized):
    tokenizer, ids = tokenized
    batch = {"input_ids": ids, "epoch": 0, "batch_index": 5}
    before = masker(tokenizer, MaskingPolicy())(batch)
    explicit = masker(tokenizer, MaskingPolicy(0.15, 0.8, 0.1, unit="token", final_probability=None))(batch)
    assert all(torch.equal(before[key], explicit[key]) for key in before)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"unit": "sentence"}, "unit"),
        ({"final_probability": 1.0}, "final_probability"),
        ({"unit": "span", "span_probability": 0.0}, "span_probability"),
        ({"unit": "span", "max_span": 0}, "max_span"),
        ({"unit": "word", "unit_slack": -1}, "unit_slack"),
    ],
)
def test_invalid_masking_options_name_the_parameter(kwargs, key):
    with pytest.raises(BertlabError) as caught:
        MaskingPolicy(**kwargs)
    assert caught.value.key == key
