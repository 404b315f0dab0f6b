"""Exact resume: interrupted + resumed equals straight, to the bit; and resume's refusals."""

from __future__ import annotations

import os
import shutil
import signal

import lightning as L
import pytest
import torch

import bertlab.flow
from bertlab.errors import BertlabError
from bertlab.run import run
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import FAST, compose_config, read_csv, snapshot

STEPS = ["training.max_steps=20", "training.val_check_interval=6", "training.checkpoint.every_n_steps=5"]


class SignalAtStep(L.Callback):
    """Sends this process a real SIGTERM during step `step`, as a cluster's preemption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def interrupt_at(monkeypatch, step: int) -> None:
    original = bertlab.flow.create_trainer

    def with_signal(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(SignalAtStep(step))
        return trainer

    monkeypatch.setattr(bertlab.flow, "create_trainer", with_signal)


def weights(run_dir):
    return torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["state_dict"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # forced, whatever this CPU would pick
def test_sigterm_then_resume_equals_straight_training(tmp_path, monkeypatch, precision):
    settings = [*FAST, *STEPS, f"training.precision={precision}"]
    straight = tmp_path / "pretraining" / "straight"
    run(compose_config(["+experiment=pretrain", "experiment.name=straight", *settings], tmp_path), straight)

    cut = tmp_path / "pretraining" / "cut"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 9)  # mid-epoch, between periodic checkpoints
        with pytest.raises(TrainingInterrupted):  # launch.py exits with status 75
            run(compose_config(["+experiment=pretrain", "experiment.name=cut", *settings], tmp_path), cut)
    assert torch.load(cut / "checkpoints/model.ckpt", weights_only=True)["global_step"] == 9
    assert [int(r["step"]) for r in read_csv(cut / "metrics/train/metrics.csv")][-1] == 8

    plotted_at_interruption = (cut / "plots/loss.png").stat().st_mtime_ns
    resumed = ["+experiment=pretrain", "experiment.name=cut", *settings, "training.resume.is_resume=true"]
    run(compose_config(resumed, tmp_path), cut)
    assert (cut / "plots/loss.png").stat().st_mtime_ns > plotted_at_interruption  # redrawn on completion

    straight_rows = read_csv(straight / "metrics/train/metrics.csv")
    cut_rows = read_csv(cut / "metrics/train/metrics.csv")
    assert [r["step"] for r in cut_rows] == [str(s) for s in range(2, 21, 2)]
    assert [(r["step"], r["loss"], r["lr"]) for r in cut_rows] == [
        (r["step"], r["loss"], r["lr"]) for r in straight_rows
    ]
    straight_val = [(r["step"], r["loss"]) for r in read_csv(straight / "metrics/eval/metrics.csv")]
    cut_val = [(r["step"], r["loss"]) for r in read_csv(cut / "metrics/eval/metrics.csv")]
    assert cut_val == straight_val
    final_straight, final_cut = weights(straight), weights(cut)
    assert final_straight.keys() == final_cut.keys()
    assert all(torch.equal(final_straight[k], final_cut[k]) for k in final_straight)


def test_resuming_a_run_that_does_not_exist_fails_and_creates_nothing(tmp_path):
    cfg = compose_config(
        ["+experiment=pretrain", "experiment.name=ghost", "training.resume.is_resume=true"], tmp_path
    )
    with pytest.raises(BertlabError, match=r"cannot resume: there is no run in '.*ghost'"):
        run(cfg, tmp_path / "pretraining" / "ghost")
    assert not (tmp_path / "pretraining").exists()


def test_weights_only_restarts_schedule_and_strict_false_lists_mismatches(tmp_path, pretrained_run, caplog):
    output_dir = pretrained_run.parent.parent
    overrides = [
        "+experiment=pretrain",
        "experiment.name=weights_only",
        *FAST,
        "training.max_steps=4",
        "training.resume.is_resume=true",
        "training.resume.resume_pretraining_name=shared",
        "training.resume.load_only_model_state=true",
    ]
    before = snapshot(pretrained_run)
    run(compose_config(overrides, output_dir), output_dir / "pretraining" / "weights_only")
    rows = read_csv(output_dir / "pretraining" / "weights_only" / "metrics/train/metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4]  # the step count restarted
    assert snapshot(pretrained_run) == before  # the source run is never written to

    mismatched = [*overrides[:-1], "training.resume.load_only_model_state=true", "architecture.num_layers=3"]
    mismatched[1] = "experiment.name=deeper"
    with pytest.raises(
        BertlabError, match=r"architecture\.num_layers: was 2 in the run being resumed and is 3 now"
    ):
        run(compose_config(mismatched, output_dir), output_dir / "pretraining" / "deeper")
    lenient = [*mismatched, "training.resume.strict=false"]
    lenient[1] = "experiment.name=deeper_lenient"
    run(compose_config(lenient, output_dir), output_dir / "pretraining" / "deeper_lenient")
    assert "missing: backbone.layers.2.attention.qkv.weight" in caplog.text


def test_resume_refuses_model_or_data_changes_and_corrupt_checkpoints(tmp_path, pretrained_run):
    output_dir = pretrained_run.parent.parent
    before = snapshot(pretrained_run)
    resume = ["+experiment=pretrain", "experiment.name=shared", *FAST, "training.resume.is_resume=true"]
    with pytest.raises(
        BertlabError, match=r"mlm_head\.masking\.probability: was 0\.15 in the run being resumed"
    ):
        run(compose_config([*resume, "mlm_head.masking.probability=0.3"], output_dir), pretrained_run)
    assert snapshot(pretrained_run) == before

    copy = tmp_path / "pretraining" / "shared"
    shutil.copytree(pretrained_run, copy)
    checkpoint = copy / "checkpoints/model.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(BertlabError, match=r"model\.ckpt' cannot be read .* corrupt"):
        run(compose_config(resume, tmp_path), copy)


def test_thread_count_is_pinned_recorded_restored_and_a_resume_at_another_count_warns(
    tmp_path, pretrained_run, caplog
):
    """Sums over 2 threads run in another order than over 1: the count is part of what a run was."""
    import json

    output_dir = pretrained_run.parent.parent
    shared_info = json.loads((pretrained_run / "run.json").read_text())
    assert shared_info["cpu_threads"] == 1  # OMP_NUM_THREADS=1
    assert shared_info["learning_rate"] == {"lr": 1e-3}  # auto, from random initialisation
    threads_before = torch.get_num_threads()
    overrides = [
        "+experiment=pretrain",
        "experiment.name=more_threads",
        *FAST,
        "training.max_steps=18",
        "training.cpu_threads=2",
        "training.resume.is_resume=true",
        "training.resume.resume_pretraining_name=shared",
    ]
    run(compose_config(overrides, output_dir), output_dir / "pretraining" / "more_threads")
    info = json.loads((output_dir / "pretraining" / "more_threads" / "run.json").read_text())
    assert (info["cpu_threads"], info["resumed_at_step"]) == (2, 16)
    assert torch.get_num_threads() == threads_before  # the process keeps its own count
    assert (
        "training.cpu_threads: resuming with 2 CPU threads, the run trained with 1; it goes on, but not "
        "bit-identical to an uninterrupted run" in caplog.text
    )
