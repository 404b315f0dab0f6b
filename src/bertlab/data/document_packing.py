"""Document-aware packing: which document of a block each token belongs to, read from the block itself.

A pretraining block is a window of the prepared stream (every document followed by [SEP]) wrapped in
[CLS] ... [SEP], so it usually holds the end of one document, some whole ones and the start of another.
With `data.packing=documents` the encoder keeps each document to itself: tokens attend only within their
document and positions restart at 0 for each (bertlab.model.encoder). The document ids need no stored
field: they are counted from the [SEP] tokens on the device, one cumulative sum per batch.
"""

from __future__ import annotations

import torch

from bertlab.errors import BertlabError

PACKINGS = ("plain", "documents")  # plain: a block is one sequence; documents: each document on its own


def check_packing(packing: str | None) -> str:
    """`packing` if it is one of PACKINGS (None: plain, the config's default, so that runs saved before the
    option existed resume with an unchanged config); a BertlabError naming `packing` otherwise."""
    if packing is None:
        return "plain"
    if packing not in PACKINGS:
        raise BertlabError(f"must be one of {PACKINGS} or null (plain), got {packing!r}", "packing")
    return packing


def document_ids(input_ids: torch.Tensor, sep_id: int) -> torch.Tensor:
    """Per token of blocks [batch, tokens]: the number of [SEP] tokens before it (int64, same shape).

    The [SEP] that closes a document belongs to it, and the leading [CLS] (with a document cut at the
    block's start) to the first one; ids are 0, 1, ... in each row, non-decreasing. Masking never picks
    or produces [SEP], so ids counted before or after masking agree.
    """
    is_sep = input_ids == sep_id
    return torch.cumsum(is_sep, dim=1) - is_sep.long()
