"""What the pretraining and classification datamodules share: three splits (val and test carved off the
training data by ratio where they have no data of their own), their loaders, and the position in the
training epoch a resumed run starts from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from bertlab.errors import BertlabError


class SplitDataModule(L.LightningDataModule):
    """`empty_splits`: whether a ratio may be 0 (pretraining: a split may be left out; classification
    carves at least one example, so its ratios are in (0, 0.5))."""

    def __init__(
        self,
        val_ratio: float,
        test_ratio: float,
        seed: int,
        batch_size: int,
        num_workers: Any,
        empty_splits: bool,
    ) -> None:
        super().__init__()
        for key, value in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
            if not (value >= 0.0 if empty_splits else value > 0.0) or not value < 0.5:
                raise BertlabError(f"must be in {'[' if empty_splits else '('}0, 0.5), got {value}", key)
        self.val_ratio = val_ratio
        self.test_ratio = test_ratio
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.prepared_dir: Path | None = None
        self.datasets: dict[str, Any] = {}
        self.skip_train_batches = 0  # set when resuming mid-epoch (flow.make_trainer)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
