"""Run plots from metric CSVs, the sweep summary from job records, and the summary of a real multirun."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import matplotlib.image
import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bertlab.launcher.sweep_callbacks import SweepSummary
from bertlab.reporting.plots import plot_run, run_figures, write_run_plots
from bertlab.reporting.sweep_summary import (
    DIED_ERROR,
    FIXED_COLUMNS,
    RECORD_FILE,
    error_text,
    final_metrics,
    read_records,
    record_job,
    summary_figure,
    write_sweep_summary,
)
from bertlab.run_folder import EVAL_METRICS, RESULTS_FILE, TRAIN_METRICS
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import launch, read_csv

PRETRAIN_TRAIN = """step,epoch,loss,lr,tokens_per_s
2,0,6.1,0.0005,7000.0
4,0,5.8,0.001,7100.0
6,0,5.5,0.0008,7050.0
8,1,5.2,0.0004,7200.0
"""
PRETRAIN_EVAL = """step,epoch,stage,loss,perplexity,accuracy
0,0,val,6.2,492.7,0.01
4,0,val,5.7,298.9,0.08
8,1,val,5.3,200.3,0.12
8,1,test,5.35,210.6,0.11
"""
FINETUNE_EVAL = """step,epoch,stage,loss,accuracy,macro_f1
0,0,val,0.69,0.5,
10,1,val,0.41,0.81,0.79
20,2,val,0.33,0.88,0.87
20,2,test,0.35,0.86,0.85
"""


def write_metrics(run_dir: Path, train: str | None, evaluation: str | None) -> Path:
    for relative, text in ((TRAIN_METRICS, train), (EVAL_METRICS, evaluation)):
        if text is not None:
            (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / relative).write_text(text)
    return run_dir


def assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # something is drawn, not a blank canvas


def test_pretraining_run_gets_one_labelled_plot_per_quantity(tmp_path):
    run_dir = write_metrics(tmp_path / "mlm_run", PRETRAIN_TRAIN, PRETRAIN_EVAL)
    written = write_run_plots(run_dir)
    assert sorted(path.name for path in written) == [
        "accuracy.png",
        "learning_rate.png",
        "loss.png",
        "perplexity.png",
    ]
    assert all(path.parent == run_dir / "plots" for path in written)
    for path in written:
        assert_png(path)
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == sorted(p.name for p in written)

    figures = run_figures(run_dir)
    assert set(figures) == {"loss", "learning_rate", "perplexity", "accuracy"}
    for name, figure in figures.items():
        (axes,) = figure.axes
        assert axes.get_xlabel() == "optimizer step"
        assert axes.get_ylabel() == name.replace("_", " ")
        assert "mlm_run" in axes.get_title()
    loss_axes = figures["loss"].axes[0]
    assert [label.get_text() for label in loss_axes.get_legend().get_texts()] == [
        "train",
        "val",
        "test (best model)",
    ]
    train_line, val_line = loss_axes.get_lines()
    assert list(train_line.get_xdata()) == [2, 4, 6, 8]
    assert list(val_line.get_ydata()) == [6.2, 5.7, 5.3]


def test_finetuning_run_skips_what_has_no_data(tmp_path):
    run_dir = write_metrics(tmp_path / "cls_run", "step,epoch,loss,lr\n", FINETUNE_EVAL)
    written = plot_run(run_dir)
    assert sorted(path.name for path in written) == ["accuracy.png", "loss.png", "macro_f1.png"]
    figures = run_figures(run_dir)
    assert figures["macro_f1"].axes[0].get_ylabel() == "macro f1"
    (val_line,) = figures["macro_f1"].axes[0].get_lines()
    assert list(val_line.get_xdata()) == [10, 20]  # the empty baseline cell is NaN, left out
    assert [text.get_text() for text in figures["loss"].axes[0].get_legend().get_texts()] == [
        "val",
        "test (best model)",
    ]


@pytest.mark.parametrize(
    ("train", "evaluation"),
    [(None, None), ("step,epoch,loss,lr,tokens_per_s\n", "step,epoch,stage,loss,perplexity,accuracy\n")],
    ids=["missing", "header-only"],
)
def test_missing_or_empty_csvs_give_no_plot_and_no_error(tmp_path, train, evaluation):
    run_dir = write_metrics(tmp_path / "run", train, evaluation)
    run_dir.mkdir(exist_ok=True)
    assert plot_run(run_dir) == []
    assert write_run_plots(run_dir) == []
    assert not (run_dir / "plots").exists()


def test_replot_replaces_files_and_a_failure_is_only_a_warning(tmp_path, caplog):
    run_dir = write_metrics(tmp_path / "run", PRETRAIN_TRAIN, PRETRAIN_EVAL)
    first = {path: path.read_bytes() for path in plot_run(run_dir)}
    (run_dir / EVAL_METRICS).write_text(PRETRAIN_EVAL + "12,1,val,5.0,148.4,0.2\n")
    second = plot_run(run_dir)
    assert set(second) == set(first)
    assert (run_dir / "plots/loss.png").read_bytes() != first[run_dir / "plots/loss.png"]
    assert [p.name for p in (run_dir / "plots").iterdir() if not p.name.endswith(".png")] == []

    broken = write_metrics(tmp_path / "broken", PRETRAIN_TRAIN, PRETRAIN_EVAL)
    (broken / "plots").write_text("a file where the plots folder should be")
    with pytest.raises(OSError):
        plot_run(broken)
    with caplog.at_level(logging.WARNING):
        assert write_run_plots(broken) == []
    assert "could not plot the metrics" in caplog.text


def fabricate_sweep(sweep_dir: Path, mode: str) -> None:
    """Jobs 0 and 2 completed (best values 2.5 and 1.5), job 1 failed after writing one train row."""
    for job, value in ((0, 2.5), (2, 1.5)):
        run_dir = write_metrics(
            sweep_dir / f"job{job}_lr-{job}",
            PRETRAIN_TRAIN,
            PRETRAIN_EVAL.replace("5.3,200.3", f"{value},200.3"),
        )
        record_job(run_dir, job, "completed", [f"lr={job}", "seed=1"], "val/loss", mode, value=value)
    failed = write_metrics(
        sweep_dir / "job1_lr-1", "step,epoch,loss,lr,tokens_per_s\n2,0,6.1,0.0005,7000.0\n", None
    )
    error = ValueError("architecture.num_heads: 3 heads do not divide\nhidden_size 128")
    record_job(failed, 1, "failed", ["lr=1", "seed=1"], "val/loss", mode, error=error)


@pytest.mark.parametrize(("mode", "best_job"), [("min", "2"), ("max", "0")])
def test_sweep_summary_marks_the_best_job_and_the_failure(tmp_path, mode, best_job):
    sweep_dir = tmp_path / "sweep_2024"
    fabricate_sweep(sweep_dir, mode)
    table, figure = write_sweep_summary(sweep_dir)
    assert (table, figure) == (sweep_dir / "summary.csv", sweep_dir / "summary.png")

    rows = read_csv(table)
    header = table.read_text().splitlines()[0].split(",")
    assert header[: len(FIXED_COLUMNS)] == list(FIXED_COLUMNS)
    assert header[len(FIXED_COLUMNS) :] == [
        "final_val_loss",
        "final_val_perplexity",
        "final_val_accuracy",
        "test_loss",
        "test_perplexity",
        "test_accuracy",
    ]
    assert [row["job"] for row in rows] == ["0", "1", "2"]
    assert [row["status"] for row in rows] == ["completed", "failed", "completed"]
    assert [row["job"] for row in rows if row["best"] == "true"] == [best_job]
    assert [row["best"] for row in rows].count("") == 2
    completed, failed = rows[0], rows[1]
    assert completed["best_value"] == "2.5" and completed["monitor"] == "val/loss"
    assert completed["overrides"] == "lr=0 seed=1"
    assert completed["final_step"] == "8" and completed["final_train_loss"] == "5.2"
    assert completed["final_val_loss"] == "2.5" and completed["test_accuracy"] == "0.11"
    assert completed["run_dir"] == "job0_lr-0" and completed["error"] == ""
    assert failed["error"] == "ValueError: architecture.num_heads: 3 heads do not divide hidden_size 128"
    assert failed["best_value"] == "" and failed["final_val_loss"] == ""
    assert failed["final_step"] == "2" and failed["final_train_loss"] == "6.1"
    assert_png(figure)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(table.stat().st_mode) == 0o666 & ~umask  # readable by whoever shares the sweep


def test_a_job_without_a_value_is_never_best_and_errors_stay_short(tmp_path):
    sweep_dir = tmp_path / "sweep"
    record_job(sweep_dir / "job0", 0, "completed", [], "val/loss", "min", value=None)
    record_job(sweep_dir / "job1", 1, "completed", [], "val/loss", "min", value=float("nan"))
    record_job(sweep_dir / "job2", 2, "failed", [], "val/loss", "min", error=RuntimeError("x\n" * 600))
    rows = read_csv(write_sweep_summary(sweep_dir)[0])
    assert [row["best"] for row in rows] == ["", "", ""]
    assert len(rows[2]["error"]) <= 500 and "\n" not in rows[2]["error"]
    assert rows[2]["error"].startswith("RuntimeError: x x")
    assert error_text("plain text") == "plain text"


def job_config(sweep_dir: Path, job: int, mode: RunMode) -> DictConfig:
    """The parts of a Hydra job config the callback reads."""
    return OmegaConf.create(
        {
            "hydra": {
                "mode": mode,
                "sweep": {"dir": str(sweep_dir)},
                "runtime": {"output_dir": str(sweep_dir / f"job{job}")},
                "job": {"num": job},
                "overrides": {"task": [f"lr={job}"]},
            },
            "training": {"checkpoint": {"monitor": "val/accuracy", "mode": "max"}},
        }
    )


def test_callback_records_multirun_jobs_on_the_main_process_only(tmp_path, monkeypatch, caplog):
    callback, sweep_dir = SweepSummary(), tmp_path / "sweep"
    completed = JobReturn(status=JobStatus.COMPLETED, _return_value=0.75)
    failed = JobReturn(status=JobStatus.FAILED, _return_value=KeyError("missing"))

    callback.on_job_end(job_config(sweep_dir, 0, RunMode.RUN), completed)
    assert not sweep_dir.exists()
    monkeypatch.setenv("RANK", "1")
    callback.on_job_end(job_config(sweep_dir, 0, RunMode.MULTIRUN), completed)
    assert not sweep_dir.exists()
    monkeypatch.delenv("RANK")

    callback.on_job_end(job_config(sweep_dir, 0, RunMode.MULTIRUN), completed)
    callback.on_job_end(job_config(sweep_dir, 1, RunMode.MULTIRUN), failed)
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(row["job"], row["status"], row["best"], row["best_value"]) for row in rows] == [
        ("0", "completed", "true", "0.75"),
        ("1", "failed", "", ""),
    ]
    assert rows[1]["error"] == "KeyError: 'missing'" and rows[0]["monitor"] == "val/accuracy"

    (sweep_dir / "summary.csv").unlink()
    callback.on_multirun_end(job_config(sweep_dir, 0, RunMode.MULTIRUN))
    assert len(read_csv(sweep_dir / "summary.csv")) == 2

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING):
        callback.on_job_start(job_config(blocked, 0, RunMode.MULTIRUN), task_function=None)
        callback.on_job_end(job_config(blocked, 0, RunMode.MULTIRUN), completed)
        callback.on_multirun_end(job_config(blocked, 0, RunMode.MULTIRUN))
    assert caplog.text.count("sweep summary") == 3


def statuses(sweep_dir: Path) -> list[tuple[str, str, str]]:
    return [(row["job"], row["status"], row["best"]) for row in read_csv(sweep_dir / "summary.csv")]


def test_a_job_that_never_ends_is_running_then_died_when_the_sweep_ends(tmp_path):
    callback, sweep_dir = SweepSummary(), tmp_path / "sweep"
    callback.on_job_start(job_config(sweep_dir, 0, RunMode.RUN), task_function=None)
    assert not sweep_dir.exists()

    for job in (0, 1, 2):
        callback.on_job_start(job_config(sweep_dir, job, RunMode.MULTIRUN), task_function=None)
    assert statuses(sweep_dir) == [("0", "running", ""), ("1", "running", ""), ("2", "running", "")]
    started = read_csv(sweep_dir / "summary.csv")[2]
    assert (started["monitor"], started["overrides"], started["run_dir"]) == ("val/accuracy", "lr=2", "job2")
    assert started["best_value"] == started["error"] == started["final_step"] == ""

    # Job 0 validates last at 0.8 though its best was 0.9; job 1 is killed and never reports.
    write_metrics(
        sweep_dir / "job0", None, "step,epoch,stage,loss,accuracy\n4,0,val,0.5,0.9\n8,0,val,0.6,0.8\n"
    )
    callback.on_job_end(
        job_config(sweep_dir, 0, RunMode.MULTIRUN), JobReturn(status=JobStatus.COMPLETED, _return_value=0.9)
    )
    callback.on_job_end(
        job_config(sweep_dir, 2, RunMode.MULTIRUN),
        JobReturn(status=JobStatus.FAILED, _return_value=KeyError("x")),
    )
    assert statuses(sweep_dir) == [("0", "completed", "true"), ("1", "running", ""), ("2", "failed", "")]

    callback.on_multirun_end(job_config(sweep_dir, 0, RunMode.MULTIRUN))
    rows = read_csv(sweep_dir / "summary.csv")
    assert statuses(sweep_dir) == [("0", "completed", "true"), ("1", "died", ""), ("2", "failed", "")]
    assert rows[1]["error"] == DIED_ERROR and rows[1]["overrides"] == "lr=1"

    # The right panel: the final value of the monitored metric, the best job marked by its best value.
    bars = summary_figure(sweep_dir, read_records(sweep_dir, sweep_ended=True)).axes[1]
    assert [bar.get_height() for bar in bars.patches] == [0.8, 0.0, 0.0]
    assert [text.get_text() for text in bars.texts] == ["best\n0.8", "died", "failed"]
    assert bars.get_ylabel() == "final val/accuracy"
    assert bars.get_title() == "final val/accuracy per job (best: job0)"


def test_an_interrupted_sweep_job_is_recorded_as_interrupted(tmp_path):
    callback, sweep_dir = SweepSummary(), tmp_path / "sweep"
    config = job_config(sweep_dir, 0, RunMode.MULTIRUN)
    callback.on_job_start(config, task_function=None)
    stop = TrainingInterrupted(12, Path("job0/checkpoints/model.ckpt"))
    callback.on_job_end(config, JobReturn(status=JobStatus.FAILED, _return_value=stop))
    callback.on_multirun_end(config)
    (row,) = read_csv(sweep_dir / "summary.csv")
    assert (row["status"], row["best"], row["best_value"]) == ("interrupted", "", "")
    assert row["error"] == "TrainingInterrupted: stopped at step 12; checkpoint job0/checkpoints/model.ckpt"


def test_multirun_with_a_failing_job_writes_the_summary(tmp_path):
    result = launch(
        [
            "+experiment=smoke",
            "training.max_steps=4",  # smoke validates at step 8; every run also validates at its last step
            "architecture.num_heads=2,3,4",
        ],
        tmp_path,
        check=False,
        flags=("-m",),
    )
    assert result.returncode == 1, result.stderr[-3000:]  # Hydra re-raises the failed job after the batch
    (sweep_dir,) = (tmp_path / "pretraining" / "sweeps").iterdir()
    assert len(list(sweep_dir.glob(f"*/{RECORD_FILE}"))) == 3
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(row["job"], row["status"]) for row in rows] == [  # each job's `running` record replaced
        ("0", "completed"),
        ("1", "failed"),
        ("2", "completed"),
    ]
    for row in (rows[0], rows[2]):
        assert float(row["best_value"]) > 0 and float(row["final_val_loss"]) > 0
        assert float(row["test_loss"]) > 0 and row["final_step"] == "4" and row["monitor"] == "val/loss"
        assert (sweep_dir / row["run_dir"] / "checkpoints/best-model.ckpt").is_file()
    assert "num_heads" in rows[1]["error"] and rows[1]["best_value"] == ""
    assert "architecture.num_heads=3" in rows[1]["overrides"]
    assert [row["best"] for row in rows].count("true") == 1
    best = next(row for row in rows if row["best"] == "true")
    assert float(best["best_value"]) == min(float(rows[0]["best_value"]), float(rows[2]["best_value"]))
    assert_png(sweep_dir / "summary.png")


def test_a_finetunes_linear_baseline_stands_beside_its_test_row(tmp_path):
    (tmp_path / EVAL_METRICS).parent.mkdir(parents=True)
    (tmp_path / EVAL_METRICS).write_text(
        "step,epoch,stage,loss,accuracy,macro_f1\n10,1,val,0.5,0.8,0.7\n10,1,test,0.6,0.75,0.7\n"
    )
    (tmp_path / RESULTS_FILE).write_text(
        json.dumps(
            {"test/accuracy": 0.75, "baseline": {"test/accuracy": 0.7, "test/macro_f1": 0.65, "C": 4.0}}
        )
    )
    metrics = final_metrics(tmp_path)
    assert (metrics["test_accuracy"], metrics["baseline_test_accuracy"]) == ("0.75", "0.7")
    assert metrics["baseline_test_macro_f1"] == "0.65"
    assert list(metrics)[-2:] == ["baseline_test_accuracy", "baseline_test_macro_f1"]
