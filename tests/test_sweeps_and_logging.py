"""Multirun folders, group swaps, W&B offline, and reproducibility from the seed."""

from __future__ import annotations

import json

from bertlab.run import run
from tests.conftest import FAST, RUN_ARTIFACTS, compose_config, launch, read_csv


def test_multirun_gives_each_job_its_own_folder_and_wandb_run_in_the_sweeps_group(tmp_path):
    launch(
        ["+experiment=smoke", "logging=wandb", "training.max_steps=4", "training.optimizer.lr=1e-3,3e-4"],
        tmp_path,
        flags=("-m",),
    )
    sweeps = list((tmp_path / "pretraining" / "sweeps").iterdir())
    assert len(sweeps) == 1 and sweeps[0].name.startswith("smoke_")
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and p.name.startswith("job"))
    assert [job.name for job in jobs] == [
        "job0_logging-wandb,training.max_steps-4,training.optimizer.lr-0.001",
        "job1_logging-wandb,training.max_steps-4,training.optimizer.lr-0.0003",
    ]
    for job in jobs:
        assert all((job / artifact).is_file() for artifact in RUN_ARTIFACTS), job
    assert "lr: 0.0003" in (jobs[1] / ".hydra/config.yaml").read_text()

    wandb_runs = [json.loads((job / "run.json").read_text())["wandb"] for job in jobs]
    assert [run["group"] for run in wandb_runs] == [sweeps[0].name] * 2
    assert [run["mode"] for run in wandb_runs] == ["offline"] * 2
    assert len({run["id"] for run in wandb_runs}) == 2
    for job, wandb_run in zip(jobs, wandb_runs, strict=True):
        assert len(list((job / "wandb").glob(f"offline-run-*-{wandb_run['id']}"))) == 1


def test_group_swaps_bert_mini_bpe_and_wandb_offline(tmp_path):
    launch(
        [
            "+experiment=pretrain",
            "experiment.name=mini_bpe",
            "architecture=bert_mini",
            "tokenizer=bpe",
            "logging=wandb",
            *FAST,
            "training.max_steps=4",
        ],
        tmp_path,
    )
    run_dir = tmp_path / "pretraining" / "mini_bpe"
    assert all((run_dir / artifact).is_file() for artifact in RUN_ARTIFACTS)
    assert '"type": "BPE"' in (run_dir / "tokenizer.json").read_text()
    run_id = (run_dir / "wandb-run-id.txt").read_text().strip()
    offline_runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline_runs) == 1, list((run_dir / "wandb").iterdir())


def test_same_seed_gives_identical_losses(tmp_path):
    losses = []
    for name in ("first", "second"):
        cfg = compose_config(
            ["+experiment=pretrain", f"experiment.name={name}", *FAST, "training.max_steps=8"], tmp_path
        )
        run_dir = tmp_path / "pretraining" / name
        run(cfg, run_dir)
        losses.append([row["loss"] for row in read_csv(run_dir / "metrics/train/metrics.csv")])
        losses.append([row["loss"] for row in read_csv(run_dir / "metrics/eval/metrics.csv")])
    assert losses[0] == losses[2] and losses[1] == losses[3]
    assert len(losses[0]) == 4
