"""Training loader throughput on one core: sequences/s that reach the step, before and after batch masking.

Both arms read the same memory-mapped token store (blocks of 128 tokens, [CLS] ... [SEP]) in the same
epoch-shuffled order, with no worker processes and one torch thread:

- `per-example (reference)`: the loader as it was before batch masking, kept here as the reference:
  `__getitem__` per block builds it with `torch.cat`, seeds a `torch.Generator` and masks it with
  `randperm`/`isin`, and the DataLoader collates the dicts.
- `batch loader`: bertlab's loader (one row gather per batch, `BatchKey` keys, no collate), plus the batch
  masking that a run applies after transfer, timed here on the CPU (on a GPU it runs there instead).
- `batch loader, no masking`: the host's share alone on a GPU run.

Each arm runs for `--seconds` (whole epochs as needed); the figure is sequences/s over that time. The
target (>= 100,000 sequences/s of 128 tokens on one core) applies to the loader: in a run it no longer
masks, the batch is masked after transfer, on the GPU where there is one.

    python benchmarks/loader_throughput.py            # about 10 s
    python benchmarks/loader_throughput.py --tiny     # about 2 s (for tests)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)
import torch
from common import RESULTS, machine, print_table, write_json
from torch.utils.data import DataLoader, Dataset

from bertlab.data.batch_masking import BatchMasker
from bertlab.data.masking import IGNORE_INDEX, MaskingPolicy
from bertlab.data.mlm_datamodule import BlockDataset
from bertlab.data.sampler import EpochShuffleSampler, epoch_batch_loader
from bertlab.data.token_store import load_token_store, save_token_store, to_token_store

DEFAULT_OUTPUT = RESULTS / "loader_throughput.json"
TARGET = 100_000  # sequences/s of 128 tokens on one core, from the issue
SPECIAL_IDS = [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK] in every bertlab tokenizer
CLS_ID, SEP_ID, MASK_ID = 2, 3, 4


# -- the reference arm: per-example masking, as MaskedBlockDataset did it ------------------------------------
def example_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    mixed = (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def mask_one_example(
    policy: MaskingPolicy,
    input_ids: torch.Tensor,
    special_ids: torch.Tensor,
    replacement_ids: torch.Tensor,
    num_predictions: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    maskable = torch.nonzero(~torch.isin(input_ids, special_ids)).squeeze(1)
    order = torch.randperm(maskable.numel(), generator=generator)[:num_predictions]
    positions = maskable[order].sort().values
    labels = input_ids[positions].long()
    masked = input_ids.clone()
    roll = torch.rand(positions.numel(), generator=generator)
    to_mask = roll < policy.mask_token_ratio
    to_random = (roll >= policy.mask_token_ratio) & (
        roll < policy.mask_token_ratio + policy.random_token_ratio
    )
    masked[positions[to_mask]] = MASK_ID
    random_picks = torch.randint(replacement_ids.numel(), (positions.numel(),), generator=generator)
    masked[positions[to_random]] = replacement_ids[random_picks[to_random]].to(masked.dtype)
    missing = num_predictions - positions.numel()
    if missing > 0:
        positions = torch.cat([positions, positions.new_zeros(missing)])
        labels = torch.cat([labels, labels.new_full((missing,), IGNORE_INDEX)])
    return {"input_ids": masked, "masked_positions": positions, "masked_labels": labels}


class PerExampleMaskedBlocks(Dataset):
    """The old MaskedBlockDataset: block `index`, masked with the generator of (seed, epoch, index)."""

    def __init__(self, ids: torch.Tensor, block_length: int, vocab_size: int, seed: int) -> None:
        self.ids = ids
        self.inner = block_length - 2
        self.num_blocks = ids.numel() // self.inner
        self.cls = torch.tensor([CLS_ID], dtype=ids.dtype)
        self.sep = torch.tensor([SEP_ID], dtype=ids.dtype)
        self.special_ids = torch.tensor(SPECIAL_IDS, dtype=ids.dtype)
        vocab = torch.arange(vocab_size)
        self.replacement_ids = vocab[~torch.isin(vocab, self.special_ids.long())]
        self.policy = MaskingPolicy()
        self.num_predictions = self.policy.num_predictions(self.inner)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        start = index * self.inner
        block = torch.cat([self.cls, self.ids[start : start + self.inner], self.sep])
        example = mask_one_example(
            self.policy,
            block,
            self.special_ids,
            self.replacement_ids,
            self.num_predictions,
            example_generator(self.seed, epoch, index),
        )
        example["input_ids"] = example["input_ids"].long()
        return example


# -- timing -----------------------------------------------------------------------------------------------------
def sequences_per_second(loader: DataLoader, seconds: float, finish=lambda batch: batch) -> tuple[float, int]:
    """Iterates `loader` (epoch after epoch) for about `seconds`; returns (sequences/s, batches)."""
    sequences = batches = 0
    epoch = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = finish(batch)
            sequences += batch["input_ids"].shape[0]
            batches += 1
            if batches % 16 == 0 and time.perf_counter() - start >= seconds:
                break
        epoch += 1
    return sequences / (time.perf_counter() - start), batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small store, short timing: seconds, for tests")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument("--seconds", type=float, default=None, help="timing per arm (default 3; tiny 0.3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=None, help="store size (default 4M; tiny 200k)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.3 if args.tiny else 3.0)
    tokens = args.tokens if args.tokens is not None else (200_000 if args.tiny else 4_000_000)
    torch.set_num_threads(1)  # one core, as the issue measures it
    machine_info = machine()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab_size, (tokens,), generator=generator)
    ids[torch.randint(0, tokens, (tokens // 50,), generator=generator)] = SEP_ID  # document ends
    policy = MaskingPolicy()
    with tempfile.TemporaryDirectory(prefix="bertlab-loader-") as folder:
        path = Path(folder) / "train.pt"
        save_token_store(to_token_store([ids.tolist()], args.vocab_size), path)
        store = load_token_store(path)  # memory-mapped, as in a run

        reference = PerExampleMaskedBlocks(store.ids, args.seq_len, args.vocab_size, seed=0)
        old_loader = DataLoader(
            reference,
            batch_size=args.batch_size,
            sampler=EpochShuffleSampler(len(reference), seed=0),
            drop_last=True,
        )
        old_rate, old_batches = sequences_per_second(old_loader, seconds)

        blocks = BlockDataset(store, args.seq_len, CLS_ID, SEP_ID)
        masker = BatchMasker(
            policy, SPECIAL_IDS, MASK_ID, args.vocab_size, policy.num_predictions(args.seq_len - 2), seed=0
        )
        new_loader = epoch_batch_loader(blocks, args.batch_size, seed=0, shuffle=True, drop_last=True)
        new_rate, new_batches = sequences_per_second(new_loader, seconds, masker)
        bare_rate, bare_batches = sequences_per_second(new_loader, seconds)

    rows = [
        ["per-example masking (reference, before)", f"{old_rate:,.0f}", old_batches, "1.0"],
        [
            "batch loader + batch masking on the CPU",
            f"{new_rate:,.0f}",
            new_batches,
            f"{new_rate / old_rate:.1f}",
        ],
        [
            "batch loader alone (masking on the GPU)",
            f"{bare_rate:,.0f}",
            bare_batches,
            f"{bare_rate / old_rate:.1f}",
        ],
    ]
    print(
        f"\nloader sequences/s on one core ({args.batch_size} x {args.seq_len} tokens per batch, "
        f"{seconds:g} s per arm)\n"
    )
    print_table(["arm", "sequences/s", "batches", "vs before"], rows)
    print(
        f"\ntraining loader: {bare_rate:,.0f} sequences/s (target >= {TARGET:,}); before (per-example "
        f"masking in the loader): {old_rate:,.0f}; with batch masking on this CPU too: {new_rate:,.0f}"
    )
    result = {
        "benchmark": "loader_throughput",
        "machine": machine_info,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "vocab_size": args.vocab_size,
        "store_tokens": tokens,
        "seconds_per_arm": seconds,
        "torch_threads": torch.get_num_threads(),
        "arms": {
            "per_example_reference": {"sequences_per_s": round(old_rate, 1), "batches": old_batches},
            "batch_loader_with_masking": {"sequences_per_s": round(new_rate, 1), "batches": new_batches},
            "batch_loader_only": {"sequences_per_s": round(bare_rate, 1), "batches": bare_batches},
        },
        "loader_speedup": round(bare_rate / old_rate, 2),
        "speedup_with_cpu_masking": round(new_rate / old_rate, 2),
        "target": TARGET,
        "target_met": bare_rate >= TARGET,
    }
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
