"""Sweeps through Hydra's plugins (the `sweeps` extra): Optuna trials, joblib and submitit-local launchers,
and the SLURM preset's submission."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bertlab.launcher.registration import register as register_schemas
from tests.conftest import CONF, FAST, RUN_ARTIFACTS, launch, read_csv

# conftest.FAST without its step budget and validation cadence, which these tests set themselves.
SMALL = [o for o in FAST if not o.startswith(("training.max_steps=", "training.val_check_interval="))]
SEARCH_PARAMS = {
    "training.optimizer.lr",
    "training.scheduler.warmup_ratio",
    "training.optimizer.weight_decay",
}


def sweep_folder(output_dir: Path, kind: str = "pretraining") -> Path:
    """The one sweep folder a multirun wrote under `output_dir`."""
    (folder,) = (output_dir / kind / "sweeps").iterdir()
    return folder


def job_folders(sweep: Path) -> list[Path]:
    """The sweep's job folders in job order (job0, job1, ..., job10); skips .submitit and files."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and re.match(r"job\d+_", p.name)]
    return sorted(jobs, key=lambda p: int(re.match(r"job(\d+)_", p.name).group(1)))


def assert_complete(job: Path) -> None:
    missing = [artifact for artifact in RUN_ARTIFACTS if not (job / artifact).is_file()]
    assert not missing, f"{job.name} lacks {missing}"


def val_rows(job: Path) -> list[dict[str, str]]:
    return [row for row in read_csv(job / "metrics/eval/metrics.csv") if row["stage"] == "val"]


def test_finetune_optuna_maximises_macro_f1_and_reports_the_baseline(tmp_path):
    launch(
        [
            "+experiment=finetune",
            "hparams_search=finetune_optuna",
            "hydra.sweeper.n_trials=2",
            "pretrained_experiment=none",
            "data.source.count=200",
            "tokenizer.vocab_size=300",
            "tokenizer.max_length=48",
            "training.max_epochs=range(1,3)",  # a narrower range than the preset's, for speed
        ],
        tmp_path,
        flags=("-m",),
    )
    sweep = sweep_folder(tmp_path, "finetuning")
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {
        "training.optimizer.lr",
        "training.max_epochs",
        "training.scheduler.warmup_ratio",
        "training.layerwise_lr_decay",
    }
    rows = read_csv(sweep / "summary.csv")
    assert [row["status"] for row in rows] == ["completed", "completed"]
    assert all(row["monitor"] == "val/macro_f1" and row["baseline_test_accuracy"] for row in rows)
    best = max(rows, key=lambda row: float(row["best_value"]))
    assert best["best"] == "true" and float(best["best_value"]) == pytest.approx(results.best_value)


def test_optuna_search_runs_trials_and_names_the_best(tmp_path):
    launch(
        [
            "+experiment=pretrain",
            "hparams_search=pretrain_optuna",
            "hydra.sweeper.n_trials=3",
            *SMALL,
            "training.max_steps=10",
        ],
        tmp_path,
        flags=("-m",),
    )
    sweep = sweep_folder(tmp_path)
    assert sweep.name.startswith("pretrain_optuna_")
    jobs = job_folders(sweep)
    assert len(jobs) == 3
    final_loss = {}
    for job in jobs:
        assert_complete(job)
        # The search validates after the last step although experiment=pretrain validates every 100 steps.
        last = val_rows(job)[-1]
        assert last["step"] == "10"
        final_loss[job] = float(last["loss"])
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == SEARCH_PARAMS
    assert len(set(final_loss.values())) == 3  # three different trials
    # The objective is each run's best validation loss; the best parameters are those of its job.
    best_job = min(final_loss, key=final_loss.get)
    assert results.best_value == pytest.approx(final_loss[best_job])
    overrides = OmegaConf.load(best_job / ".hydra/overrides.yaml")
    assert {f"{key}={value}" for key, value in results.best_params.items()} <= set(overrides)
    summary = read_csv(sweep / "summary.csv")
    assert [row["status"] for row in summary] == ["completed"] * 3
    (best_row,) = [row for row in summary if row["best"] == "true"]
    assert best_row["run_dir"] == best_job.name
    assert float(best_row["best_value"]) == pytest.approx(results.best_value)


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        ["hydra/launcher=submitit_local"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_parallel_launcher_gives_each_job_its_own_complete_folder(tmp_path, launcher):
    launch(
        ["+experiment=smoke", *launcher, "training.max_steps=4", "training.optimizer.lr=1e-3,3e-4"],
        tmp_path,
        flags=("-m",),
    )
    sweep = sweep_folder(tmp_path)
    jobs = job_folders(sweep)
    assert [job.name for job in jobs] == [
        "job0_training.max_steps-4,training.optimizer.lr-0.001",
        "job1_training.max_steps-4,training.optimizer.lr-0.0003",
    ]
    for job in jobs:
        assert_complete(job)
    assert "lr: 0.0003" in (jobs[1] / ".hydra/config.yaml").read_text()


def test_slurm_preset_asks_for_one_task_per_gpu(tmp_path, monkeypatch):
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "+experiment=smoke",
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "training.devices=2",
                f"experiment.output_dir={tmp_path}",
            ],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    params = dict(launcher.params)
    assert params["tasks_per_node"] == params["gpus_per_node"] == 2
    assert params["nodes"] == cfg.training.num_nodes == 1
    assert params["submitit_folder"].startswith(str(tmp_path / "pretraining" / "sweeps" / "smoke_"))

    # The executor the launcher builds (BaseSubmititLauncher.launch), on a pretend cluster: submitit only
    # looks for srun on PATH. update_parameters rejects any key sbatch would not know.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path / "submitit", slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    params.pop("submitit_folder")
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python launch.py", "0")
    for line in ("--partition=gpu", "--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=2"):
        assert f"#SBATCH {line}\n" in script, script
