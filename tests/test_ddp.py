"""DDP on CPU: two processes, one run folder; and the sweep that cannot re-launch processes fails fast."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from bertlab.data.sampler import EpochShuffleSampler
from bertlab.errors import BertlabError
from bertlab.saved_run import read_checkpoint
from bertlab.training.distributed import is_main_process, refuse_relaunch_in_sweep, relaunches_processes
from tests.conftest import FAST, launch, read_csv

DDP = ["training.accelerator=cpu", "training.devices=2", "training.strategy=ddp"]


def test_sampler_shards_are_disjoint_equal_and_cover_the_epoch():
    whole = EpochShuffleSampler(103, seed=7)
    whole.set_epoch(3)
    shards = []
    for rank in range(4):
        sampler = EpochShuffleSampler(103, seed=7, rank=rank, world_size=4)
        sampler.set_epoch(3)
        shards.append([index for _, index in sampler])
    assert [len(shard) for shard in shards] == [25] * 4
    assert sorted(index for shard in shards for index in shard) == sorted(
        index for _, index in list(whole)[:100]
    )
    assert shards[1] == [index for _, index in list(whole)[1:100:4]]


def test_main_process_is_known_from_the_environment(monkeypatch):
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "JSM_NAMESPACE_RANK", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert is_main_process()
    monkeypatch.setenv("LOCAL_RANK", "1")  # a child Lightning started
    assert not is_main_process()
    monkeypatch.setenv("SLURM_PROCID", "0")  # inside `srun --pty bash`: SLURM does not manage the processes
    assert not is_main_process()
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_PROCID", "1")  # SLURM started one task per device
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "bertlab")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")  # a global rank wins
    assert is_main_process()


def test_relaunch_detection_respects_cluster_launchers(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "LSB_JOBID"):
        monkeypatch.delenv(name, raising=False)
    assert relaunches_processes("ddp", 2)
    assert not relaunches_processes("ddp", 1)
    assert relaunches_processes("auto", 2)  # Lightning picks subprocess DDP for several devices
    assert not relaunches_processes("auto", 1)
    assert relaunches_processes("fsdp", 2)
    assert not relaunches_processes("single_device", 2)
    assert not relaunches_processes("ddp_spawn", 2)
    with pytest.raises(BertlabError, match=r"training\.strategy: .*hydra/launcher=slurm"):
        refuse_relaunch_in_sweep("ddp", 2)
    monkeypatch.setenv("SLURM_NTASKS", "2")  # SLURM (submitit) started one task per device
    monkeypatch.setenv("SLURM_JOB_NAME", "bertlab")
    assert not relaunches_processes("ddp", 2)


def test_two_process_ddp_writes_one_run_folder(tmp_path):
    launch(["+experiment=pretrain", "experiment.name=ddp", *FAST, *DDP, "training.max_steps=8"], tmp_path)
    assert [p.name for p in (tmp_path / "pretraining").iterdir()] == ["ddp"]
    run_dir = tmp_path / "pretraining" / "ddp"

    train_steps = [int(row["step"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    assert train_steps == [2, 4, 6, 8]
    eval_rows = Counter((row["stage"], row["step"]) for row in read_csv(run_dir / "metrics/eval/metrics.csv"))
    assert eval_rows == {("val", "0"): 1, ("val", "8"): 1, ("test", "8"): 1}

    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["global_batch_size"] == 16
    for name in ("best-model", "model"):
        checkpoint = read_checkpoint(run_dir / "checkpoints" / f"{name}.ckpt")
        assert checkpoint["global_step"] == 8
        assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_multirun_with_relaunching_ddp_fails_before_any_job(tmp_path):
    result = launch(
        ["+experiment=smoke", *DDP, "training.optimizer.lr=1e-3,3e-4"], tmp_path, check=False, flags=("-m",)
    )
    assert result.returncode != 0
    assert "training.strategy: strategy 'ddp' on 2 devices" in result.stderr
    assert "hydra/launcher=slurm" in result.stderr
    assert not (tmp_path / "pretraining").exists()


@pytest.mark.parametrize(("launcher", "refused"), [([], True), (["hydra/launcher=slurm"], False)])
def test_sweep_guard_lets_slurm_start_the_ddp_processes(tmp_path, launcher, refused):
    from hydra import compose, initialize_config_dir

    from bertlab.launcher.registration import register as register_schemas
    from bertlab.launcher.run_folder_guard import RunFolderGuard
    from tests.conftest import CONF

    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["+experiment=smoke", *DDP, *launcher, f"experiment.output_dir={tmp_path}"],
            return_hydra_config=True,
        )
    if refused:
        with pytest.raises(SystemExit):
            RunFolderGuard().on_multirun_start(config=cfg)
    else:
        RunFolderGuard().on_multirun_start(config=cfg)


def test_sigterm_to_the_main_process_stops_both_at_one_step_and_the_run_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_interruption import wait_for_step

    run = [
        "+experiment=smoke",
        "experiment.name=ddp_stop",
        *DDP,
        "training.max_steps=30",
        "training.checkpoint.every_n_steps=50",
        "logging.log_every_n_steps=1",
    ]
    run_dir = tmp_path / "pretraining" / "ddp_stop"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), f"experiment.output_dir={tmp_path}", *run],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(process, run_dir / "metrics/train/metrics.csv", 5)
    process.send_signal(signal.SIGTERM)  # the main process only: the other learns it at the step's end
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr  # interrupted: the same command continues it
    step = read_checkpoint(run_dir / "checkpoints/model.ckpt")["global_step"]
    assert 5 <= step < 30
    assert int(read_csv(run_dir / "metrics/train/metrics.csv")[-1]["step"]) == step

    launch([*run, "training.resume.is_resume=true"], tmp_path)
    steps = [int(row["step"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    assert steps == list(range(1, 31))
    assert read_checkpoint(run_dir / "checkpoints/model.ckpt")["global_step"] == 30


def test_ddp_finetuning_gathers_every_test_prediction(pretrained_run):
    output_dir = pretrained_run.parent.parent
    args = ["+experiment=finetune", "pretrained_experiment.name=shared", "data.source.count=313"]
    args += [
        "training.max_epochs=1",
        "training.min_steps=null",
        "training.batch_size=16",
        "tokenizer.max_length=48",
    ]
    launch([*args, "experiment.name=ddp_chain", *DDP], output_dir)
    run_dir = output_dir / "finetuning" / "ddp_chain"
    ids = [int(row["id"]) for row in read_csv(run_dir / "predictions.csv")]
    test_size = json.loads((run_dir / "run.json").read_text())["examples"]["test"]
    assert test_size % 2 == 1  # shares of 2 processes differ by one
    assert ids == sorted(set(ids)) and len(ids) == test_size  # nothing dropped, in dataset order
    results = json.loads((run_dir / "results.json").read_text())
    predictions = read_csv(run_dir / "predictions.csv")
    accuracy = sum(row["label"] == row["prediction"] for row in predictions) / len(predictions)
    assert results["test/accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_tasks_started_by_slurm_join_one_run_without_relaunching(tmp_path):
    """What srun does with tasks_per_node=2 (hydra/launcher=slurm): two tasks start at once, each runs the
    whole command, Lightning's SLURM environment joins them; the second task writes nothing of its own."""
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import ROOT

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    slurm = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "0"}
    slurm |= {"SLURM_NODELIST": "localhost", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "bertlab"}
    command = [sys.executable, str(ROOT / "launch.py"), f"experiment.output_dir={tmp_path}"]
    command += ["+experiment=smoke", "experiment.name=srun", *DDP, "training.max_steps=4"]
    tasks = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
            | {"MASTER_PORT": str(port), "WANDB_MODE": "offline"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for task in tasks:
        _, stderr = task.communicate(timeout=240)
        assert task.returncode == 0, stderr
    run_dir = tmp_path / "pretraining" / "srun"
    assert [p.name for p in (tmp_path / "pretraining").iterdir()] == ["srun"]
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    assert [int(r["step"]) for r in read_csv(run_dir / "metrics/train/metrics.csv")] == [2, 4]
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert read_checkpoint(run_dir / "checkpoints/model.ckpt")["global_step"] == 4
