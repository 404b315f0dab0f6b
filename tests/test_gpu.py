"""On a CUDA GPU in bf16: the default pretraining, a finetune from it, SIGTERM + resume, and torch.compile.

Marked `gpu`: collected everywhere, skipped with the reason where no CUDA GPU is visible (tests/conftest.py).
benchmarks/gpu_check.py runs them, then times bert_base against Hugging Face.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bertlab.run import run
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import FAST, RUN_ARTIFACTS, compose_config, read_csv
from tests.test_resume import STEPS, interrupt_at, weights

pytestmark = pytest.mark.gpu
ON_GPU = ["training.accelerator=gpu", "training.precision=bf16-mixed"]


def pretrain(output_dir, name, *overrides):
    run_dir = output_dir / "pretraining" / name
    cfg = compose_config(
        ["+experiment=pretrain", f"experiment.name={name}", *FAST, *ON_GPU, *overrides], output_dir
    )
    run(cfg, run_dir)
    return run_dir


def test_default_pretraining_then_finetune_on_cuda_in_bf16(tmp_path):
    run_dir = pretrain(tmp_path, "shared")
    for relative in RUN_ARTIFACTS:
        assert (run_dir / relative).is_file(), relative
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["accelerator"], info["precision"]) == ("gpu", "bf16-mixed")
    assert info["num_workers"] > 0  # auto: a few workers on CUDA
    rows = read_csv(run_dir / "metrics/train/metrics.csv")
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    if info["peak_tflops"] is not None:  # a GPU of the table: MFU is reported and plausible
        assert 0 < info["mfu_mean"] < 1 and "mfu" in rows[0]
    state = torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    finetune = tmp_path / "finetuning" / "from_gpu"
    cfg = compose_config(
        [
            "+experiment=finetune",
            "experiment.name=from_gpu",
            "pretrained_experiment.name=shared",
            "training.max_epochs=2",
            "training.min_steps=null",
            "training.batch_size=16",
            "data.source.count=600",
            "tokenizer.max_length=48",
            *ON_GPU,
        ],
        tmp_path,
    )
    run(cfg, finetune)
    assert (finetune / "predictions.csv").is_file()
    assert json.loads((finetune / "run.json").read_text())["accelerator"] == "gpu"


def test_sigterm_then_resume_on_cuda_matches_straight_training(tmp_path, monkeypatch):
    straight = pretrain(tmp_path, "straight", *STEPS)
    with monkeypatch.context() as patch:
        interrupt_at(patch, 9)
        with pytest.raises(TrainingInterrupted):
            pretrain(tmp_path, "cut", *STEPS)
    cut = tmp_path / "pretraining" / "cut"
    assert torch.load(cut / "checkpoints/model.ckpt", weights_only=True)["global_step"] == 9
    pretrain(tmp_path, "cut", *STEPS, "training.resume.is_resume=true")
    straight_rows = read_csv(straight / "metrics/train/metrics.csv")
    cut_rows = read_csv(cut / "metrics/train/metrics.csv")
    assert [r["step"] for r in cut_rows] == [r["step"] for r in straight_rows]
    # deterministic=true: the same kernels in the same order; allow for nothing more than bf16 rounding
    for a, b in zip(straight_rows, cut_rows, strict=True):
        assert float(b["loss"]) == pytest.approx(float(a["loss"]), rel=1e-3)
    final_straight, final_cut = weights(straight), weights(cut)
    assert all(torch.allclose(final_straight[k], final_cut[k], atol=1e-4) for k in final_straight)


def test_compiled_pretraining_on_cuda(tmp_path):
    run_dir = pretrain(tmp_path, "compiled", "training.compile=true", "training.max_steps=8")
    rows = read_csv(run_dir / "metrics/train/metrics.csv")
    assert [int(r["step"]) for r in rows][-1] == 8
    assert all(math.isfinite(float(r["loss"])) for r in rows)
