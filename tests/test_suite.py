"""Suites (issue 30): tasks x seeds x starts as one Hydra multirun of finetunes and one table.

End to end through `launch.py -m +experiment=suite`, on a suite of three tiny tasks of three shapes (a
user's own file on Hydra's search path): every job a complete run folder, the same command again skips the
finished jobs without touching them, a killed suite relaunched and the joblib launcher with two workers end
with the table of the sequential run, each bad input is one Error line before any job. The table, the
starts and the suite's checks are also tested directly (plain Python), and kept checkpoints along a
pretraining (training.checkpoint.keep_steps) as the starts of a suite.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from bertlab.data.embedded_corpus import generate_labelled
from bertlab.errors import BertlabError
from bertlab.launcher.registration import register
from bertlab.launcher.run_folder_guard import RunFolderGuard
from bertlab.run import run
from bertlab.run_folder import RESULTS_FILE, write_json
from bertlab.suite.jobs import Job, check_finished_job, suite_jobs
from bertlab.suite.spec import check_task_data, parse_suite
from bertlab.suite.starts import parse_start, parse_starts
from bertlab.suite.table import read_table, steps_along_runs, table_csv, table_markdown
from bertlab.training.interruption import TrainingInterrupted
from tests.conftest import FAST, ROOT, RUN_ARTIFACTS, compose_config, launch, read_csv, snapshot
from tests.test_resume import interrupt_at
from tests.test_run_folder_safety import only_error_line

TASKS = ("tags", "pairs", "sizes")
SEEDS = (0, 1)


def write_pairs(folder: Path) -> Path:
    """The embedded pairs as the user's .jsonl files (text, text_pair, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = generate_labelled("pairs", 160, seed=3)
    for split, rows in (("train", records[:100]), ("val", records[100:130]), ("test", records[130:])):
        with (folder / f"{split}.jsonl").open("w") as handle:
            for text, label, pair in rows:
                handle.write(json.dumps({"text": text, "text_pair": pair, "label": label}) + "\n")
    return folder


def suite_file(conf: Path, name: str, pairs: Path, extra: str = "") -> Path:
    """<conf>/suite/<name>.yaml: three tiny tasks (multi-label, pairs from files, regression)."""
    path = conf / "suite" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""description: three tiny tasks of three shapes
seeds: [0, 1]
starts: [scratch]
scratch_architecture: bert_tiny
scratch_overrides: [tokenizer.vocab_size=300]
overrides:
  - training.max_steps=8
  - training.min_steps=null
  - training.batch_size=16
  - training.checkpoint.every_n_steps=2
  - training.precision=32-true
  - tokenizer.max_length=32
  - logging.progress_bar=false
  - logging.log_every_n_steps=2
tasks:
  tags:
    data: reviews_tags
    problem_type: multi_label_classification
    overrides: [data.source.count=120]
  pairs:
    data: {{train: {pairs}/train.jsonl, val: {pairs}/val.jsonl, test: {pairs}/test.jsonl}}
    text_pair_field: text_pair
    train_examples: 80
  sizes:
    data: reviews_sizes
    problem_type: regression
    main_metric: pearson
    overrides: [data.source.count=120]
{extra}"""
    )
    return path


def suite_args(conf: Path, name: str = "tiny", *more: str) -> list[str]:
    return ["+experiment=suite", f"suite={name}", f"hydra.searchpath=[file://{conf}]", *more]


@pytest.fixture(scope="module")
def suite_conf(tmp_path_factory) -> Path:
    conf = tmp_path_factory.mktemp("suite_conf")
    suite_file(conf, "tiny", write_pairs(conf / "pairs"))
    return conf


@pytest.fixture(scope="module")
def finished_suite(suite_conf, tmp_path_factory):
    """The tiny suite run once, sequentially: (its output folder, the launch's result)."""
    output_dir = tmp_path_factory.mktemp("suite_runs")
    result = launch(suite_args(suite_conf), output_dir, flags=("-m",), timeout=600)
    return output_dir, result


def job_folders(suite_dir: Path) -> list[Path]:
    return sorted(path.parent for path in suite_dir.glob("*/*/seed*/.hydra"))


def tables(suite_dir: Path) -> tuple[bytes, bytes]:
    return (suite_dir / "suite.csv").read_bytes(), (suite_dir / "suite.md").read_bytes()


def test_every_task_seed_and_start_is_a_finetuning_run_and_the_table_reads_them(finished_suite):
    output_dir, result = finished_suite
    suite_dir = output_dir / "suites" / "tiny"
    jobs = job_folders(suite_dir)
    assert [job.relative_to(suite_dir).as_posix() for job in jobs] == [
        f"scratch/{task}/seed{seed}" for task in sorted(TASKS) for seed in SEEDS
    ]
    for job in jobs:
        assert all((job / artifact).is_file() for artifact in (*RUN_ARTIFACTS, RESULTS_FILE)), job
        assert json.loads((job / "run.json").read_text())["status"] == "completed"
    assert (
        "suite.job='scratch/pairs/seed1'"
        in (suite_dir / "scratch/pairs/seed1/.hydra/overrides.yaml").read_text()
    )
    # The pairs task read two texts from the files, its first 80 training records only.
    pairs = json.loads((suite_dir / "scratch/pairs/seed0/results.json").read_text())
    assert len(read_csv(suite_dir / "scratch/pairs/seed0/predictions.csv")) == 30
    assert pairs["problem_type"] == "single_label_classification"

    rows = read_csv(suite_dir / "suite.csv")
    main = {row["task"]: row for row in rows if row["main"] == "true" and row["task"] != "overall"}
    assert {task: row["metric"] for task, row in main.items()} == {
        "tags": "micro_f1",
        "pairs": "macro_f1",
        "sizes": "pearson",  # the task's own main metric, which also picked its best checkpoint
    }
    assert main["pairs"]["shape"] == "single label, pairs"
    for task, row in main.items():
        values = [
            json.loads((suite_dir / f"scratch/{task}/seed{seed}/results.json").read_text()) for seed in SEEDS
        ]
        figures = sorted(value[f"test/{row['metric']}"] for value in values)
        assert row["n"] == "2"
        assert float(row["min"]) == pytest.approx(figures[0], abs=6e-5)
        assert float(row["max"]) == pytest.approx(figures[1], abs=6e-5)
        assert float(row["median"]) == pytest.approx(sum(figures) / 2, abs=6e-5)
        assert float(row["baseline"]) == pytest.approx(
            values[0]["baseline"][f"test/{row['metric']}"], abs=6e-5
        )
    (overall,) = [row for row in rows if row["task"] == "overall"]
    assert float(overall["median"]) == pytest.approx(
        sum(float(row["median"]) for row in main.values()) / 3, abs=2e-4
    )
    markdown = (suite_dir / "suite.md").read_text()
    assert "| sizes | regression | pearson |" in markdown
    assert markdown in result.stdout  # printed at the end
    assert (suite_dir / "suite.png").stat().st_size > 0


def test_the_same_command_again_skips_finished_jobs_and_touches_none(finished_suite, suite_conf):
    output_dir, _ = finished_suite
    suite_dir = output_dir / "suites" / "tiny"
    jobs = job_folders(suite_dir)
    before = {job: snapshot(job) for job in jobs}
    times = {path: path.stat().st_mtime_ns for job in jobs for path in job.rglob("*")}
    table = tables(suite_dir)
    result = launch(suite_args(suite_conf), output_dir, flags=("-m",))
    assert "6 jobs in" in result.stdout and "6 finished already, 0 to start, 0 to continue" in result.stdout
    assert {job: snapshot(job) for job in jobs} == before
    assert {path: path.stat().st_mtime_ns for job in jobs for path in job.rglob("*")} == times
    assert tables(suite_dir) == table


def test_a_killed_suite_relaunched_ends_with_the_same_table(finished_suite, suite_conf, tmp_path):
    reference = tables(finished_suite[0] / "suites" / "tiny")
    suite_dir = tmp_path / "suites" / "tiny"
    command = [sys.executable, str(ROOT / "launch.py"), "-m", f"experiment.output_dir={tmp_path}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    process = subprocess.Popen(
        [*command, *suite_args(suite_conf)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # SIGKILL the whole launch once the first job has finished and the second one has a checkpoint.
    second = suite_dir / "scratch/pairs/seed0"
    deadline = time.monotonic() + 300
    while not list((second / "checkpoints").glob("*.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline, "the suite did not reach its second job"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = [job for job in job_folders(suite_dir) if (job / RESULTS_FILE).is_file()]
    assert 1 <= len(finished) < 6
    assert not (suite_dir / "suite.csv").exists()

    result = launch(suite_args(suite_conf), tmp_path, flags=("-m",), timeout=600)
    assert f"{len(finished)} finished already" in result.stdout
    assert tables(suite_dir) == reference


def test_joblib_with_two_workers_gives_the_table_of_the_sequential_run(finished_suite, suite_conf, tmp_path):
    reference = tables(finished_suite[0] / "suites" / "tiny")
    launch(
        suite_args(suite_conf, "tiny", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"),
        tmp_path,
        flags=("-m",),
        timeout=600,
    )
    suite_dir = tmp_path / "suites" / "tiny"
    jobs = job_folders(suite_dir)
    assert len(jobs) == 6
    for job in jobs:  # each job its own complete folder
        assert all((job / artifact).is_file() for artifact in (*RUN_ARTIFACTS, RESULTS_FILE)), job
        assert (
            f"suite.job='{job.relative_to(suite_dir).as_posix()}'"
            in (job / ".hydra/overrides.yaml").read_text()
        )
    assert tables(suite_dir) == reference


def test_a_table_of_jobs_trained_at_different_thread_counts_says_so(finished_suite, suite_conf, tmp_path):
    """2 threads sum in another order than 1: such figures are not bit-comparable, and suite.md says why."""
    import shutil

    output_dir, _ = finished_suite
    assert "CPU threads" not in (output_dir / "suites" / "tiny" / "suite.md").read_text()  # all at 1
    shutil.copytree(output_dir / "suites", tmp_path / "suites")
    info_file = tmp_path / "suites" / "tiny" / "scratch" / "tags" / "seed1" / "run.json"
    info = json.loads(info_file.read_text())
    assert info["cpu_threads"] == 1
    write_json(info_file, {**info, "cpu_threads": 2})
    result = launch(suite_args(suite_conf), tmp_path, flags=("-m",))
    assert "6 finished already" in result.stdout
    assert (
        "The jobs trained with 1 and 2 CPU threads (a parallel launcher gives each worker a share of the "
        "cores): a sum over more threads runs in another order, so these figures are not bit-comparable "
        "with one another; `training.cpu_threads=<n>` on the command pins the count."
    ) in (tmp_path / "suites" / "tiny" / "suite.md").read_text()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "missing_file",
            "Error: suite.tasks.pairs.data.train: file '{conf}/nowhere/train.jsonl' does not exist",
        ),
        (
            "missing_start",
            "Error: suite.starts: 'run:nope': there is no pretraining run '{output}/pretraining/nope'",
        ),
    ],
)
def test_bad_input_is_one_error_line_before_any_job(finished_suite, suite_conf, tmp_path, case, expected):
    """Refused before the first job, exit 2; nothing is created, and an existing suite stays as it was. Every
    refusal of the suite's checks takes this path (the others' lines: the plain-Python tests below)."""
    conf = tmp_path / "conf"
    suite_file(conf, "bad", conf / "nowhere" if case == "missing_file" else suite_conf / "pairs")
    more = ["suite.starts=[run:nope,scratch]"] if case == "missing_start" else []
    output_dir = finished_suite[0]
    before = snapshot(output_dir)
    result = launch(suite_args(conf, "bad", *more), output_dir, flags=("-m",), check=False)
    assert only_error_line(result).startswith(expected.format(conf=conf, output=output_dir))
    assert snapshot(output_dir) == before
    assert not (output_dir / "suites" / "bad").exists() and not list((output_dir / "suites").glob(".*lock"))


def test_a_suite_without_multirun_is_refused(tmp_path, capsys):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config", ["+experiment=suite", f"experiment.output_dir={tmp_path}"], return_hydra_config=True
        )
    with pytest.raises(SystemExit) as stop:
        RunFolderGuard().on_run_start(cfg)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "Error: suite: a suite is a multirun of finetunes: add -m (python launch.py -m +experiment=suite "
        "suite=<name> ...)\n"
    )
    assert not any(tmp_path.iterdir())


def test_a_bad_suite_file_names_its_key_in_one_line(tmp_path):
    """What the suite's checks say (launch.py prints it as its one Error line): an unknown key in a task,
    a field a file's first record lacks."""
    conf = tmp_path / "conf"
    pairs = write_pairs(tmp_path / "pairs")
    path = suite_file(conf, "bad", pairs)
    values = yaml.safe_load(path.read_text())
    values["tasks"]["sizes"]["lrr"] = 0.001
    with pytest.raises(BertlabError) as error:
        parse_suite("bad", values)
    assert str(error.value).startswith("suite.tasks.sizes.lrr: unknown key; suite.tasks.sizes takes data,")
    del values["tasks"]["sizes"]["lrr"]
    values["tasks"]["pairs"]["text_pair_field"] = "second"
    with pytest.raises(BertlabError) as error:
        for task in parse_suite("bad", values).tasks:
            check_task_data(task)
    assert str(error.value) == (
        f"suite.tasks.pairs.text_pair_field: {pairs}/train.jsonl:1 has no 'second' field; set text_pair_field "
        f"to the field that holds it"
    )


# -- plain Python: starts, the suite's checks, the table -----------------------------------------------------


def test_starts_read_naturally_in_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides(
        ["suite.starts=[run:base,run:base@step2000,run:base@last,hf:/models/bert,scratch,scratch:bert_mini]"]
    )
    starts = parse_starts(override.value(), "bert_tiny")
    assert [start.label for start in starts] == [
        "base",
        "base@step2000",
        "base@last",
        "hf-bert",
        "scratch",
        "scratch-bert_mini",
    ]
    assert starts[1].overrides == (
        "pretrained_experiment.name=base",
        "pretrained_experiment.checkpoint='checkpoints/step-2000.ckpt'",
    )
    assert starts[1].step == 2000 and starts[0].step is None
    assert starts[3].overrides == ("pretrained_experiment.hf_path='/models/bert'",)
    assert starts[4].overrides == ("pretrained_experiment=none", "architecture=bert_tiny")
    assert starts[5].overrides == ("pretrained_experiment=none", "architecture=bert_mini")
    for text, message in [
        ("base", "'base' is not a start; write one of scratch, scratch:<architecture>, run:<name>"),
        ("run:base@step", "'run:base@step': after @ comes best, last or step<N>, got 'step'"),
    ]:
        with pytest.raises(BertlabError, match="^suite.starts: " + message):
            parse_start(text, "bert_tiny")
    with pytest.raises(BertlabError, match="share the label 'base'"):
        parse_starts(["run:base", "run:base@best"], "bert_tiny")


SUITE = {
    "seeds": 2,
    "tasks": {
        "one": {"data": "reviews"},
        "two": {"data": {"train": "t.jsonl"}, "problem_type": "regression", "epochs": 2, "lr": 1e-4},
    },
}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"sedes": [0]}, "suite.sedes: unknown key; suite takes description, seeds, starts"),
        ({"seeds": [0, 0]}, "suite.seeds: lists a seed twice: [0, 0]"),
        ({"tasks": {"one": {"data": "reviews", "epoch": 1}}}, "suite.tasks.one.epoch: unknown key"),
        (
            {"tasks": {"one": {"data": "reviews", "main_metric": "rmse"}}},
            "suite.tasks.one.main_metric: must be one of",
        ),
        (
            {
                "tasks": {
                    "one": {"data": "reviews_sizes", "problem_type": "regression", "main_metric": "rmse"}
                }
            },
            "suite.tasks.one.main_metric: rmse is better when lower",
        ),
        (
            {"tasks": {"one": {"data": "reviews", "train_examples": 10}}},
            "suite.tasks.one.train_examples: applies",
        ),
        ({"tasks": {"one": {"data": {"train": "a", "tset": "b"}}}}, "suite.tasks.one.data.tset: unknown key"),
        (
            {"tasks": {"one": {"data": "reviews", "lr": "fast"}}},
            "suite.tasks.one.lr: must be a positive number",
        ),
    ],
)
def test_a_bad_suite_names_its_key(edit, message):
    with pytest.raises(BertlabError) as error:
        parse_suite("mine", {**SUITE, **edit})
    assert str(error.value).startswith(message)


def test_a_task_becomes_the_overrides_of_its_finetune(tmp_path):
    suite = parse_suite("mine", SUITE)
    assert suite.seeds == (0, 1)
    two = suite.tasks[1]
    assert two.launch_overrides() == [
        "data=classification",
        f"data.source.train='{Path('t.jsonl').absolute()}'",
        "classification_head.problem_type=regression",
        "training.max_epochs=2",
        "training.optimizer.lr=0.0001",
    ]
    jobs = suite_jobs(suite, parse_starts(["scratch", "run:base"], "bert_mini"))
    assert [(job.seed, job.start.label, job.task.name) for job in jobs[:4]] == [
        (0, "scratch", "one"),
        (0, "scratch", "two"),
        (0, "base", "one"),
        (0, "base", "two"),
    ]
    assert jobs[6].folder == Path("base/one/seed1")
    assert jobs[0].overrides(suite)[:5] == [
        "suite.job='scratch/one/seed0'",
        "experiment.seed=0",
        "++data.split_seed=0",
        "pretrained_experiment=none",
        "architecture=bert_mini",
    ]


def test_a_task_file_is_checked_before_any_job(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "a", "label": ["x", "y"]}) + "\n")
    task = parse_suite("mine", {"tasks": {"t": {"data": {"train": str(path)}}}}).tasks[0]
    with pytest.raises(BertlabError) as error:
        check_task_data(task)
    assert str(error.value) == (
        f"suite.tasks.t.label_field: {path}:1 has ['x', 'y'] in 'label' where one label is expected; for "
        f"several labels per text set problem_type=multi_label_classification"
    )
    task = parse_suite("mine", {"tasks": {"t": {"data": {"train": str(path)}, "text_field": "body"}}}).tasks[
        0
    ]
    with pytest.raises(
        BertlabError, match=r"^suite.tasks.t.text_field: .*has no 'body' field; set text_field"
    ):
        check_task_data(task)


def fake_results(suite_dir: Path, job: Job, figure: float, baseline: float) -> None:
    folder = suite_dir / job.folder
    folder.mkdir(parents=True)
    write_json(folder / "run.json", {"status": "completed"})
    metric = job.task.main_metric
    write_json(folder / RESULTS_FILE, {f"test/{metric}": figure, "baseline": {f"test/{metric}": baseline}})


def test_the_table_is_the_median_and_range_over_seeds_and_the_mean_of_task_medians(tmp_path):
    suite = parse_suite("mine", {**SUITE, "seeds": 3})
    starts = parse_starts(["run:base@step100", "run:base@step200", "scratch"], "bert_tiny")
    jobs = suite_jobs(suite, starts)
    figures = {"one": [0.5, 0.7, 0.6], "two": [0.2, 0.4, 0.1]}
    for job in jobs:
        if job.start.label == "scratch" and job.task.name == "two" and job.seed == 2:
            continue  # not finished: its cell says so
        shift = {"base@step100": 0.0, "base@step200": 0.1, "scratch": -0.05}[job.start.label]
        fake_results(tmp_path, job, figures[job.task.name][job.seed] + shift, 0.3)
    (tmp_path / jobs[-1].folder).mkdir(parents=True)  # a started job: not in the table
    table = read_table(tmp_path, suite, starts, jobs)
    rows = {
        (row["task"], row["start"]): row for row in read_csv_text(table_csv(table)) if row["main"] == "true"
    }
    assert rows["one", "base@step100"] == {
        "task": "one",
        "shape": "single label",
        "metric": "macro_f1",
        "main": "true",
        "start": "base@step100",
        "step": "100",
        "n": "3",
        "median": "0.6000",
        "min": "0.5000",
        "max": "0.7000",
        "baseline": "0.3000",
    }
    assert rows["two", "scratch"]["n"] == "2" and rows["two", "scratch"]["median"] == "0.2500"
    assert rows["overall", "base@step200"]["median"] == "0.5000"  # the mean of 0.7 and 0.3
    assert rows["overall", "scratch"]["median"] == "0.4000" and rows["overall", "scratch"]["n"] == "2"
    markdown = table_markdown(table)
    assert "jobs finished: 17 of 18" in markdown
    assert (
        "| one | single label | macro_f1 | 0.300 | 0.600 (0.500-0.700) | **0.700** (0.600-0.800) | "
        "0.550 (0.450-0.650) |"
    ) in markdown
    assert (
        "| two | regression | spearman | 0.300 | 0.200 (0.100-0.400) | **0.300** (0.200-0.500) | "
        "0.250 (0.150-0.350; 2 of 3 seeds) |"
    ) in markdown
    assert "| overall | | mean of the task medians | 0.300 | 0.400 | **0.500** | 0.400 |" in markdown
    assert table_csv(read_table(tmp_path, suite, starts, list(reversed(jobs)))) == table_csv(table)


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- checkpoints kept along a pretraining, as the starts of a suite -----------------------------------------


def test_kept_checkpoints_survive_a_resume_and_start_a_suite_along_the_run(suite_conf, tmp_path, monkeypatch):
    settings = [
        "+experiment=pretrain",
        "experiment.name=base",
        *FAST,
        "training.checkpoint.keep_steps=[4,12]",
    ]
    run_dir = tmp_path / "pretraining" / "base"
    with monkeypatch.context() as patch:
        interrupt_at(patch, 9)
        with pytest.raises(TrainingInterrupted):
            run(compose_config(settings, tmp_path), run_dir)
    kept = (run_dir / "checkpoints/step-4.ckpt").read_bytes()
    assert not (run_dir / "checkpoints/step-12.ckpt").exists()
    run(compose_config([*settings, "training.resume.is_resume=auto"], tmp_path), run_dir)
    assert (run_dir / "checkpoints/step-4.ckpt").read_bytes() == kept
    names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert names == ["best-model.ckpt", "model.ckpt", "step-12.ckpt", "step-4.ckpt"]
    for step in (4, 12):
        saved = torch.load(run_dir / f"checkpoints/step-{step}.ckpt", weights_only=True)
        assert saved["global_step"] == step

    args = suite_args(suite_conf, "tiny", "suite.seeds=[0]", "~suite.tasks.tags", "~suite.tasks.pairs")
    starts = "suite.starts=[run:base@step4,run:base@step12,run:base@last]"
    launch([*args, starts], tmp_path, flags=("-m",), timeout=600)
    suite_dir = tmp_path / "suites" / "tiny"
    rows = [row for row in read_csv(suite_dir / "suite.csv") if row["main"] == "true"]
    assert [(row["task"], row["start"], row["step"], row["n"]) for row in rows] == [
        ("sizes", "base@step4", "4", "1"),
        ("sizes", "base@step12", "12", "1"),
        ("sizes", "base@last", "16", "1"),  # the step its finetunes recorded: plotted there, after 12
        ("overall", "base@step4", "4", "1"),
        ("overall", "base@step12", "12", "1"),
        ("overall", "base@last", "16", "1"),
    ]
    started = json.loads((suite_dir / "base@step12/sizes/seed0/run.json").read_text())
    assert started["pretrained_from"]["checkpoint"].endswith("pretraining/base/checkpoints/step-12.ckpt")
    assert started["pretrained_from"]["step"] == 12
    assert (suite_dir / "steps.png").stat().st_size > 0


def test_steps_along_a_run_put_its_best_and_last_at_their_recorded_steps():
    starts = parse_starts(
        ["run:base@step100", "run:base@step300", "run:base", "run:base@last", "scratch"], "x"
    )
    recorded = {"base": 200, "base@last": 300}  # best at 200; last is the kept step 300: plotted once
    along = steps_along_runs(starts, lambda start: start.step or recorded.get(start.label))
    assert [start.label for start in along["base"]] == ["base@step100", "base", "base@step300"]
    assert steps_along_runs(starts[2:]) == {}  # no kept checkpoints: no curve, the starts are columns


def test_a_finished_job_that_ran_with_other_settings_is_refused_not_skipped(tmp_path):
    suite = parse_suite("mine", SUITE)
    (job, *_) = suite_jobs(suite, parse_starts(["scratch"], "bert_tiny"))
    command = [
        "+experiment=suite",
        "suite=mine",
        "suite.starts=[scratch]",
        f"experiment.output_dir={tmp_path}",
    ]
    ran = [*job.overrides(suite), *command]
    record = tmp_path / job.folder / ".hydra" / "overrides.yaml"
    record.parent.mkdir(parents=True)
    record.write_text(yaml.safe_dump(ran))
    # Which jobs a launch runs (suite.*) and where do not change the job: it is skipped.
    check_finished_job(
        tmp_path, job, [*job.overrides(suite), "+experiment=suite", "suite=mine", "suite.seeds=[0]"]
    )
    with pytest.raises(BertlabError) as error:
        check_finished_job(tmp_path, job, [*ran, "training.max_steps=25"])
    assert str(error.value).startswith(
        "suite: job 'scratch/one/seed0' finished with other settings (this launch adds "
        "['training.max_steps=25']); nothing was changed."
    )
