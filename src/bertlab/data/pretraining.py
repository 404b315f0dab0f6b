"""Pretraining data: documents -> cached token store -> fixed-length blocks -> masked batches.

Documents are concatenated (each ends with [SEP]) and cut into blocks of max_length - 2 tokens, wrapped in
[CLS] ... [SEP]: no padding, no attention mask, one static shape.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from bertlab.data.corpus import SPLITS
from bertlab.data.masking import MaskingPolicy, example_generator
from bertlab.data.sampler import epoch_loader, process_share
from bertlab.data.token_store import (
    TokenStore,
    build_token_store,
    load_token_store,
    prepare_once,
    save_token_store,
)
from bertlab.errors import BertlabError
from bertlab.tokenizer import TextTokenizer

log = logging.getLogger(__name__)
ENCODE_CHUNK = 10_000


class MaskedBlockDataset(Dataset):
    """Block `index` of the token stream, masked with the generator of (seed, epoch, index)."""

    def __init__(
        self,
        store: TokenStore,
        block_length: int,
        tokenizer: TextTokenizer,
        masking: MaskingPolicy,
        seed: int,
    ) -> None:
        self.ids = store.ids
        self.inner = block_length - 2
        self.num_blocks = store.ids.numel() // self.inner
        self.cls = torch.tensor([tokenizer.cls_id], dtype=store.ids.dtype)
        self.sep = torch.tensor([tokenizer.sep_id], dtype=store.ids.dtype)
        self.special_ids = torch.tensor(tokenizer.special_ids, dtype=store.ids.dtype)
        vocab = torch.arange(tokenizer.vocab_size)
        self.replacement_ids = vocab[~torch.isin(vocab, self.special_ids.long())]
        self.mask_id = tokenizer.mask_id
        self.masking = masking
        self.num_predictions = masking.num_predictions(self.inner)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        start = index * self.inner
        block = torch.cat([self.cls, self.ids[start : start + self.inner], self.sep])
        example = self.masking.apply(
            block,
            self.special_ids,
            self.mask_id,
            self.replacement_ids,
            self.num_predictions,
            example_generator(self.seed, epoch, index),
        )
        example["input_ids"] = example["input_ids"].long()
        return example


class PretrainingDataModule(L.LightningDataModule):
    """Reads the corpus, prepares (or reuses) the token stores, and serves masked blocks.

    `masking`, `batch_size` and `num_workers` are given at run time (they live in other config sections).
    """

    def __init__(
        self,
        source,
        val_ratio: float = 0.05,
        test_ratio: float = 0.05,
        cache_dir: str = "runs/.cache/datasets",
        prepared: str | None = None,
        seed: int = 0,
        masking: MaskingPolicy | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for key, value in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
            if not 0.0 <= value < 0.5:
                raise BertlabError(f"must be in [0, 0.5), got {value}", key)
        if prepared is not None and not all((Path(prepared) / f"{s}.pt").is_file() for s in SPLITS):
            raise BertlabError(
                f"folder {prepared!r} must hold train.pt, val.pt and test.pt (a prepared-dataset folder "
                f"printed by an earlier run); set data.prepared=null to build them from data.source",
                "prepared",
            )
        if batch_size < 1:
            raise BertlabError(f"must be a positive integer, got {batch_size}", "batch_size")
        self.source = source
        self.val_ratio = val_ratio
        self.test_ratio = test_ratio
        self.cache_dir = Path(cache_dir)
        self.prepared = Path(prepared) if prepared is not None else None
        self.seed = seed
        self.masking = masking or MaskingPolicy()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.tokenizer: TextTokenizer | None = None
        self.prepared_dir: Path | None = None
        self.datasets: dict[str, MaskedBlockDataset] = {}
        self.skip_train_batches = 0  # set when resuming mid-epoch
        self._documents: dict[str, list[str]] | None = None

    # -- preparation (once, in the launching process, before the Trainer exists) ------------------------
    def documents(self) -> dict[str, list[str]]:
        """Documents per split; val/test split off the training documents by ratio when not given."""
        if self._documents is None:
            splits = self.source.splits()
            train = splits["train"]
            missing = [s for s in ("val", "test") if splits[s] is None]
            if missing:
                train = list(train)
                random.Random(self.seed).shuffle(train)
                for split in missing:
                    count = max(1, round(len(splits["train"]) * getattr(self, f"{split}_ratio")))
                    splits[split], train = train[:count], train[count:]
            splits["train"] = train
            self._documents = splits
        return self._documents

    def splits_fingerprint(self) -> str:
        """Changes whenever the documents of any split may change."""
        parts = [self.source.fingerprint(), self.val_ratio, self.test_ratio, self.seed]
        return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]

    def tokenizer_cache_file(self, tokenizer: TextTokenizer) -> Path:
        """Where a vocabulary trained on these training documents with these settings is kept."""
        return (
            self.cache_dir
            / "tokenizers"
            / f"{self.splits_fingerprint()}-{tokenizer.settings_fingerprint()}.json"
        )

    def fingerprint(self, tokenizer: TextTokenizer) -> str:
        parts = [self.splits_fingerprint(), tokenizer.fingerprint()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def prepare(self, tokenizer: TextTokenizer) -> Path:
        """Build the token stores into the cache (or reuse them); returns their folder."""
        self.tokenizer = tokenizer
        if self.prepared is not None:
            self.prepared_dir = self.prepared
            return self.prepared_dir
        self.prepared_dir = self.cache_dir / self.fingerprint(tokenizer)
        prepare_once(self.prepared_dir, lambda staging: self._write(tokenizer, staging))
        self._documents = None  # training reads the memory-mapped stores; the text is not needed again
        return self.prepared_dir

    def _write(self, tokenizer: TextTokenizer, staging: Path) -> dict:
        counts = {}
        for split, documents in self.documents().items():
            encoded: list[list[int]] = []
            for start in range(0, len(documents), ENCODE_CHUNK):
                chunk = tokenizer.encode_documents(documents[start : start + ENCODE_CHUNK])
                encoded.extend([*ids, tokenizer.sep_id] for ids in chunk if ids)
            store = build_token_store(encoded, tokenizer.vocab_size)
            save_token_store(store, staging / f"{split}.pt")
            counts[split] = {"documents": store.num_documents, "tokens": int(store.ids.numel())}
        return {"splits": counts}

    # -- Lightning hooks ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None or self.prepared_dir is None:
            raise RuntimeError("call prepare(tokenizer) before setup()")
        block_length = self.tokenizer.max_length
        for split in SPLITS:
            if split in self.datasets:
                continue
            dataset = MaskedBlockDataset(
                load_token_store(self.prepared_dir / f"{split}.pt"),
                block_length,
                self.tokenizer,
                self.masking,
                self.seed,
            )
            if len(dataset) == 0:
                # val/test come from their own files, or are split off the training text by ratio
                from_files = split == "train" or bool(getattr(self.source, "paths", {}).get(split))
                raise BertlabError(
                    f"the {split} split has fewer than {block_length} tokens (tokenizer.max_length), not one "
                    f"block; {'add text' if from_files else f'add text or raise data.{split}_ratio'}, or "
                    f"lower tokenizer.max_length",
                    f"source.{split}" if from_files else f"{split}_ratio",
                )
            self.datasets[split] = dataset

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rank, world_size = process_share(self.trainer)
        return epoch_loader(
            self.datasets[split],
            self.batch_size,
            self.seed,
            shuffle=shuffle,
            num_workers=self.num_workers,
            skip_batches=self.skip_train_batches if split == "train" else 0,
            drop_last=shuffle,
            rank=rank,
            world_size=world_size,
        )

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each of `world_size` processes runs per epoch."""
        return len(self.datasets["train"]) // world_size // self.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
