"""Classification data: labelled text -> cached token store + labels -> batches padded to their longest.

The label vocabulary is the sorted set of training labels; ids index into it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from bertlab.data.corpus import SPLITS
from bertlab.data.labelled import Example, label_vocabulary
from bertlab.data.sampler import epoch_loader, process_share
from bertlab.data.split_datamodule import SplitDataModule
from bertlab.data.token_store import (
    TokenStore,
    load_token_store,
    prepare_once,
    save_token_store,
    to_token_store,
)
from bertlab.errors import BertlabError
from bertlab.tokenizer import TextTokenizer

log = logging.getLogger(__name__)


class LabelledSequenceDataset(Dataset):
    def __init__(self, store: TokenStore, labels: torch.Tensor) -> None:
        self.store = store
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | int]:
        index = key[1] if isinstance(key, tuple) else key
        return {"input_ids": self.store.document(index), "label": int(self.labels[index]), "index": index}


class PadToLongest:
    """Collates sequences padded to the longest in the batch, with an attention mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(example["input_ids"].numel() for example in examples)
        input_ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for row, example in enumerate(examples):
            length = example["input_ids"].numel()
            input_ids[row, :length] = example["input_ids"]
            attention_mask[row, :length] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([example["label"] for example in examples]),
            "index": torch.tensor([example["index"] for example in examples]),
        }


class ClassificationDataModule(SplitDataModule):
    """Reads labelled examples, prepares (or reuses) token stores with the run's tokenizer, serves batches."""

    def __init__(
        self,
        source,
        text_field: str = "text",
        label_field: str = "label",
        val_ratio: float = 0.1,
        test_ratio: float = 0.1,
        cache_dir: str = "runs/.cache/datasets",
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(val_ratio, test_ratio, seed, batch_size, num_workers, empty_splits=False)
        self.source = source
        self.text_field = text_field
        self.label_field = label_field
        self.cache_dir = Path(cache_dir)
        self.labels: list[str | int] = []
        self.tokenizer: TextTokenizer | None = None
        self._examples: dict[str, list[Example]] | None = None

    def examples(self) -> dict[str, list[Example]]:
        """Examples per split (val/test carved off the training data by ratio when not given)."""
        if self._examples is None:
            splits = self.source.splits(self.text_field, self.label_field)
            describe = {split: self.source.describe(split) for split in SPLITS}
            missing = [split for split in ("val", "test") if splits[split] is None]
            if missing:
                train = list(splits["train"])
                random.Random(self.seed).shuffle(train)
                total = len(train)
                for split in missing:
                    count = max(1, round(total * getattr(self, f"{split}_ratio")))
                    splits[split], train = train[:count], train[count:]
                    describe[split] = f"the {split} split carved off {describe['train']}"
                splits["train"] = train
            self.labels = label_vocabulary(splits, describe)
            self._examples = splits
        return self._examples

    @property
    def num_labels(self) -> int:
        self.examples()
        return len(self.labels)

    def fingerprint(self, tokenizer: TextTokenizer) -> str:
        parts = [
            "classification-v1",
            self.source.fingerprint(),
            self.text_field,
            self.label_field,
            self.val_ratio,
            self.test_ratio,
            self.seed,
            tokenizer.fingerprint(),
            tokenizer.max_length,
            tokenizer.truncation,
        ]
        if tokenizer.tail_tokens:  # only when set: the caches of runs before the option stay valid
            parts.append(f"tail_tokens={tokenizer.tail_tokens}")
        return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]

    def prepare(self, tokenizer: TextTokenizer) -> Path:
        """Build the token stores and label tensors into the cache (or reuse them); returns their folder."""
        self.tokenizer = tokenizer
        self.prepared_dir = self.cache_dir / self.fingerprint(tokenizer)
        prepare_once(self.prepared_dir, lambda staging: self._write(tokenizer, staging))
        return self.prepared_dir

    def _write(self, tokenizer: TextTokenizer, staging: Path) -> dict:
        index = {label: i for i, label in enumerate(self.labels)}
        counts = {}
        for split, examples in self.examples().items():
            try:
                encoded = tokenizer.encode_sequences([text for text, _ in examples])
            except BertlabError as error:
                raise error.in_section("tokenizer") from None
            save_token_store(to_token_store(encoded, tokenizer.vocab_size), staging / f"{split}.pt")
            torch.save(torch.tensor([index[label] for _, label in examples]), staging / f"{split}.labels.pt")
            counts[split] = len(examples)
        return {"examples": counts, "labels": self.labels}

    def setup(self, stage: str | None = None) -> None:
        if self.prepared_dir is None:
            raise RuntimeError("call prepare(tokenizer) before setup()")
        for split in SPLITS:
            if split not in self.datasets:
                labels = torch.load(self.prepared_dir / f"{split}.labels.pt", weights_only=True)
                store = load_token_store(self.prepared_dir / f"{split}.pt")
                self.datasets[split] = LabelledSequenceDataset(store, labels)

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each of `world_size` processes runs per epoch."""
        return -(-(len(self.datasets["train"]) // world_size) // self.batch_size)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rank, world_size = process_share(self.trainer)
        return epoch_loader(
            self.datasets[split],
            self.batch_size,
            self.seed,
            shuffle=shuffle,
            num_workers=self.num_workers,
            skip_batches=self.skip_train_batches if split == "train" else 0,
            collate_fn=PadToLongest(self.tokenizer.pad_id),
            rank=rank,
            world_size=world_size,
        )
