"""Learning-rate schedules: WSD, one-cycle/triangle beside warmup_then_decay; position-only restore."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bertlab.config.instantiate import instantiate_section
from bertlab.errors import BertlabError
from bertlab.flow import check_run_config
from bertlab.run_folder import job_folder_name
from bertlab.training.schedule import one_cycle, warmup_stable_decay, warmup_then_decay
from tests.conftest import compose_config


def rates(factory, total: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(optimizer, total_steps=total, **kwargs)
    values = []
    for _ in range(total):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_wsd_warms_up_holds_then_decays_to_the_floor():
    lr = rates(warmup_stable_decay, 100, warmup_steps=10, decay_ratio=0.2, decay="linear", min_lr_ratio=0.1)
    assert lr[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr[10:80] == [1.0] * 70  # stable: exactly the base rate
    assert lr[80] == 1.0 and lr[99] == pytest.approx(0.1 + 0.9 * (1 - 19 / 20))
    assert all(a > b for a, b in itertools.pairwise(lr[80:]))


@pytest.mark.parametrize(
    ("decay", "shape"),
    [
        ("linear", lambda p: 1 - p),
        ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
        ("1-sqrt", lambda p: 1 - math.sqrt(p)),
    ],
)
def test_wsd_decay_shapes(decay, shape):
    lr = rates(warmup_stable_decay, 50, warmup_ratio=0.0, decay_ratio=0.4, decay=decay)
    assert lr[30:] == pytest.approx([shape((s - 30) / 20) for s in range(30, 50)])


def test_wsd_decay_start_step_wins_and_zero_decay_is_stable():
    assert rates(warmup_stable_decay, 20, warmup_steps=2, decay_ratio=0.0)[2:] == [1.0] * 18
    lr = rates(warmup_stable_decay, 20, warmup_steps=2, decay_ratio=0.0, decay_start_step=12, decay="linear")
    assert lr[2:12] == [1.0] * 10 and lr[12:] == pytest.approx([1 - (s - 12) / 8 for s in range(12, 20)])


def test_one_cycle_and_triangle():
    lr = rates(one_cycle, 10, peak_ratio=0.5, start_lr_ratio=0.0, shape="linear")
    assert lr == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2])
    cycle = rates(one_cycle, 100, peak_ratio=0.3, start_lr_ratio=0.04, shape="cosine", min_lr_ratio=0.01)
    assert cycle[29] == pytest.approx(1.0) and max(cycle) == cycle[30] == 1.0
    assert cycle[0] == pytest.approx(0.04 + 0.96 / 30) and cycle[-1] == pytest.approx(0.01, abs=0.01)


def test_a_checkpoint_restores_the_position_only():
    """Resuming a stable run with a decay start decays from there: the shape is the current config's."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    stable = warmup_stable_decay(optimizer, 40, warmup_steps=4, decay_ratio=0.0)
    for _ in range(30):
        optimizer.step()
        stable.step()
    state = stable.state_dict()
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    decayed = warmup_stable_decay(fresh, 40, warmup_steps=4, decay_start_step=30, decay="linear")
    decayed.load_state_dict(state)
    assert decayed.last_epoch == 30 and decayed.lr_lambdas[0].decay_start == 30
    decayed.step()
    assert fresh.param_groups[0]["lr"] == pytest.approx(1 - 1 / 10)


@pytest.mark.parametrize(
    ("factory", "kwargs", "key"),
    [
        (warmup_stable_decay, {"decay": "exp"}, "decay"),
        (warmup_stable_decay, {"decay_ratio": 1.5}, "decay_ratio"),
        (warmup_stable_decay, {"decay_start_step": 200}, "decay_start_step"),
        (warmup_stable_decay, {"warmup_steps": 50, "decay_start_step": 20}, "warmup_steps"),
        (warmup_stable_decay, {"warmup_ratio": 0.9, "decay_ratio": 0.5}, "warmup_ratio"),
        (one_cycle, {"shape": "1-sqrt"}, "shape"),
        (one_cycle, {"peak_ratio": 1.0}, "peak_ratio"),
        (warmup_then_decay, {"decay": "1-sqrt"}, "decay"),
    ],
)
def test_invalid_schedules_name_the_parameter(factory, kwargs, key):
    with pytest.raises(BertlabError) as caught:
        rates(factory, 100, **kwargs)
    assert caught.value.key == key


def test_a_sweep_over_schedules_names_one_job_folder_each():
    assert job_folder_name(1, "training/scheduler-wsd") == "job1_training.scheduler-wsd"


@pytest.mark.parametrize("name", ["warmup_then_decay", "wsd", "one_cycle", "triangle"])
def test_each_schedule_is_an_option_of_the_training_scheduler_group(tmp_path, name):
    cfg = compose_config(["+experiment=pretrain", f"training/scheduler={name}"], tmp_path)
    check_run_config(cfg)
    assert len(rates(instantiate_section(cfg, "training.scheduler"), 50)) == 50


def test_a_schedule_named_with_a_dot_is_refused_with_the_group_syntax(tmp_path):
    cfg = compose_config(["+experiment=pretrain", "training.scheduler=wsd"], tmp_path)
    with pytest.raises(BertlabError, match=r"training/scheduler=<name>") as caught:
        check_run_config(cfg)
    assert caught.value.key == "training.scheduler"


def test_launch_reads_a_dotted_schedule_name_as_the_group_choice(tmp_path):
    from bertlab.launcher.group_overrides import as_group_overrides
    from tests.conftest import CONF, launch

    assert as_group_overrides(
        ["training.scheduler=wsd,one_cycle", "training.scheduler=nope", "training.max_steps=5", "a.b=c"], CONF
    ) == ["training/scheduler=wsd,one_cycle", "training.scheduler=nope", "training.max_steps=5", "a.b=c"]
    result = launch(["+experiment=pretrain", "training.scheduler=wsd"], tmp_path, flags=("--cfg", "job"))
    assert "bertlab.training.schedule.warmup_stable_decay" in result.stdout
