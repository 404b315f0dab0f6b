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
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from bertlab.data.batch_masking import BatchMasker
from bertlab.data.corpus import SPLITS
from bertlab.data.loader_workers import resolve_num_workers
from bertlab.data.masking import MaskingPolicy
from bertlab.data.sampler import BatchKey, epoch_batch_loader, process_share
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


class BlockDataset(Dataset):
    """Fixed-length blocks of the token stream, served a whole batch at a time.

    `dataset[BatchKey]` is one row gather from the memory-mapped store (the blocks are a [num_blocks,
    length - 2] view of it) plus the [CLS]/[SEP] columns; ids keep the store's compact dtype (converted
    on the device). The batch carries its epoch and batch index, which seed its masking there
    (bertlab.data.batch_masking).
    """

    def __init__(self, store: TokenStore, block_length: int, cls_id: int, sep_id: int) -> None:
        self.inner = block_length - 2
        self.num_blocks = store.ids.numel() // self.inner
        self.blocks = store.ids[: self.num_blocks * self.inner].view(self.num_blocks, self.inner)
        self.cls_id, self.sep_id = cls_id, sep_id

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, key: BatchKey) -> dict[str, Any]:
        rows = self.blocks.index_select(0, key.indices)
        input_ids = rows.new_empty((rows.shape[0], self.inner + 2))
        input_ids[:, 0] = self.cls_id
        input_ids[:, 1:-1] = rows
        input_ids[:, -1] = self.sep_id
        return {"input_ids": input_ids, "epoch": key.epoch, "batch_index": key.batch_index}


class PretrainingDataModule(L.LightningDataModule):
    """Reads the corpus, prepares (or reuses) the token stores, and serves masked blocks.

    The loaders yield unmasked blocks; `on_after_batch_transfer` masks each batch on the model's device.
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
        num_workers: int | str = 0,
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
        self.datasets: dict[str, BlockDataset] = {}
        self.masker: BatchMasker | None = None
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
            dataset = BlockDataset(
                load_token_store(self.prepared_dir / f"{split}.pt"),
                block_length,
                self.tokenizer.cls_id,
                self.tokenizer.sep_id,
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
        self.masker = BatchMasker(
            self.masking,
            self.tokenizer.special_ids,
            self.tokenizer.mask_id,
            self.tokenizer.vocab_size,
            self.masking.num_predictions(block_length - 2),
            self.seed,
        )

    def device_type(self) -> str:
        """Where the batches go: the Trainer's device ('cpu' before there is a Trainer)."""
        return self.trainer.strategy.root_device.type if self.trainer is not None else "cpu"

    def resolved_num_workers(self, device_type: str | None = None) -> int:
        processes = self.trainer.num_devices if self.trainer is not None else 1
        return resolve_num_workers(self.num_workers, device_type or self.device_type(), processes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rank, world_size = process_share(self.trainer)
        return epoch_batch_loader(
            self.datasets[split],
            self.batch_size,
            self.seed,
            shuffle=shuffle,
            num_workers=self.resolved_num_workers(),
            skip_batches=self.skip_train_batches if split == "train" else 0,
            drop_last=shuffle,
            rank=rank,
            world_size=world_size,
            pin_memory=self.device_type() == "cuda",
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Masks the batch where it now is (the model's device); Lightning moved it non-blocking."""
        if self.masker is None:
            raise RuntimeError("call setup() before masking batches")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return self.masker(batch, rank)

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each of `world_size` processes runs per epoch."""
        return len(self.datasets["train"]) // world_size // self.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
