"""Where a suite's finetunes start: the words of `suite.starts=[...]` and the overrides each one means.

    scratch                     random initialisation, the suite's scratch_architecture
    scratch:<architecture>      random initialisation of that conf/architecture option
    run:<name>                  pretraining run <output_dir>/pretraining/<name>, its best checkpoint
    run:<name>@last             ... its last checkpoint (checkpoints/model.ckpt)
    run:<name>@step<N>          ... the checkpoint it kept at step N (training.checkpoint.keep_steps)
    hf:<folder>                 a Hugging Face BERT/RoBERTa folder

A start is checked (the run, the checkpoint, the folder, the architecture exist) before any job starts.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from bertlab.errors import BertlabError
from bertlab.run_folder import PRETRAINING, checkpoints_of, kept_checkpoint, run_dir_of
from bertlab.saved_run import CHECKPOINT_CHOICES, checkpoint_file

KEY = "suite.starts"
SCRATCH, RUN, HF = "scratch", "run", "hf"
FORMS = "scratch, scratch:<architecture>, run:<name>, run:<name>@last, run:<name>@step<N>, hf:<folder>"
STEP = re.compile(r"^step(\d+)$")
RUN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class Start:
    """One start: as written, its label (the jobs' folder and the table's column) and its overrides."""

    text: str
    kind: str  # scratch | run | hf
    label: str
    overrides: tuple[str, ...]
    run: str | None = None  # the pretraining run (run:)
    checkpoint: str | None = None  # best | last | checkpoints/step-<N>.ckpt (run:)
    step: int | None = None  # the pretraining step of a kept checkpoint (@step<N>)
    path: Path | None = None  # the Hugging Face folder (hf:)


def parse_start(text: str, scratch_architecture: str) -> Start:
    """One word of suite.starts (see the module's docstring)."""
    kind, _, rest = str(text).partition(":")
    if kind == SCRATCH:
        architecture = rest or scratch_architecture
        label = f"{SCRATCH}-{rest}" if rest else SCRATCH
        return Start(text, SCRATCH, label, ("pretrained_experiment=none", f"architecture={architecture}"))
    if kind == RUN and rest:
        name, _, at = rest.partition("@")
        if not RUN_NAME.match(name):
            raise BertlabError(f"{text!r}: {name!r} is not a run name (a folder under pretraining/)", KEY)
        step = STEP.match(at)
        if at in ("", "best"):
            checkpoint, label = "best", name
        elif at == "last":
            checkpoint, label = "last", f"{name}@last"
        elif step:
            checkpoint, label = str(kept_checkpoint(int(step.group(1)))), f"{name}@step{int(step.group(1))}"
        else:
            raise BertlabError(f"{text!r}: after @ comes best, last or step<N>, got {at!r}", KEY)
        overrides = (f"pretrained_experiment.name={name}", f"pretrained_experiment.checkpoint='{checkpoint}'")
        return Start(
            text,
            RUN,
            label,
            overrides,
            run=name,
            checkpoint=checkpoint,
            step=int(step.group(1)) if step else None,
        )
    if kind == HF and rest:
        path = Path(rest).absolute()
        label = f"hf-{path.name}"
        return Start(text, HF, label, (f"pretrained_experiment.hf_path='{path}'",), path=path)
    raise BertlabError(f"{text!r} is not a start; write one of {FORMS}", KEY)


def parse_starts(texts: list[str], scratch_architecture: str) -> list[Start]:
    """The starts of a suite launch, in order; two with one label (the same start twice) are refused."""
    if not texts:
        raise BertlabError(f"no start given; write suite.starts=[...] with any of {FORMS}", KEY)
    starts = [parse_start(text, scratch_architecture) for text in texts]
    labels = [start.label for start in starts]
    for label in labels:
        if labels.count(label) > 1:
            twins = [start.text for start in starts if start.label == label]
            raise BertlabError(
                f"{twins} share the label {label!r} (their jobs' folder and the table's column): the same start "
                f"twice, or two folders of one name; give each start once",
                KEY,
            )
    return starts


def check_start(start: Start, output_dir: Path, architectures: Collection[str]) -> None:
    """The start exists: the architecture option, the pretraining run and its checkpoint, the folder."""
    if start.kind == SCRATCH:
        architecture = start.overrides[-1].partition("=")[2]
        if architecture not in architectures:
            raise BertlabError(
                f"{start.text!r}: there is no architecture {architecture!r}; choose one of "
                f"{sorted(a for a in architectures if not a.startswith('from_'))}",
                KEY,
            )
    elif start.kind == RUN:
        runs = run_dir_of(output_dir, PRETRAINING, "")
        run_dir = runs / str(start.run)
        if not run_dir.is_dir():
            found = sorted(p.name for p in runs.iterdir() if checkpoints_of(p)) if runs.is_dir() else []
            raise BertlabError(
                f"{start.text!r}: there is no pretraining run {str(run_dir)!r}; the runs there are "
                f"{found or 'none'} (experiment.output_dir is {str(output_dir)!r})",
                KEY,
            )
        missing = f"{start.text!r}: checkpoint {{candidates}} does not exist; the run has {{available}}" + (
            " (keep checkpoints along a pretraining with training.checkpoint.keep_steps=[...])"
            if start.step is not None
            else ""
        )
        choice = start.checkpoint if start.checkpoint in CHECKPOINT_CHOICES else str(start.checkpoint)
        checkpoint_file(run_dir, choice, KEY, missing=missing)
    elif not (Path(str(start.path)) / "config.json").is_file():
        raise BertlabError(
            f"{start.text!r}: {str(start.path)!r} is not a Hugging Face model folder (no config.json there)",
            KEY,
        )
