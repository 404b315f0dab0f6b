"""What a launch may write: nothing outside experiment.output_dir, nothing when a check refuses it, never
over a run that has a checkpoint; and a run that never reached a checkpoint can simply be started again."""

from __future__ import annotations

import json
import shutil

import lightning as L
import pytest

import bertlab.flow
from bertlab.run import run
from tests.conftest import FAST, compose_config, launch, read_csv, snapshot

SMALL = ["+experiment=pretrain", *FAST, "training.max_steps=4", "training.val_check_interval=2"]


def only_error_line(result) -> str:
    """A refused launch prints one line, `Error: <key>: <message>`, and no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", ["../../escaped", "../escaped", ".hidden", "a/b", "a\\b", ".."])
def test_a_name_that_leaves_the_output_folder_is_refused_before_hydra_writes(tmp_path, name):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    existing = tmp_path / "escaped" / ".hydra"  # where ../../escaped would have written its config
    existing.mkdir(parents=True)
    (existing / "config.yaml").write_text("mine: true\n")
    before = snapshot(tmp_path)
    result = launch(["+experiment=smoke", f"experiment.name={name}"], output_dir, check=False)
    assert only_error_line(result) == (
        f"Error: experiment.name: must be a plain folder name (no '/' or '\\', not '..', not starting with "
        f"'.'), got {name!r}; run folders are <experiment.output_dir>/<kind>/<name>"
    )
    assert snapshot(tmp_path) == before
    assert not any(output_dir.iterdir())


def test_a_check_that_fails_inside_the_run_leaves_no_folder_and_no_traceback(tmp_path):
    result = launch(
        ["+experiment=pretrain", "experiment.name=typo", "data=text", "data.source.train=nowhere.txt"],
        tmp_path,
        check=False,
    )
    assert only_error_line(result) == (
        "Error: data.source.train: file 'nowhere.txt' does not exist (check the path; it is read as given)"
    )
    assert not (tmp_path / "pretraining").exists()

    result = launch(
        [*SMALL, "experiment.name=ghost", "training.resume.is_resume=true"], tmp_path, check=False
    )
    assert only_error_line(result) == (
        f"Error: training.resume.is_resume: cannot resume: there is no run in "
        f"'{tmp_path}/pretraining/ghost'; check experiment.name and training.resume.resume_pretraining_name, "
        f"or start the run without training.resume.is_resume=true"
    )
    assert not (tmp_path / "pretraining").exists()


def test_a_refused_resume_leaves_the_run_byte_for_byte_as_it_was(pretrained_run):
    output_dir = pretrained_run.parent.parent
    before = snapshot(pretrained_run)
    result = launch(
        [
            "+experiment=pretrain",
            "experiment.name=shared",
            *FAST,
            "training.resume.is_resume=true",
            "mlm_head.masking.probability=0.3",
        ],
        output_dir,
        check=False,
    )
    assert only_error_line(result).startswith(
        "Error: mlm_head.masking.probability: was 0.15 in the run being resumed and is 0.3 now"
    )
    assert snapshot(pretrained_run) == before  # its .hydra/, run.log, checkpoints and metrics


def test_an_unwritable_output_folder_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    result = launch(["+experiment=smoke"], blocker / "runs", check=False)
    assert only_error_line(result) == (
        f"Error: experiment.output_dir: '{blocker}' is a file, so the run folder "
        f"'{blocker}/runs/pretraining/smoke' cannot be created there; choose another experiment.output_dir"
    )
    result = launch(["+experiment=smoke"], "/sys/bertlab-runs", check=False)  # read-only, even for root
    assert only_error_line(result).startswith(
        "Error: experiment.output_dir: cannot write into '/sys' (Permission denied)"
    )


class CrashAtFirstStep(L.Callback):
    def on_train_batch_start(self, trainer, *args) -> None:
        raise RuntimeError("simulated crash at step 1")


def crash_before_the_first_checkpoint(monkeypatch, output_dir, name, *overrides):
    original = bertlab.flow.create_trainer

    def crashing(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.append(CrashAtFirstStep())
        return trainer

    run_dir = output_dir / "pretraining" / name
    with monkeypatch.context() as patch:
        patch.setattr(bertlab.flow, "create_trainer", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(compose_config([*SMALL, f"experiment.name={name}", *overrides], output_dir), run_dir)
    # what such an attempt leaves: a tokenizer, the step-0 validation row, run.json, no checkpoint
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "run.json").is_file()
    assert [r["step"] for r in read_csv(run_dir / "metrics/eval/metrics.csv")] == ["0"]
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text("attempt: 1\n")
    (run_dir / "run.log").write_text("the first attempt's log\n")
    return run_dir


@pytest.mark.parametrize("how", ["relaunch", "resume"])
def test_a_run_that_never_reached_a_checkpoint_starts_again_from_step_0(tmp_path, monkeypatch, how):
    run_dir = crash_before_the_first_checkpoint(monkeypatch, tmp_path, "crashed")
    extra = ["training.resume.is_resume=true"] if how == "resume" else []
    result = launch([*SMALL, "experiment.name=crashed", *extra], tmp_path)
    assert "holds no checkpoint (an attempt stopped before its first one): starting it from step 0" in (
        result.stdout + result.stderr
    )
    evaluation = read_csv(run_dir / "metrics/eval/metrics.csv")
    assert [(r["stage"], r["step"]) for r in evaluation] == [
        ("val", "0"),
        ("val", "2"),
        ("val", "4"),
        ("test", "4"),
    ]
    assert [r["step"] for r in read_csv(run_dir / "metrics/train/metrics.csv")] == ["2", "4"]
    assert "attempt: 1" not in (run_dir / ".hydra" / "config.yaml").read_text()
    assert not (run_dir / ".hydra" / "resume-1").exists()
    assert "the first attempt's log" not in (run_dir / "run.log").read_text()
    assert (run_dir / "checkpoints" / "model.ckpt").is_file()


def test_a_run_with_only_a_best_checkpoint_is_refused_with_a_command_that_works(tmp_path, pretrained_run):
    copy = tmp_path / "pretraining" / "shared"
    shutil.copytree(pretrained_run, copy)
    (copy / "checkpoints" / "model.ckpt").unlink()
    before = snapshot(copy)
    args = ["+experiment=pretrain", "experiment.name=shared", *FAST]
    message = only_error_line(launch(args, tmp_path, check=False))
    assert message == (
        f"Error: experiment.name: run folder '{copy}' already holds a run (checkpoints/best-model.ckpt); nothing "
        f"was changed. Choose a new name with experiment.name=<new name>, or continue that run with "
        f"training.resume.is_resume=true training.resume.checkpoint_path=checkpoints/best-model.ckpt"
    )
    assert snapshot(copy) == before
    launch([*args, *message.rpartition("continue that run with ")[2].split()], tmp_path)
    info = json.loads((copy / "run.json").read_text())
    assert info["resumed_from"] == str(copy / "checkpoints" / "best-model.ckpt")
    assert (copy / ".hydra" / "resume-1" / "config.yaml").is_file()


# -- issue 28 ---------------------------------------------------------------------------------------------
def test_is_resume_auto_on_a_completed_run_checks_the_command_as_for_an_interrupted_one(pretrained_run):
    output_dir = pretrained_run.parent.parent
    command = ["+experiment=pretrain", "experiment.name=shared", *FAST, "training.resume.is_resume=auto"]
    before = snapshot(pretrained_run)
    changed = launch([*command, "architecture.hidden_size=64"], output_dir, check=False)
    assert only_error_line(changed) == (
        "Error: architecture.hidden_size: was 128 in the run being resumed and is 64 now; resuming cannot change "
        "the model or the data. Drop the override, start a new run, or set training.resume.allow_config_changes=true"
    )
    assert snapshot(pretrained_run) == before

    same = launch(command, output_dir)
    assert f"Run '{pretrained_run}' already completed; nothing to do" in same.stderr
    assert snapshot(pretrained_run) == before  # not even a log line or a .hydra/resume-N


def test_a_sweep_refused_by_hydra_leaves_nothing_behind(tmp_path):
    output_dir = tmp_path / "runs"
    (output_dir / "pretraining" / "kept").mkdir(parents=True)
    typo = launch(
        ["+experiment=smoke", "training.optimzer.lr=1e-3,3e-4"], output_dir, check=False, flags=("-m",)
    )
    assert only_error_line(typo).startswith("Error: Could not override 'training.optimzer.lr'.")
    assert sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*")) == [
        "pretraining",
        "pretraining/kept",
    ]  # no sweeps/<name>_<time>/multirun.yaml
    missing = launch(
        ["+experiment=smoke", "architecture=bert_tiny,nope"], tmp_path / "new", check=False, flags=("-m",)
    )
    assert only_error_line(missing).startswith("Error: In 'config': Could not find 'architecture/nope'")
    assert not (tmp_path / "new").exists()
