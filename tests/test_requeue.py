"""One launch per run folder, and a requeued job that runs the same command again continues exactly.

Real processes and real signals: two launches racing for one name, SIGTERM and SIGKILL between relaunches
of one command with training.resume.is_resume=auto, submitit's requeue on SIGUSR2, Hydra's own errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import ROOT, launch, read_csv

RUN = [
    "+experiment=smoke",
    "training.max_steps=40",
    "training.checkpoint.every_n_steps=5",
    "logging.log_every_n_steps=1",
    "training.precision=32-true",
    "training.resume.is_resume=auto",
]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def start(output_dir: Path, *args: str, flags: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "launch.py"), *flags, f"experiment.output_dir={output_dir}", *args]
    return subprocess.Popen(
        command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def last_step(metrics: Path) -> int:
    rows = read_csv(metrics) if metrics.exists() else []
    return int(rows[-1]["step"]) if rows else 0


def wait_until(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"] if path.is_file() else -1


def outcome(run_dir: Path) -> tuple[list, list, dict]:
    """What must be equal between an interrupted and an uninterrupted run: every metric row, the weights."""
    train = [(row["step"], row["loss"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    evaluation = read_csv(run_dir / "metrics/eval/metrics.csv")
    weights = torch.load(run_dir / "checkpoints/model.ckpt", weights_only=True)["state_dict"]
    return train, evaluation, weights


def assert_same_run(run_dir: Path, straight_dir: Path) -> None:
    train, evaluation, weights = outcome(run_dir)
    straight_train, straight_eval, straight_weights = outcome(straight_dir)
    assert [int(step) for step, _ in train] == list(range(1, 41))  # every step once
    assert train == straight_train
    assert evaluation == straight_eval
    assert weights.keys() == straight_weights.keys()
    assert all(torch.equal(weights[key], straight_weights[key]) for key in weights)


def test_two_launches_of_one_new_run_one_proceeds_the_other_changes_nothing(tmp_path):
    first, second = (start(tmp_path, "+experiment=smoke", "experiment.name=race") for _ in range(2))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (first, second)]
    assert sorted(code for code, _ in results) == [0, 2], results
    (refusal,) = [stderr for code, stderr in results if code == 2]
    assert refusal.strip().splitlines()[-1].startswith("Error: experiment.name: run folder ")
    run_dir = tmp_path / "pretraining" / "race"
    steps = [int(row["step"]) for row in read_csv(run_dir / "metrics/train/metrics.csv")]
    assert steps == sorted(set(steps))  # one launch's rows, none twice
    evals = [row["step"] for row in read_csv(run_dir / "metrics/eval/metrics.csv")]
    assert len(evals) == len(set(evals)) + 1  # step 0, 8, 16 and the test row at 16, once each
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["race"]  # no lock file left


HOLD = """
import sys, time
from pathlib import Path
from bertlab.errors import BertlabError
from bertlab.run_folder import hold_run_folder
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    hold_run_folder(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
except BertlabError as error:
    print(error, flush=True)
"""


def hold(folder: Path, at: float, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(at), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_of_two_processes_racing_for_a_folder_exactly_one_holds_it_every_time(tmp_path):
    for attempt in range(12):
        folder, at = tmp_path / "runs" / f"try{attempt}", time.time() + 1.5
        racers = [hold(folder, at, 0.5) for _ in range(2)]
        outputs = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
        assert outputs[1] == "held", outputs
        assert "is in use by another launch (" in outputs[0], outputs
        assert not folder.exists()  # the refused one created nothing, the holder left nothing


def test_a_killed_holder_never_blocks_the_next_launch(tmp_path):
    folder = tmp_path / "pretraining" / "gone"
    holder = hold(folder, time.time(), 600)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert hold(folder, time.time(), 0).communicate(timeout=60)[0].strip() == "held"


def test_the_same_command_killed_and_relaunched_ends_equal_to_an_uninterrupted_run(tmp_path):
    straight_dir = tmp_path / "straight" / "pretraining" / "requeued"
    launch([*RUN, "experiment.name=requeued"], tmp_path / "straight")

    output_dir = tmp_path / "requeue"
    run_dir = output_dir / "pretraining" / "requeued"
    metrics, last = run_dir / "metrics/train/metrics.csv", run_dir / "checkpoints/model.ckpt"
    process = start(output_dir, *RUN, "experiment.name=requeued")  # the first launch starts the run
    wait_until(lambda: last_step(metrics) >= 7, process)
    process.send_signal(signal.SIGTERM)  # preempted: saves model.ckpt at the next step, exits 75
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr
    assert "Interrupted: stopped by SIGTERM at step" in stderr
    stopped_at = checkpoint_step(last)
    assert 7 <= stopped_at < 40

    process = start(output_dir, *RUN, "experiment.name=requeued")  # the same command continues
    wait_until(lambda: checkpoint_step(last) >= stopped_at + 5, process)
    process.send_signal(signal.SIGKILL)  # no warning at all: the last periodic checkpoint remains
    process.wait()
    assert checkpoint_step(last) < 40

    launch([*RUN, "experiment.name=requeued"], output_dir)  # and again: it runs to the end
    assert_same_run(run_dir, straight_dir)
    assert len(list((run_dir / ".hydra").glob("resume-*"))) == 2

    before = outcome(run_dir)[:2]
    again = launch([*RUN, "experiment.name=requeued"], output_dir)  # a finished run: nothing to do
    assert "already completed; nothing to do" in again.stderr
    assert outcome(run_dir)[:2] == before
    assert len(list((run_dir / ".hydra").glob("resume-*"))) == 2


def job_pid(output_dir: Path) -> int | None:
    """The submitit job process (python -m submitit.core._submit) of a sweep under output_dir."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in command and str(output_dir) in command:
            return int(proc.name)
    return None


def test_submitit_requeues_a_job_stopped_by_sigusr2_and_it_continues_in_its_folder(tmp_path):
    straight_dir = tmp_path / "straight" / "pretraining" / "requeued"
    launch([*RUN, "experiment.name=requeued"], tmp_path / "straight")

    output_dir = tmp_path / "sweep"
    args = [
        *RUN[:-1],
        "experiment.name=requeued",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    ]
    process = start(output_dir, *args, flags=("-m",))  # no is_resume: the guard adds auto for submitit
    wait_until(lambda: list(output_dir.glob("pretraining/sweeps/*/job0*/metrics/train/metrics.csv")), process)
    (metrics,) = output_dir.glob("pretraining/sweeps/*/job0*/metrics/train/metrics.csv")
    wait_until(lambda: last_step(metrics) >= 7, process)
    os.kill(job_pid(output_dir), signal.SIGUSR2)  # SLURM's warning before the time limit
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    run_dir = metrics.parents[2]
    assert_same_run(run_dir, straight_dir)
    assert "Requeued job" in "".join(p.read_text() for p in run_dir.parent.glob(".submitit/*/*_log.*"))


def test_one_folder_spelled_two_ways_is_one_hold(tmp_path):
    """The guard sees hydra.run.dir (may hold '..'), the run Hydra's resolved output dir: one lock."""
    from bertlab.run_folder import hold_run_folder, lock_file_of, release_run_folder

    spelled = tmp_path / "x" / ".." / "pretraining" / "run"
    resolved = tmp_path / "pretraining" / "run"
    hold_run_folder(spelled)
    hold_run_folder(resolved)  # the same process again: counted, not refused
    release_run_folder(resolved)
    assert lock_file_of(resolved).exists()
    release_run_folder(spelled)
    assert not lock_file_of(resolved).exists()
    assert not (tmp_path / "pretraining").exists()  # the folder made for the lock went with it
