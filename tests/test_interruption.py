"""Real processes, real signals: SIGKILL at any moment leaves a resumable run; SIGTERM saves and exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import torch

from tests.conftest import ROOT, launch, read_csv

RUN = [
    "+experiment=smoke",
    "training.max_steps=120",
    "training.checkpoint.every_n_steps=5",
    "logging.log_every_n_steps=1",
]


def start(output_dir, name):
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [
        sys.executable,
        str(ROOT / "launch.py"),
        f"experiment.output_dir={output_dir}",
        *RUN,
        f"experiment.name={name}",
    ]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def wait_for_step(process, metrics, step, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists():
            rows = read_csv(metrics)
            if rows and int(rows[-1]["step"]) >= step:
                return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached")


def test_sigkill_mid_run_then_resume_gives_every_step_once(tmp_path):
    run_dir = tmp_path / "pretraining" / "killed"
    process = start(tmp_path, "killed")
    wait_for_step(process, run_dir / "metrics/train/metrics.csv", 13)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert int(read_csv(run_dir / "metrics/train/metrics.csv")[-1]["step"]) < 120
    assert torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["global_step"] % 5 == 0

    launch([*RUN, "experiment.name=killed", "training.resume.is_resume=true"], tmp_path)
    steps = [int(row["step"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    assert steps == list(range(1, 121))
    for name in ("model.ckpt", "best-model.ckpt"):
        assert torch.load(run_dir / "checkpoints" / name, weights_only=True)["state_dict"]
    assert torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["global_step"] == 120


def test_sigterm_saves_the_checkpoint_at_the_interruption_and_exits_with_status_75(tmp_path):
    run_dir = tmp_path / "pretraining" / "preempted"
    process = start(tmp_path, "preempted")
    wait_for_step(process, run_dir / "metrics/train/metrics.csv", 7)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr  # a scheduler or script can tell it did not finish
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    step = torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["global_step"]
    assert 7 <= step < 120
    assert int(read_csv(run_dir / "metrics/train/metrics.csv")[-1]["step"]) == step
    assert f"Stopped at step {step}" in (run_dir / "run.log").read_text()


def test_ctrl_c_in_a_sweep_saves_the_job_records_it_and_ends_the_sweep(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    command = [sys.executable, str(ROOT / "launch.py"), "-m", f"experiment.output_dir={tmp_path}", *RUN]
    command.append("training.optimizer.lr=1e-3,3e-4")
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("pretraining/sweeps/*/job0_*/metrics/train/metrics.csv")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    (metrics,) = tmp_path.glob("pretraining/sweeps/*/job0_*/metrics/train/metrics.csv")
    wait_for_step(process, metrics, 5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert "sweep stopped by Ctrl-C" in stderr

    sweep = metrics.parents[3]
    assert [job.name.split("_")[0] for job in sweep.glob("job*")] == ["job0"]  # job1 never started
    step = torch.load(metrics.parents[2] / "checkpoints/model.ckpt", weights_only=True)["global_step"]
    (row,) = read_csv(sweep / "summary.csv")
    assert row["status"] == "interrupted"
    assert f"stopped by SIGINT at step {step}" in row["error"]
