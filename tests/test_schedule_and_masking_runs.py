"""WSD and whole-word masking in real runs: exact resume, and a WSD decay started from a stable checkpoint
equal to the same decay inside one run (CPU, 32-true: to the bit)."""

from __future__ import annotations

import pytest
import torch

from bertlab.run import run
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import FAST, compose_config, read_csv
from tests.test_resume import interrupt_at, weights

SETTINGS = [
    *FAST,
    "training.precision=32-true",
    "training.val_check_interval=4",
    "training.checkpoint.every_n_steps=4",
]
WSD = (
    "training/scheduler=wsd",
    "training.scheduler.warmup_steps=2",
    "training.scheduler.decay_ratio=0",
    "training.scheduler.decay=linear",
    "mlm_head.masking.unit=word",
)


def train_rows(run_dir, after: int = 0) -> list[tuple[str, str, str]]:
    rows = read_csv(run_dir / "metrics/train/metrics.csv")
    return [(r["step"], r["loss"], r["lr"]) for r in rows if int(r["step"]) > after]


def same_weights(a, b) -> bool:
    first, second = weights(a), weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def start(tmp_path, name: str, *overrides: str, resume: tuple[str, ...] = ()):
    run_dir = tmp_path / "pretraining" / name
    cfg = compose_config(
        ["+experiment=pretrain", f"experiment.name={name}", *SETTINGS, *overrides, *resume], tmp_path
    )
    run(cfg, run_dir)
    return run_dir


def interrupted_and_resumed(tmp_path, monkeypatch, *overrides):
    """Run "cut" stopped by SIGTERM at step 7 (mid-epoch), then resumed to the end; its folder."""
    with monkeypatch.context() as patch:
        interrupt_at(patch, 7)
        with pytest.raises(TrainingInterrupted):
            start(tmp_path, "cut", *overrides)
    return start(tmp_path, "cut", *overrides, resume=("training.resume.is_resume=true",))


def test_wsd_with_whole_words_resumes_exactly_and_decays_from_a_stable_checkpoint(tmp_path, monkeypatch):
    decay_at_8 = (*WSD, "training.max_steps=12", "training.scheduler.decay_start_step=8")
    straight = start(tmp_path, "straight", *decay_at_8)
    lrs = [float(lr) for _, _, lr in train_rows(straight)]
    assert lrs[2] == lrs[3] == lrs[1] > lrs[4] > lrs[5]  # stable (steps 4-8), then the decay

    cut = interrupted_and_resumed(tmp_path, monkeypatch, *decay_at_8)  # at step 7, in the stable phase
    assert train_rows(cut) == train_rows(straight)
    assert same_weights(cut, straight)

    stable = start(tmp_path, "stable", *WSD, "training.max_steps=8")  # warmup then constant: no decay
    assert train_rows(stable) == train_rows(straight)[:4]
    decayed = start(
        tmp_path,
        "decayed",
        *decay_at_8,
        resume=("training.resume.is_resume=true", "training.resume.resume_pretraining_name=stable"),
    )
    assert train_rows(decayed, after=8) == train_rows(straight, after=8)
    assert same_weights(decayed, straight)


def test_span_masking_with_a_rate_schedule_and_one_cycle_resume_exactly(tmp_path, monkeypatch):
    overrides = (
        "training.max_steps=12",
        "training/scheduler=one_cycle",
        "mlm_head.masking.unit=span",
        "mlm_head.masking.probability=0.3",
        "mlm_head.masking.final_probability=0.15",
    )
    straight = start(tmp_path, "straight", *overrides)
    cut = interrupted_and_resumed(tmp_path, monkeypatch, *overrides)
    assert train_rows(cut) == train_rows(straight)
    assert same_weights(cut, straight)
