"""Training to a budget (training.budget.minutes / .tokens): the run stops at its budget with the schedule at
its floor on the last step, a token budget resumes to the bit, a time budget resumes with its time spent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from bertlab.errors import BertlabError
from bertlab.run import run
from bertlab.training.budget import STOP_TIME, STOP_TOKENS, Budget, retarget_schedule
from bertlab.training.interruption import TrainingInterrupted
from bertlab.training.schedule import warmup_stable_decay, warmup_then_decay
from tests.conftest import FAST, compose_config, read_csv
from tests.test_resume import interrupt_at
from tests.test_schedule_and_masking_runs import interrupted_and_resumed, same_weights, start, train_rows

EVERY_STEP = ("logging.log_every_n_steps=1", "training.precision=32-true")


def run_info(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@contextmanager
def beside_a_busy_process(busy: bool) -> Iterator[None]:
    """A CPU-bound process running beside the block (a loaded machine), or nothing."""
    other = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if other is not None:
            other.kill()
            other.wait()


@pytest.mark.parametrize("busy", [False, True], ids=["alone", "beside_a_busy_process"])
def test_a_time_budget_stops_in_time_with_the_schedule_at_its_floor_on_the_last_step(tmp_path, busy):
    minutes = 0.25
    with beside_a_busy_process(busy):
        run_dir = start(tmp_path, "timed", *EVERY_STEP, f"training.budget.minutes={minutes}")
    budget = run_info(run_dir)["budget"]
    assert budget["stop_reason"] == STOP_TIME
    assert abs(budget["minutes_spent"] - minutes) <= 0.03 * minutes, budget  # by the run's own clock
    rows = read_csv(run_dir / "metrics/train/metrics.csv")
    assert (
        int(rows[-1]["step"]) == budget["steps"] > 16
    )  # more steps than training.max_steps: the budget rules
    assert float(rows[-1]["lr"]) == 0.0  # the floor (min_lr_ratio 0), reached exactly at the last step
    assert float(rows[-2]["lr"]) > 0.0
    evaluations = [r for r in read_csv(run_dir / "metrics/eval/metrics.csv") if r["stage"] == "val"]
    assert int(evaluations[-1]["step"]) == budget["steps"]  # validated at the last step


def test_a_token_budget_becomes_steps_and_resumes_to_the_bit(tmp_path, monkeypatch):
    tokens_per_step = 8 * 64  # FAST: batch 8, tokenizer.max_length 64
    budget = (*EVERY_STEP, f"training.budget.tokens={12 * tokens_per_step + 1}")  # 13 steps
    straight = start(tmp_path, "straight", *budget)
    info = run_info(straight)["budget"]
    assert (info["steps"], info["tokens_per_step"], info["stop_reason"]) == (13, tokens_per_step, STOP_TOKENS)
    rows = train_rows(straight)
    assert [int(step) for step, _, _ in rows] == list(range(1, 14))
    assert float(rows[-1][2]) == 0.0 < float(rows[-2][2])

    cut = interrupted_and_resumed(tmp_path, monkeypatch, *budget)  # SIGTERM at step 7
    assert train_rows(cut) == rows
    assert same_weights(cut, straight)


def test_a_resumed_time_budget_counts_the_time_already_spent(tmp_path, monkeypatch):
    minutes = 0.3
    budget = (*EVERY_STEP, f"training.budget.minutes={minutes}")
    with monkeypatch.context() as patch:
        interrupt_at(patch, 150)
        with pytest.raises(TrainingInterrupted):
            start(tmp_path, "cut", *budget)
    cut = tmp_path / "pretraining" / "cut"
    checkpoint = torch.load(cut / "checkpoints/model.ckpt", weights_only=True)
    spent_before = checkpoint["callbacks"]["TrainingBudget"]["spent_seconds"]
    assert checkpoint["global_step"] == 150 and spent_before > 0

    started = time.perf_counter()
    start(tmp_path, "cut", *budget, resume=("training.resume.is_resume=true",))
    second_attempt = time.perf_counter() - started
    info = run_info(cut)["budget"]
    assert info["stop_reason"] == STOP_TIME and info["steps"] > 150
    assert 0.75 * minutes <= info["minutes_spent"] <= 1.1 * minutes  # both attempts together
    assert second_attempt < minutes * 60 - spent_before + 5  # + its set-up, which the clock leaves out
    assert float(read_csv(cut / "metrics/train/metrics.csv")[-1]["lr"]) == 0.0


def test_both_bounds_stop_at_the_first_reached(tmp_path):
    run_dir = start(tmp_path, "both", "training.budget.minutes=5", f"training.budget.tokens={6 * 8 * 64}")
    budget = run_info(run_dir)["budget"]
    assert (budget["steps"], budget["stop_reason"]) == (6, STOP_TOKENS)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.budget.minutes=0", "training.budget.minutes"),
        ("training.budget.tokens=-5", "training.budget.tokens"),
    ],
)
def test_a_bad_budget_fails_before_training_naming_its_key(tmp_path, override, key):
    cfg = compose_config(["+experiment=pretrain", "experiment.name=bad", *FAST, override], tmp_path)
    with pytest.raises(BertlabError) as caught:
        run(cfg, tmp_path / "pretraining" / "bad")
    assert caught.value.key == key
    assert not (tmp_path / "pretraining" / "bad").exists()


def test_no_budget_is_inactive():
    assert not Budget().active and Budget(minutes=1).active and Budget(tokens=10).active


@pytest.mark.parametrize(
    "factory",
    [
        lambda optimizer, total_steps: warmup_then_decay(optimizer, total_steps, warmup_ratio=0.1),
        lambda optimizer, total_steps: warmup_stable_decay(optimizer, total_steps, warmup_ratio=0.1),
    ],
)
def test_a_retargeted_schedule_equals_one_built_for_its_new_length(factory):
    def schedule(total_steps: int):
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=1.0)
        return optimizer, factory(optimizer, total_steps)

    optimizer, retargeted = schedule(100)
    for _ in range(30):
        optimizer.step()
        retargeted.step()
    retarget_schedule(retargeted, factory, 60)
    reference_optimizer, reference = schedule(60)
    for _ in range(30):
        reference_optimizer.step()
        reference.step()
    for _ in range(31):
        assert [g["lr"] for g in optimizer.param_groups] == [
            g["lr"] for g in reference_optimizer.param_groups
        ]
        for opt, sched in ((optimizer, retargeted), (reference_optimizer, reference)):
            opt.step()
            sched.step()


def test_a_time_budget_without_max_steps_still_measures_its_steps(tmp_path):
    run_dir = start(tmp_path, "unbounded", "training.max_steps=-1", "training.budget.minutes=0.1")
    budget = run_info(run_dir)["budget"]
    assert budget["stop_reason"] == STOP_TIME and budget["steps"] > 5  # not the first guess of 1 step


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (  # a fixed warmup longer than the 13 steps of the token budget
            ("training.budget.tokens=6600", "training.scheduler.warmup_steps=50"),
            "training.scheduler.warmup_steps",
        ),
        (("training.budget.minutes=1", "training.max_epochs=2"), "training.max_epochs"),
    ],
)
def test_a_budget_that_cannot_shape_the_run_fails_before_training(tmp_path, overrides, key):
    cfg = compose_config(["+experiment=pretrain", "experiment.name=bad", *FAST, *overrides], tmp_path)
    with pytest.raises(BertlabError) as caught:
        run(cfg, tmp_path / "pretraining" / "bad")
    assert caught.value.key == key
    assert not (tmp_path / "pretraining" / "bad" / "checkpoints").exists()
