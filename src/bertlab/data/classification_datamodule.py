"""Classification data: labelled text (or text pairs) -> cached token store + targets -> batches padded to
their longest.

The label vocabulary is the sorted set of training labels; ids (single label) and multi-hot columns
(multi-label) index into it. Regression targets are the numbers as given.
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
from bertlab.data.labelled import Example, RecordFields, label_vocabulary
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
from bertlab.model.classification_head import MULTI_LABEL, REGRESSION, SINGLE_LABEL, check_problem_type
from bertlab.tokenizer import TextTokenizer

log = logging.getLogger(__name__)


def target_scale(train: list[Example], describe: str) -> tuple[float, float]:
    """Regression: the training targets' mean and standard deviation; refuses targets that never vary."""
    values = torch.tensor([float(e.label) for e in train], dtype=torch.float64)
    mean, std = float(values.mean()), float(values.std(unbiased=False))
    if not std > 0:
        raise BertlabError(
            f"every training target in {describe} is {mean:g}; a regression needs targets that vary",
            "data.label_field",
        )
    return mean, std


def encode_examples(
    examples: list[Example], tokenizer: TextTokenizer
) -> tuple[TokenStore, torch.Tensor | None]:
    """The token ids of every example (a pair through the tokenizer's pair template), and for pairs the
    position where each second text's segment starts (None when the examples are single texts)."""
    if examples and examples[0].text_pair is not None:
        ids, starts = tokenizer.encode_pairs([e.text for e in examples], [e.text_pair for e in examples])
        return to_token_store(ids, tokenizer.vocab_size), torch.tensor(starts, dtype=torch.int32)
    return to_token_store(tokenizer.encode_sequences([e.text for e in examples]), tokenizer.vocab_size), None


def label_tensor(examples: list[Example], labels: list, problem_type: str) -> torch.Tensor:
    """The targets: label ids [N] (single label), a multi-hot matrix [N, labels] (multi-label), values [N]
    (regression). Labels are matched as text, so a file's "3" is the vocabulary's 3."""
    if problem_type == REGRESSION:
        return torch.tensor([float(e.label) for e in examples], dtype=torch.float32)
    index = {str(label): i for i, label in enumerate(labels)}
    if problem_type == MULTI_LABEL:
        targets = torch.zeros((len(examples), len(labels)), dtype=torch.bool)
        for row, example in enumerate(examples):
            targets[row, [index[str(label)] for label in example.label]] = True
        return targets
    return torch.tensor([index[str(e.label)] for e in examples])


class LabelledSequenceDataset(Dataset):
    """Token ids, targets and (pairs) where the second text starts, per example."""

    def __init__(
        self, store: TokenStore, labels: torch.Tensor, segment_starts: torch.Tensor | None = None
    ) -> None:
        self.store = store
        self.labels = labels
        self.segment_starts = segment_starts

    def __len__(self) -> int:
        return self.labels.size(0)

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor | int]:
        index = key[1] if isinstance(key, tuple) else key
        item = {"input_ids": self.store.document(index), "label": self.labels[index], "index": index}
        if self.segment_starts is not None:
            item["segment_start"] = int(self.segment_starts[index])
        return item


class PadToLongest:
    """Collates sequences padded to the longest in the batch, with an attention mask, and for pairs the
    token types (1 from where the second text starts, 0 before it and on padding)."""

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
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.stack([torch.as_tensor(example["label"]) for example in examples]),
            "index": torch.tensor([example["index"] for example in examples]),
        }
        if "segment_start" in examples[0]:
            starts = torch.tensor([example["segment_start"] for example in examples])
            batch["token_type_ids"] = (
                torch.arange(longest)[None, :] >= starts[:, None]
            ).long() * attention_mask
        return batch


class ClassificationDataModule(SplitDataModule):
    """Reads labelled examples, prepares (or reuses) token stores with the run's tokenizer, serves batches.

    `problem_type` (classification_head.problem_type, passed at run time) decides the labels' shape:
    `labels` is the label vocabulary, or for regression the one output's name (the label field), whose
    training mean and deviation are `target_scale`. `seed` orders the training batches and carves val/test
    off the training data (when they are not given); `split_seed` fixes the carving alone, so that runs of
    several seeds (a suite's) share one split.
    """

    def __init__(
        self,
        source,
        text_field: str = "text",
        label_field: str = "label",
        text_pair_field: str | None = None,
        label_separator: str = ",",
        val_ratio: float = 0.1,
        test_ratio: float = 0.1,
        cache_dir: str = "runs/.cache/datasets",
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        problem_type: str = SINGLE_LABEL,
        split_seed: int | None = None,
    ) -> None:
        super().__init__(val_ratio, test_ratio, seed, batch_size, num_workers, empty_splits=False)
        self.split_seed = seed if split_seed is None else split_seed
        if not label_separator:
            raise BertlabError(
                "must be a non-empty string (it splits a table cell into labels)", "label_separator"
            )
        self.source = source
        self.fields = RecordFields(
            text_field, label_field, text_pair_field, check_problem_type(problem_type), label_separator
        )
        self.cache_dir = Path(cache_dir)
        self.labels: list[str | int] = []
        self.target_scale: tuple[float, float] | None = None
        self.tokenizer: TextTokenizer | None = None
        self._examples: dict[str, list[Example]] | None = None

    @property
    def problem_type(self) -> str:
        return self.fields.problem_type

    def examples(self) -> dict[str, list[Example]]:
        """Examples per split (val/test carved off the training data by ratio when not given)."""
        if self._examples is None:
            splits = self.source.splits(self.fields)
            describe = {split: self.source.describe(split) for split in SPLITS}
            missing = [split for split in ("val", "test") if splits[split] is None]
            if missing:
                train = list(splits["train"])
                random.Random(self.split_seed).shuffle(train)
                total = len(train)
                for split in missing:
                    count = max(1, round(total * getattr(self, f"{split}_ratio")))
                    splits[split], train = train[:count], train[count:]
                    describe[split] = f"the {split} split carved off {describe['train']}"
                splits["train"] = train
            if self.problem_type == REGRESSION:
                self.labels = [self.fields.label_field]
                self.target_scale = target_scale(splits["train"], describe["train"])
            else:
                self.labels = label_vocabulary(splits, describe, self.problem_type)
            self._examples = splits
        return self._examples

    @property
    def num_labels(self) -> int:
        self.examples()
        return len(self.labels)

    def fingerprint(self, tokenizer: TextTokenizer) -> str:
        parts = [
            "classification-v2",
            self.source.fingerprint(),
            self.fields,
            self.val_ratio,
            self.test_ratio,
            self.split_seed,  # what the examples depend on (the batch order does not change them)
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
        counts = {}
        for split, examples in self.examples().items():
            try:
                store, starts = encode_examples(examples, tokenizer)
            except BertlabError as error:
                raise error.in_section("tokenizer") from None
            save_token_store(store, staging / f"{split}.pt")
            torch.save(label_tensor(examples, self.labels, self.problem_type), staging / f"{split}.labels.pt")
            if starts is not None:
                torch.save(starts, staging / f"{split}.segments.pt")
            counts[split] = len(examples)
        return {"examples": counts, "labels": self.labels, "problem_type": self.problem_type}

    def setup(self, stage: str | None = None) -> None:
        if self.prepared_dir is None:
            raise RuntimeError("call prepare(tokenizer) before setup()")
        for split in SPLITS:
            if split not in self.datasets:
                labels = torch.load(self.prepared_dir / f"{split}.labels.pt", weights_only=True)
                store = load_token_store(self.prepared_dir / f"{split}.pt")
                segments = self.prepared_dir / f"{split}.segments.pt"
                starts = torch.load(segments, weights_only=True) if segments.is_file() else None
                self.datasets[split] = LabelledSequenceDataset(store, labels, starts)

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
