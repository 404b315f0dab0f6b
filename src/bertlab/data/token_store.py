"""The prepared-dataset format: one contiguous integer tensor of token ids plus document offsets.

Saved with torch.save and loaded with `mmap=True`, so a run reads only the pages it touches and a large
corpus is never copied into memory. Writes go to a temporary file that is renamed into place.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bertlab.atomic_write import replacing_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class TokenStore:
    ids: torch.Tensor  # [total_tokens], int16 or int32
    offsets: torch.Tensor  # [documents + 1], int64: document d is ids[offsets[d]:offsets[d + 1]]

    @property
    def num_documents(self) -> int:
        return self.offsets.numel() - 1

    def document(self, index: int) -> torch.Tensor:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]


def id_dtype(vocab_size: int) -> torch.dtype:
    return torch.int16 if vocab_size <= torch.iinfo(torch.int16).max + 1 else torch.int32


def to_token_store(documents: list[list[int]], vocab_size: int) -> TokenStore:
    lengths = torch.tensor([0] + [len(d) for d in documents], dtype=torch.int64)
    ids = torch.tensor(list(itertools.chain.from_iterable(documents)), dtype=torch.int64).to(
        id_dtype(vocab_size)
    )
    return TokenStore(ids=ids, offsets=torch.cumsum(lengths, 0))


def save_token_store(store: TokenStore, path: str | Path) -> None:
    with replacing_path(path) as temporary:
        torch.save({"format": FORMAT_VERSION, "ids": store.ids, "offsets": store.offsets}, temporary)


def load_token_store(path: str | Path) -> TokenStore:
    """Memory-maps the file: only the slices used are read from disk."""
    payload = torch.load(path, mmap=True, weights_only=True)
    if payload.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: prepared-dataset format {payload.get('format')} != {FORMAT_VERSION}; delete it"
        )
    return TokenStore(ids=payload["ids"], offsets=payload["offsets"])


def prepare_once(target: Path, write: Callable[[Path], dict]) -> None:
    """Build a prepared-dataset folder once: reuse `target` if complete, else `write(staging)` and publish.

    `write` fills a private staging folder and returns the manifest; the folder is renamed into place only
    when complete, so a crash never leaves a half-prepared dataset that a later run would trust.
    """
    if (target / "manifest.json").is_file():
        log.info("Reusing prepared datasets in %s", target)
        return
    log.info("Preparing datasets into %s", target)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    manifest = write(staging)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    try:
        os.replace(staging, target)
    except OSError:  # another process prepared the same datasets meanwhile
        shutil.rmtree(staging, ignore_errors=True)
