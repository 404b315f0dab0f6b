"""What a suite file says, checked key by key, and each task as the launch.py overrides of its finetune.

A suite is conf/suite/<name>.yaml (or a file of the same form on Hydra's search path); the launcher composes
it and hands it here as plain values. Every key is known: an unknown one, a wrong type, a metric the task's
shape does not report are refused in one line naming `suite.<key>`, before any job starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertlab.data.labelled import FORMATS, RecordFields, labelled_example, labelled_records
from bertlab.errors import BertlabError
from bertlab.flow import LOWER_IS_BETTER
from bertlab.model.classification_head import MULTI_LABEL, PROBLEM_TYPES, REGRESSION, SINGLE_LABEL
from bertlab.tasks.objectives import EVAL_FIGURES, MAIN_METRIC

# The keys of a suite and of each task (the docstrings of conf/suite/smoke.yaml say the same).
SUITE_KEYS = (
    "description",  # one line for the table's heading
    "seeds",  # a list of finetuning seeds (experiment.seed), or how many: 3 means [0, 1, 2]
    "starts",  # the starts when the command gives none (suite.starts=[...]); see starts.py
    "split_seed",  # data.split_seed of every job: val/test carved off by ratio the same for every seed and start
    "devsets_dir",  # where ../shared/tools/make_devsets.py wrote the devsets (tasks interpolate it)
    "scratch_architecture",  # the architecture of the `scratch` start (conf/architecture option)
    "scratch_overrides",  # overrides only the from-scratch start gets (its tokenizer, say)
    "overrides",  # launch.py overrides of every job
    "tasks",  # name -> task
    "job",  # set by the launcher for each job (its folder); null in a suite file
)
DATA_FILES = ("train", "val", "test")
FIELD_KEYS = {  # task key -> the data key it sets
    "text_field": "data.text_field",
    "text_pair_field": "data.text_pair_field",
    "label_field": "data.label_field",
    "label_separator": "data.label_separator",
}
FINETUNING_KEYS = {  # task key -> the launch.py key it sets; given (even null) means set
    "train_examples": "data.source.train_examples",
    "val_examples": "data.source.val_examples",
    "epochs": "training.max_epochs",
    "min_steps": "training.min_steps",
    "max_steps": "training.max_steps",
    "lr": "training.optimizer.lr",
    "batch_size": "training.batch_size",
}
TASK_KEYS = ("data", "problem_type", "main_metric", *FIELD_KEYS, *FINETUNING_KEYS, "overrides")
NULLABLE = ("epochs", "min_steps", "train_examples", "val_examples", "text_pair_field")
SHAPE_NAMES = {SINGLE_LABEL: "single label", MULTI_LABEL: "multi-label", REGRESSION: "regression"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
FILES_DATA = "classification"  # the conf/data option a task with files finetunes on


@dataclass(frozen=True)
class Task:
    """One labelled task of a suite: its data, shape, main metric and finetuning settings."""

    name: str
    problem_type: str
    main_metric: str
    data: str | None  # an option of conf/data (the embedded sets: reviews, reviews_pairs, ...); None: files
    files: dict[str, Path | None] = field(default_factory=dict)  # train, val, test (absolute)
    fields: dict[str, str | None] = field(default_factory=dict)  # the FIELD_KEYS it gives
    settings: dict[str, Any] = field(default_factory=dict)  # the FINETUNING_KEYS it gives
    overrides: tuple[str, ...] = ()
    pairs: bool = False  # its records hold two texts (known once the launcher has composed its config)

    @property
    def shape(self) -> str:
        return SHAPE_NAMES[self.problem_type] + (", pairs" if self.pairs else "")

    @property
    def metrics(self) -> list[str]:
        """Its test figures, the main metric first."""
        figures = [name for name in EVAL_FIGURES[self.problem_type] if name != "threshold"]
        return [self.main_metric, *(name for name in figures if name != self.main_metric)]

    def launch_overrides(self) -> list[str]:
        """The launch.py overrides that finetune this task (after the suite's own, before the command's)."""
        overrides = [f"data={self.data or FILES_DATA}"]
        overrides += [override(f"data.source.{split}", path) for split, path in self.files.items() if path]
        overrides.append(f"classification_head.problem_type={self.problem_type}")
        overrides += [override(FIELD_KEYS[key], value) for key, value in self.fields.items()]
        if self.main_metric != MAIN_METRIC[self.problem_type]:
            overrides.append(override("training.checkpoint.monitor", f"val/{self.main_metric}"))
        overrides += [override(FINETUNING_KEYS[key], value) for key, value in self.settings.items()]
        return [*overrides, *self.overrides]

    def record_fields(self) -> RecordFields:
        """Where its files keep texts and labels (the data option's defaults where it gives none)."""
        given = {key: value for key, value in self.fields.items() if value is not None or key in NULLABLE}
        return RecordFields(problem_type=self.problem_type, **given)


@dataclass(frozen=True)
class Suite:
    """A checked suite: its tasks in file order, and what every job shares."""

    name: str
    description: str
    seeds: tuple[int, ...]
    starts: tuple[str, ...]
    split_seed: int
    scratch_architecture: str
    scratch_overrides: tuple[str, ...]
    overrides: tuple[str, ...]
    tasks: tuple[Task, ...]


def override(key: str, value: Any) -> str:
    """`key=value` as Hydra's override grammar reads it back: null, numbers and booleans plain, text quoted."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if isinstance(value, int | float):
        return f"{key}={value!r}"
    return f"{key}='{str(value).replace(chr(39), chr(92) + chr(39))}'"


def _unknown(given: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in given:
        if key not in known:
            raise BertlabError(f"unknown key; {where} takes {', '.join(known)}", f"{where}.{key}")


def _integer(value: Any, key: str, minimum: int = 0, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a non-negative" if minimum == 0 else "a positive"
        raise BertlabError(f"must be {what} integer{' or null' if nullable else ''}, got {value!r}", key)
    return value


def _text(value: Any, key: str, nullable: bool = False) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        raise BertlabError(f"must be a non-empty string{' or null' if nullable else ''}, got {value!r}", key)
    return value


def _texts(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise BertlabError(f"must be a list of launch.py overrides (key=value), got {value!r}", key)
    return tuple(value)


def parse_suite(name: str, values: dict[str, Any]) -> Suite:
    """The suite `name` from its composed values (conf/suite/<name>.yaml plus the command's suite.* keys)."""
    if not NAME.match(name):
        raise BertlabError(f"must be a plain name (letters, digits, _ . + -), got {name!r}", "suite")
    _unknown(values, SUITE_KEYS, "suite")
    values = {key: value for key, value in values.items() if value is not None}  # null: the default
    seeds = values.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_integer(seeds, "suite.seeds", minimum=1)))
    if not isinstance(seeds, list) or not seeds:
        raise BertlabError(f"must be a list of seeds or how many, got {seeds!r}", "suite.seeds")
    for seed in seeds:
        _integer(seed, "suite.seeds")
    if len(set(seeds)) != len(seeds):
        raise BertlabError(f"lists a seed twice: {seeds}", "suite.seeds")
    tasks = values.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise BertlabError(
            "must map task names to tasks (data, problem_type, ...); it has none", "suite.tasks"
        )
    starts = values.get("starts") or ["scratch"]
    return Suite(
        name=name,
        description=str(values.get("description") or ""),
        seeds=tuple(seeds),
        starts=_texts(starts, "suite.starts"),
        split_seed=_integer(values.get("split_seed", 0), "suite.split_seed"),
        scratch_architecture=_text(
            values.get("scratch_architecture", "bert_tiny"), "suite.scratch_architecture"
        ),
        scratch_overrides=_texts(values.get("scratch_overrides"), "suite.scratch_overrides"),
        overrides=_texts(values.get("overrides"), "suite.overrides"),
        tasks=tuple(parse_task(task, entry) for task, entry in tasks.items()),
    )


def parse_task(name: str, values: Any) -> Task:
    """One entry of `suite.tasks`."""
    where = f"suite.tasks.{name}"
    if not NAME.match(str(name)):
        raise BertlabError(
            f"a task name must be a plain name (letters, digits, _ . + -), got {name!r}", where
        )
    if not isinstance(values, dict):
        raise BertlabError(f"must be a mapping of {', '.join(TASK_KEYS)}, got {values!r}", where)
    _unknown(values, TASK_KEYS, where)
    problem_type = values.get("problem_type", SINGLE_LABEL)
    if problem_type not in PROBLEM_TYPES:
        raise BertlabError(
            f"must be one of {list(PROBLEM_TYPES)}, got {problem_type!r}", f"{where}.problem_type"
        )
    main_metric = values.get("main_metric") or MAIN_METRIC[problem_type]
    reported = [name for name in EVAL_FIGURES[problem_type] if name != "threshold"]
    if main_metric not in reported:
        raise BertlabError(
            f"must be one of the figures a {problem_type} task reports ({', '.join(reported)}), got "
            f"{main_metric!r}",
            f"{where}.main_metric",
        )
    if main_metric in LOWER_IS_BETTER:
        raise BertlabError(
            f"{main_metric} is better when lower; the overall score averages main metrics that are better when "
            f"higher: choose one of {', '.join(m for m in reported if m not in LOWER_IS_BETTER)}",
            f"{where}.main_metric",
        )
    data, files = _data(values.get("data"), f"{where}.data")
    fields = {key: values[key] for key in FIELD_KEYS if key in values}
    for key, value in fields.items():
        _text(value, f"{where}.{key}", nullable=key in NULLABLE)
    settings = {key: values[key] for key in FINETUNING_KEYS if key in values}
    for key, value in settings.items():
        if key == "lr":
            if value != "auto" and (
                isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
            ):
                raise BertlabError(f"must be a positive number or auto, got {value!r}", f"{where}.lr")
        else:
            _integer(value, f"{where}.{key}", minimum=1, nullable=key in NULLABLE)
    if data is not None and any(key in settings for key in ("train_examples", "val_examples")):
        raise BertlabError(
            f"applies to a task with files; the embedded set {data!r} takes its size from data.source.count "
            f"(overrides: [data.source.count=N])",
            f"{where}.{'train_examples' if 'train_examples' in settings else 'val_examples'}",
        )
    return Task(
        name=str(name),
        problem_type=problem_type,
        main_metric=main_metric,
        data=data,
        files=files,
        fields=fields,
        settings=settings,
        overrides=_texts(values.get("overrides"), f"{where}.overrides"),
        pairs=bool(fields.get("text_pair_field")),
    )


def _data(value: Any, key: str) -> tuple[str | None, dict[str, Path | None]]:
    """An embedded set (an option of conf/data), or files: {train: ..., val: ..., test: ...}."""
    if isinstance(value, str) and value:
        if value == FILES_DATA:
            raise BertlabError(
                f"give the files instead: {{train: ..., val: ..., test: ...}}, not {value!r}", key
            )
        return value, {}
    if not isinstance(value, dict) or "train" not in value:
        raise BertlabError(
            f"must name an embedded set (an option of conf/data: reviews, reviews_pairs, ...) or give files "
            f"{{train: ..., val: ..., test: ...}}, got {value!r}",
            key,
        )
    _unknown(value, DATA_FILES, key)
    files = {}
    for split in DATA_FILES:
        path = _text(value.get(split), f"{key}.{split}", nullable=split != "train")
        files[split] = Path(path).absolute() if path else None
    return None, files


def check_task_data(task: Task) -> None:
    """A task's files exist, and their first records hold its fields and a label of its shape: the checks
    a finetune makes of every record, made of the first one before any job starts."""
    for split, path in task.files.items():
        key = f"suite.tasks.{task.name}.data.{split}"
        if path is None:
            continue
        if not path.is_file():
            raise BertlabError(
                f"file '{path}' does not exist; build the devsets with ../shared/tools/make_devsets.py (and "
                f"point suite.devsets_dir at them) or fix the path",
                key,
            )
        if path.suffix not in FORMATS:
            raise BertlabError(f"file '{path}' must be one of {list(FORMATS)}, got {path.suffix!r}", key)
        try:
            first = next(iter(labelled_records(path, key)), None)
            if first is None:
                raise BertlabError(f"file '{path}' holds no examples", key)
            labelled_example(path, *first, task.record_fields())
        except BertlabError as error:
            raise _in_task(error, task) from None


def _in_task(error: BertlabError, task: Task) -> BertlabError:
    """A data error, keyed and worded for the suite's task (its keys are the task's, not data.*)."""
    key = str(error.key or "")
    name = key.rsplit(".", 1)[-1] if key.startswith(("data.", "classification_head.")) else None
    message = error.message.replace("classification_head.problem_type", "problem_type")
    for task_key, data_key in FIELD_KEYS.items():
        message = message.replace(data_key, task_key)
    return BertlabError(message, f"suite.tasks.{task.name}.{name}" if name else key)
