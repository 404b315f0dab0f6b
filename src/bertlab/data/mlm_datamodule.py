"""Pretraining data: corpus -> prepared (cached) token shards -> fixed-length blocks -> masked batches.

Documents are concatenated (each ends with [SEP]) and cut into blocks of max_length - 2 tokens, wrapped in
[CLS] ... [SEP]: no padding, no attention mask, one static shape. With `packing=documents` each batch also
carries its tokens' document ids (bertlab.data.document_packing), so that the encoder keeps the documents of
a block apart.

Validation and test read at most `eval_tokens` tokens each: the same evenly spaced blocks of the split at
every evaluation, whatever the batch size or number of processes, so their cost stays fixed as the corpus
grows (as Megatron, NeMo and cramming evaluate a fixed amount).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from bertlab.data.batch_masking import BatchMasker
from bertlab.data.chunk_encoding import MAX_DOCUMENT_CHARS, BadRecords, SplitRule, chunk_documents
from bertlab.data.corpus import CHUNK_BYTES, SPLITS
from bertlab.data.document_packing import check_packing, document_ids
from bertlab.data.loader_workers import resolve_num_workers
from bertlab.data.masking import MaskingPolicy
from bertlab.data.sampler import BatchKey, epoch_batch_loader, process_share
from bertlab.data.shard_store import load_shards, read_manifest, verify_shards
from bertlab.data.split_datamodule import SplitDataModule
from bertlab.data.streaming_preparation import (
    PreparationPlan,
    encoding_settings,
    first_missing,
    prepare_folder,
    rebuild_advice,
    remove_created,
    resolve_num_proc,
    wait_for_manifest,
)
from bertlab.data.token_store import TokenStore
from bertlab.errors import BertlabError
from bertlab.run_folder import TOKENIZER_FILE
from bertlab.tokenizer import TextTokenizer

log = logging.getLogger(__name__)
BAD_RECORD_MODES = ("skip", "error")
EVAL_TOKENS = 1 << 18  # 262,144 tokens per evaluation of val (and of test): 2,048 blocks of 128
WHOLE_SPLIT = "all"


def resolve_eval_tokens(eval_tokens: int | str | None) -> int | None:
    """`eval_tokens` as a positive number of tokens, or None for the whole split (`null` or `all`)."""
    if eval_tokens is None or eval_tokens == WHOLE_SPLIT:
        return None
    if isinstance(eval_tokens, bool) or not isinstance(eval_tokens, int) or eval_tokens < 1:
        raise BertlabError(
            f"must be a positive number of tokens, or null/{WHOLE_SPLIT} for the whole split, got {eval_tokens!r}",
            "eval_tokens",
        )
    return eval_tokens


def evenly_spaced(total: int, count: int) -> torch.Tensor:
    """`count` indices spread evenly over range(total), the first one 0 (count <= total)."""
    return torch.arange(count, dtype=torch.int64) * total // count


class BlockDataset(Dataset):
    """Fixed-length blocks of the token stream, served a whole batch at a time.

    `dataset[BatchKey]` is one row gather from the memory-mapped store (the blocks are a [num_blocks,
    length - 2] view of it) plus the [CLS]/[SEP] columns; ids keep the store's compact dtype (converted
    on the device). The batch carries its epoch and batch index, which seed its masking there
    (bertlab.data.batch_masking).

    `max_blocks` (evaluation splits) keeps that many blocks, evenly spaced over the whole split: a fixed
    subset that depends only on the split and the cap.
    """

    def __init__(
        self,
        store: TokenStore | Sequence[torch.Tensor],
        block_length: int,
        cls_id: int,
        sep_id: int,
        max_blocks: int | None = None,
    ) -> None:
        self.inner = block_length - 2
        shards = [store.ids] if isinstance(store, TokenStore) else list(store)
        # Each shard is cut into blocks on its own (its last partial block is left out), so a block is
        # always one contiguous slice of one memory-mapped file.
        self.parts = [
            s[: (s.numel() // self.inner) * self.inner].view(-1, self.inner)
            for s in shards
            if s.numel() >= self.inner
        ]
        counts = torch.tensor([0] + [p.shape[0] for p in self.parts], dtype=torch.int64)
        self.starts = torch.cumsum(counts, 0)
        self.num_blocks = int(self.starts[-1])  # of the whole split
        self.cls_id, self.sep_id = cls_id, sep_id
        self.block_length = block_length
        self.selected: torch.Tensor | None = None
        if max_blocks is not None and max_blocks < self.num_blocks:
            self.selected = evenly_spaced(self.num_blocks, max_blocks)

    def __len__(self) -> int:
        return self.num_blocks if self.selected is None else self.selected.numel()

    def rows(self, indices: torch.Tensor) -> torch.Tensor:
        """Blocks `indices` (of this dataset), gathered with one index_select per shard touched."""
        if self.selected is not None:
            indices = self.selected[indices]
        if len(self.parts) == 1:
            return self.parts[0].index_select(0, indices)
        which = torch.searchsorted(self.starts, indices, right=True) - 1
        rows = self.parts[0].new_empty((indices.numel(), self.inner))
        for part in which.unique().tolist():
            selected = which == part
            rows[selected] = self.parts[part].index_select(0, indices[selected] - self.starts[part])
        return rows

    def __getitem__(self, key: BatchKey) -> dict[str, Any]:
        rows = self.rows(key.indices)
        input_ids = rows.new_empty((rows.shape[0], self.inner + 2))
        input_ids[:, 0] = self.cls_id
        input_ids[:, 1:-1] = rows
        input_ids[:, -1] = self.sep_id
        return {"input_ids": input_ids, "epoch": key.epoch, "batch_index": key.batch_index}


class MLMDataModule(SplitDataModule):
    """Prepares (or reuses) the token stores of a corpus, and serves masked blocks from them.

    Preparation streams the corpus through bertlab.data.streaming_preparation into a folder keyed by the corpus,
    split and tokenizer (or reads `prepared`, a folder written by `+experiment=prepare`). The loaders
    yield unmasked blocks; `on_after_batch_transfer` masks each batch on the model's device. `masking`,
    `batch_size` and `num_workers` are given at run time (they live in other config sections).
    `eval_tokens` caps what each evaluation of val and of test reads (None or "all": the whole split).
    `packing` (bertlab.data.document_packing.PACKINGS): `plain` (or None) serves each block as one sequence,
    `documents` adds the document ids that keep a block's documents from attending to each other.
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
        num_proc: int | str = "auto",
        on_bad_record: str = "skip",
        shard_tokens: int = 1 << 25,
        chunk_bytes: int = CHUNK_BYTES,
        eval_tokens: int | str | None = EVAL_TOKENS,
        packing: str | None = None,
    ) -> None:
        super().__init__(val_ratio, test_ratio, seed, batch_size, num_workers, empty_splits=True)
        self.eval_tokens = resolve_eval_tokens(eval_tokens)
        self.packing = check_packing(packing)
        if prepared is not None:  # sizes now (cheap, every process); checksums in prepare()
            verify_shards(prepared, read_manifest(prepared), rebuild_advice(Path(prepared)), checksums=False)
        if batch_size < 1:
            raise BertlabError(f"must be a positive integer, got {batch_size}", "batch_size")
        if on_bad_record not in BAD_RECORD_MODES:
            raise BertlabError(f"must be one of {BAD_RECORD_MODES}, got {on_bad_record!r}", "on_bad_record")
        if shard_tokens < 1:
            raise BertlabError(f"must be a positive number of tokens, got {shard_tokens}", "shard_tokens")
        self.num_proc = resolve_num_proc(num_proc)
        self.source = source
        self.cache_dir = Path(cache_dir)
        self.prepared = Path(prepared) if prepared is not None else None
        self.masking = masking or MaskingPolicy()
        self.on_bad_record = on_bad_record
        self.shard_tokens = shard_tokens
        self.chunk_bytes = chunk_bytes  # shards close at chunk boundaries: part of the fingerprint
        self.tokenizer: TextTokenizer | None = None
        self.masker: BatchMasker | None = None
        self.new_tokenizer_cache: tuple[Path, Path | None] | None = None  # (file, first folder it created)

    # -- preparation (once, in the launching process, before the Trainer exists) ------------------------
    def split_rule(self) -> SplitRule:
        """Splits without files of their own take their ratio of the training documents, by hash."""
        given = self.source.given_splits()
        return SplitRule(
            0.0 if "val" in given else self.val_ratio, 0.0 if "test" in given else self.test_ratio, self.seed
        )

    def tokenizer_sample(self) -> Iterator[str]:
        """The training split's documents in corpus order, read lazily (the tokenizer stops early)."""
        rule = self.split_rule()
        bad = BadRecords()  # counted and reported by the preparation itself
        for chunk in self.source.chunks(("train",)):
            for text in chunk_documents(chunk, self.source.text_field, self.source.paragraphs, bad):
                if rule.split_of(text) == "train":
                    yield text

    def splits_fingerprint(self) -> str:
        """Changes whenever the documents of any split may change."""
        parts = [self.source.fingerprint(), self.val_ratio, self.test_ratio, self.seed, "hash-split-v1"]
        return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:16]

    def tokenizer_cache_file(self, tokenizer: TextTokenizer) -> Path:
        """Where a vocabulary trained on these training documents with these settings is kept.

        Asked before the tokenizer trains: if the file is new, a preparation stopped by bad input removes
        it again (see `_undo_tokenizer_cache`).
        """
        path = (
            self.cache_dir
            / "tokenizers"
            / f"{self.splits_fingerprint()}-{tokenizer.settings_fingerprint()}.json"
        )
        if not path.exists():
            self.new_tokenizer_cache = (path, first_missing(path))
        return path

    def _undo_tokenizer_cache(self) -> None:
        if self.new_tokenizer_cache is not None:
            remove_created(*self.new_tokenizer_cache)
            self.new_tokenizer_cache = None

    def fingerprint(self, tokenizer: TextTokenizer) -> str:
        parts = [
            self.splits_fingerprint(),
            tokenizer.fingerprint(),
            self.shard_tokens,
            self.chunk_bytes,
            self.on_bad_record,
            f"pieces-{MAX_DOCUMENT_CHARS}",
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def plan(self, tokenizer: TextTokenizer) -> PreparationPlan:
        """What preparing this corpus with `tokenizer` means, for bertlab.data.streaming_preparation."""
        return PreparationPlan(
            fingerprint=self.fingerprint(tokenizer),
            chunks=functools.partial(self.source.chunks, SPLITS, self.chunk_bytes),
            total_bytes=self.source.total_bytes(),
            settings=encoding_settings(
                tokenizer, self.source.text_field, self.source.paragraphs, self.split_rule()
            ),
            shard_tokens=self.shard_tokens,
            on_bad_record=self.on_bad_record,
            given_splits=frozenset(self.source.given_splits()),
            description={
                "sources_fingerprint": self.source.fingerprint(),
                "splits_fingerprint": self.splits_fingerprint(),
                "tokenizer_settings": tokenizer.settings_fingerprint(),
                "tokenizer_fingerprint": tokenizer.fingerprint(),
                "vocab_size": tokenizer.vocab_size,
                "val_ratio": self.val_ratio,
                "test_ratio": self.test_ratio,
                "seed": self.seed,
                "shard_tokens": self.shard_tokens,
                "chunk_bytes": self.chunk_bytes,
            },
        )

    def write_prepared(self, tokenizer: TextTokenizer, folder: Path) -> dict:
        """Prepare into `folder` (a preparation run's own folder), continuing an interrupted preparation."""
        try:
            return prepare_folder(self.plan(tokenizer), Path(folder), self.num_proc)
        except BertlabError:
            self._undo_tokenizer_cache()
            raise

    def prepare(self, tokenizer: TextTokenizer, main: bool = True) -> Path:
        """Build the token stores into the cache (or reuse them); returns their folder.

        Processes other than the main one (`main=False`) never tokenize: they wait for its manifest.
        """
        self.tokenizer = tokenizer
        if self.prepared is not None:
            self.prepared_dir = self.prepared
            if main:
                started = time.monotonic()
                verify_shards(self.prepared, read_manifest(self.prepared), rebuild_advice(self.prepared))
                log.info("Checked the shards of %s (%.1f s)", self.prepared, time.monotonic() - started)
            return self.prepared_dir
        self.prepared_dir = self.cache_dir / self.fingerprint(tokenizer)
        if main:
            try:
                prepare_folder(self.plan(tokenizer), self.prepared_dir, self.num_proc)
            except BertlabError:
                self._undo_tokenizer_cache()
                raise
        else:
            wait_for_manifest(self.prepared_dir)
        return self.prepared_dir

    # -- Lightning hooks ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None or self.prepared_dir is None:
            raise RuntimeError("call prepare(tokenizer) before setup()")
        block_length = self.tokenizer.max_length
        manifest = read_manifest(self.prepared_dir)
        if (
            self.prepared is None
        ):  # a cached folder: its sizes, for a damaged one left by a crash or a full disk
            verify_shards(self.prepared_dir, manifest, rebuild_advice(self.prepared_dir), checksums=False)
        if manifest["tokenizer_fingerprint"] != self.tokenizer.fingerprint():
            raise BertlabError(
                f"folder {str(self.prepared_dir)!r} was prepared with another tokenizer than the run's "
                f"({manifest['vocab_size']} tokens, the run's has {self.tokenizer.vocab_size}); use the "
                f"tokenizer it was prepared with (tokenizer.vocab_source=<its {TOKENIZER_FILE}>)",
                "prepared",
            )
        for split in SPLITS:
            if split in self.datasets:
                continue
            dataset = BlockDataset(
                load_shards(self.prepared_dir, split, manifest),
                block_length,
                self.tokenizer.cls_id,
                self.tokenizer.sep_id,
                max_blocks=None if split == "train" else self.eval_blocks(block_length),
            )
            if len(dataset) == 0:
                # val/test come from their own files, or are split off the training text by ratio
                from_files = split == "train" or split in self.source.given_splits()
                raise BertlabError(
                    f"the {split} split has fewer than {block_length} tokens (tokenizer.max_length), not one "
                    f"block; {'add text' if from_files else f'add text or raise data.{split}_ratio'}, or "
                    f"lower tokenizer.max_length",
                    f"source.{split}" if from_files else f"{split}_ratio",
                )
            self.datasets[split] = dataset
            if split != "train":
                log.info(
                    "Each %s evaluation reads %s of the split's %s blocks (%s tokens; data.eval_tokens=%s)",
                    split,
                    f"{len(dataset):,}",
                    f"{dataset.num_blocks:,}",
                    f"{len(dataset) * block_length:,}",
                    WHOLE_SPLIT if self.eval_tokens is None else self.eval_tokens,
                )
        word_starts = self.tokenizer.word_starts() if self.masking.needs_word_starts else None
        self.masker = BatchMasker(
            self.masking,
            self.tokenizer.special_ids,
            self.tokenizer.mask_id,
            self.tokenizer.vocab_size,
            self.masking.num_predictions(block_length - 2),
            self.seed,
            word_starts=word_starts,
            maskable=block_length - 2,
        )

    def eval_blocks(self, block_length: int) -> int | None:
        """Blocks per evaluation under the cap (at least one); None: the whole split."""
        return None if self.eval_tokens is None else max(1, self.eval_tokens // block_length)

    def evaluation_info(self) -> dict[str, Any]:
        """What each evaluation of val and test reads, for run.json (before training.limit_val_batches)."""
        info: dict[str, Any] = {"eval_tokens": WHOLE_SPLIT if self.eval_tokens is None else self.eval_tokens}
        for split in ("val", "test"):
            dataset = self.datasets[split]
            info[split] = {
                "blocks": len(dataset),
                "tokens": len(dataset) * dataset.block_length,
                "split_blocks": dataset.num_blocks,
                "split_tokens": dataset.num_blocks * dataset.block_length,
                "capped": dataset.selected is not None,
            }
        return info

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
        """Masks the batch where it now is (the model's device); Lightning moved it non-blocking. With
        document packing, adds the tokens' `document_ids` (counted from the unmasked ids)."""
        if self.masker is None or self.tokenizer is None:
            raise RuntimeError("call setup() before masking batches")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        masked = self.masker(batch, rank, self.training_progress())
        if self.packing == "documents":
            masked["document_ids"] = document_ids(batch["input_ids"], self.tokenizer.sep_id)
        return masked

    def training_progress(self) -> float:
        """Share of training done, for a masking-rate schedule: 1 outside training (evaluation)."""
        trainer = self.trainer
        if not self.masking.scheduled or trainer is None or not trainer.training:
            return 1.0
        total = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        return min(1.0, trainer.global_step / max(1, total - 1))

    def batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each of `world_size` processes runs per epoch."""
        return len(self.datasets["train"]) // world_size // self.batch_size
