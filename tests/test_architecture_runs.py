"""Every attention x position-encoding combination, and every preset, trains through launch.py.

Two multiruns (one process each) keep this fast: 15 tiny jobs, then the presets at their real sizes for a
few steps on short sequences. bert_base is left out of the training sweep: it is the slowest job by far,
and test_architecture.py already builds every preset (on the meta device) and checks its shapes. "Trains" means the validation loss on a fixed validation batch falls from the
step-0 baseline to the end of the run.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import launch, read_csv

ATTENTION = ("sdpa", "eager", "local")
POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
PRESETS = (
    "bert_tiny",
    "bert_mini",
    "bert_small",
    "bert_medium",
    "modern_tiny",
    "modern_small",
)  # not bert_base
# Short runs: one fixed validation batch before and after training, a small test split.
SHORT = [
    "data.source.documents=300",
    "tokenizer.vocab_size=400",
    "tokenizer.max_length=32",
    "training.batch_size=4",
    "training.limit_val_batches=1",
    "training.checkpoint.every_n_steps=1000",
    "logging.log_every_n_steps=1",
    "data.val_ratio=0.05",
    "data.test_ratio=0.02",
]


def multirun(args: list[str], output_dir: Path, timeout: int = 900) -> dict[frozenset[str], Path]:
    """`launch.py -m args` on one thread; returns each job's folder keyed by its sweep overrides."""
    launch(args, output_dir, flags=("-m",), timeout=timeout)
    jobs = {}
    for job in sorted((output_dir / "pretraining" / "sweeps").glob("*/job*")):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        jobs[frozenset(overrides)] = job
    return jobs


COMBINATIONS = [
    "+experiment=pretrain",
    f"architecture.attention={','.join(ATTENTION)}",
    f"architecture.position_encoding={','.join(POSITIONS)}",
    "architecture.local_window=4",
    "architecture.global_every=2",
    *SHORT,
    "training.batch_size=8",
    "training.max_steps=6",
    "training.val_check_interval=6",
]
PRESET_SWEEP = [
    "+experiment=pretrain",
    f"architecture={','.join(PRESETS)}",
    *SHORT,
    "training.optimizer.lr=3e-4",  # 1e-3 without warmup is too much for the deeper post-norm presets
    "training.max_steps=5",
    "training.val_check_interval=5",
]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> dict[str, Future]:
    """Both multiruns, started together: each job runs on one thread, so the two share 2 cores well
    (tiny models are also faster on one thread, and a busy CPU does not stall them in thread barriers)."""
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=2) as pool:
        patch.setenv("OMP_NUM_THREADS", "1")  # launch() passes os.environ to its subprocess
        yield {
            "combinations": pool.submit(multirun, COMBINATIONS, tmp_path_factory.mktemp("combinations")),
            "presets": pool.submit(multirun, PRESET_SWEEP, tmp_path_factory.mktemp("presets")),
        }


def validation_losses(job: Path) -> tuple[float, float]:
    """(step-0 baseline, last) validation loss of a finished job."""
    rows = [row for row in read_csv(job / "metrics" / "eval" / "metrics.csv") if row["stage"] == "val"]
    assert int(rows[0]["step"]) == 0 and len(rows) >= 2, f"{job.name}: no baseline and final validation"
    return float(rows[0]["loss"]), float(rows[-1]["loss"])


def assert_trained(jobs: dict[frozenset[str], Path]) -> None:
    for overrides, job in jobs.items():
        first, last = validation_losses(job)
        assert last < first, f"{sorted(overrides)}: validation loss did not fall ({first:.3f} -> {last:.3f})"
        assert (job / "checkpoints" / "model.ckpt").is_file()


def test_every_attention_and_position_encoding_trains(sweeps):
    jobs = sweeps["combinations"].result()
    assert len(jobs) == len(ATTENTION) * len(POSITIONS)
    combinations = {
        (attention, position)
        for overrides in jobs
        for attention in ATTENTION
        for position in POSITIONS
        if {f"architecture.attention={attention}", f"architecture.position_encoding={position}"} <= overrides
    }
    assert len(combinations) == len(ATTENTION) * len(POSITIONS)
    assert_trained(jobs)


def test_every_preset_trains(sweeps):
    jobs = sweeps["presets"].result()
    assert {
        override for overrides in jobs for override in overrides if override.startswith("architecture=")
    } == {f"architecture={preset}" for preset in PRESETS}
    assert_trained(jobs)
