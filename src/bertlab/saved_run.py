"""Reading a saved run: the one reader of a run folder's checkpoint, config, tokenizer and labels.

`SavedRun.open` resolves which checkpoint (best, last or a path), reads it once (`weights_only=True`,
memory-mapped) and keeps what its `bertlab` payload says; the `rebuild_*` methods rebuild the model it holds.
Resume, the finetune's pretrained start, evaluate, export and predict all read runs through it, so they fail
with the same messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError, reading
from bertlab.run_folder import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    HYDRA_CONFIG,
    LABELS_FILE,
    LAST_CHECKPOINT,
    TASK_KINDS,
    TOKENIZER_FILE,
    checkpoints_of,
)

# How a checkpoint is named in settings and command lines (pretrained_experiment.checkpoint, --checkpoint).
CHECKPOINT_CHOICES = {"best": BEST_CHECKPOINT, "last": LAST_CHECKPOINT}


def read_checkpoint(path: Path, key: str | None = "training.resume.checkpoint_path") -> dict[str, Any]:
    """Loads safely (weights_only) and memory-mapped; a file that cannot be read gets one clear error.

    `key` is the setting that named the file, so that the message says what to change.
    """
    import torch  # here: the launcher's guard imports the resume module and must stay cheap

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        fix = f"; point {key} at another checkpoint" if key else ""
        raise BertlabError(f"checkpoint {str(path)!r} {unreadable_reason(error)}{fix}", key) from None


def unreadable_reason(error: Exception) -> str:
    """Why torch could not load a file, in one line (torch's own text is long, repeated and has escapes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"holds a Python object ({refused.group(1)}) that a safe load (weights_only) refuses to run; "
            f"bertlab checkpoints hold only tensors and plain values, so it was not written by bertlab"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first = first.split(". ")[0].rstrip(".")
    return f"cannot be read ({type(error).__name__}: {first}); it is truncated, corrupt or not a checkpoint"


MISSING_CHECKPOINT = "checkpoint {candidates} does not exist; the run has {available}"


def checkpoint_file(
    run_dir: Path, choice: str | Path | None, key: str, missing: str = MISSING_CHECKPOINT
) -> Path:
    """The checkpoint `choice` names in `run_dir`: best, last, or a path (absolute or inside the run folder).

    None means the best checkpoint, else the last one (a run stopped before its first validation).
    `missing` is the message when none exists ({candidates}, {available}, {run_dir} are filled in): each
    command says what it expected.
    """
    run_dir = Path(run_dir)
    if choice is None:
        candidates = [run_dir / BEST_CHECKPOINT, run_dir / LAST_CHECKPOINT]
    elif str(choice) in CHECKPOINT_CHOICES:
        candidates = [run_dir / CHECKPOINT_CHOICES[str(choice)]]
    else:
        candidates = [Path(choice) if Path(choice).is_absolute() else run_dir / choice]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = [str(path.relative_to(run_dir)) for path in checkpoints_of(run_dir)]
    raise BertlabError(
        missing.format(
            candidates=" or ".join(repr(str(c)) for c in candidates),
            available=available or "no checkpoints",
            run_dir=repr(str(run_dir)),
        ),
        key,
    )


@dataclass(frozen=True)
class SavedRun:
    """A run folder and one of its checkpoints, read once: what the `bertlab` payload says about the run."""

    run_dir: Path
    checkpoint: Path
    task: str | None  # "mlm" | "classification" (run_folder.TASK_KINDS)
    config: dict[str, Any]  # the run's resolved config
    world_size: int  # processes that shared each step (a resume's data position depends on it)
    backbone_config: dict[str, Any]  # the architecture actually built (a finetune's is inherited)
    state: dict[str, Any]  # the whole checkpoint: state_dict, global_step, ...
    key: str  # the setting or argument that named the run, for messages about its files

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        checkpoint: str | Path | None = None,
        key: str = "run",
        task: str | None = None,
        missing: str = MISSING_CHECKPOINT,
        checkpoint_key: str | None = None,
    ) -> SavedRun:
        """The run in `run_dir` at `checkpoint` (see checkpoint_file); `task` is required if given.

        `key` names the run in messages (a missing folder, a damaged file of it), `checkpoint_key` the
        setting or option that chose the checkpoint (default `key`): a checkpoint that is missing or cannot
        be read names it when one was chosen.
        """
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise BertlabError(f"run folder {str(run_dir)!r} does not exist", key)
        checkpoint_key = checkpoint_key or key
        path = checkpoint_file(run_dir, checkpoint, key if checkpoint is None else checkpoint_key, missing)
        return cls.read(path, run_dir, key, task, checkpoint_key)

    @classmethod
    def read(
        cls, path: Path, run_dir: Path, key: str, task: str | None = None, checkpoint_key: str | None = None
    ) -> SavedRun:
        """The checkpoint file `path` of the run in `run_dir`.

        Checkpoints written before the config was stored in them fall back on the run's .hydra/config.yaml.
        """
        state = read_checkpoint(path, checkpoint_key or key)
        payload = state.get("bertlab") or {}
        config = payload.get("config")
        if not config and (Path(run_dir) / HYDRA_CONFIG).is_file():
            from omegaconf import OmegaConf

            with reading(Path(run_dir) / HYDRA_CONFIG, key, "the run's config"):
                config = OmegaConf.to_container(OmegaConf.load(Path(run_dir) / HYDRA_CONFIG), resolve=True)
        writer = f"a bertlab {TASK_KINDS[task]} run" if task else "bertlab"
        if not config or "architecture" not in config:
            raise BertlabError(
                f"checkpoint {str(path)!r} holds no bertlab run config; it was not written by {writer}", key
            )
        if task is not None and payload.get("task", task) != task:
            raise BertlabError(
                f"checkpoint {str(path)!r} was written by a "
                f"{TASK_KINDS.get(payload['task'], payload['task'])} run, not by {writer}",
                key,
            )
        return cls(
            Path(run_dir),
            Path(path),
            payload.get("task"),
            config,
            int(payload.get("world_size", 1)),
            dict(payload.get("backbone") or config["architecture"]),
            state,
            key,
        )

    # -- what it holds --------------------------------------------------------------------------------
    @property
    def state_dict(self) -> dict[str, Any]:
        return self.state.get("state_dict", {})

    @property
    def step(self) -> int:
        return int(self.state.get("global_step", 0))

    @property
    def architecture(self) -> dict[str, Any]:
        """The backbone's architecture, with the Encoder's defaults for keys that older runs lack."""
        from bertlab.model.encoder import ENCODER_TARGET, encoder_defaults

        if self.backbone_config.get("_target_") != ENCODER_TARGET:
            return dict(self.backbone_config)
        return {**encoder_defaults(), **self.backbone_config}

    @property
    def vocab_size(self) -> int:
        weights = self.state_dict.get("backbone.word_embeddings.weight")
        if weights is None:
            raise BertlabError(
                f"checkpoint {str(self.checkpoint)!r} holds no bertlab encoder weights", self.key
            )
        return weights.size(0)

    @property
    def tokenizer_file(self) -> Path:
        """The run's tokenizer file; a folder without one is not a complete run."""
        path = self.run_dir / TOKENIZER_FILE
        if not path.is_file():
            raise BertlabError(f"{str(path)!r} is missing; the run folder is incomplete", self.key)
        return path

    def tokenizer(self) -> Any:
        """The run's tokenizer, with the run's sequence length and truncation (read once)."""
        return self._tokenizer

    @cached_property
    def _tokenizer(self) -> Any:
        from bertlab.tokenizer import TextTokenizer

        settings = self.config.get("tokenizer", {})
        return TextTokenizer.from_file(
            self.tokenizer_file,
            settings.get("max_length", 128),
            settings.get("truncation", True),
            self.key,
            tail_tokens=settings.get("tail_tokens") or 0,
        )

    def labels(self) -> list:
        """The label vocabulary a finetuning run trained with (ids index into it)."""
        path = self.run_dir / LABELS_FILE
        if not path.is_file():
            raise BertlabError(
                f"{str(path)!r} is missing; is {str(self.run_dir)!r} a finetuning run?", self.key
            )
        with reading(path, self.key, "label vocabulary", "it is damaged: restore it from a copy of the run"):
            labels = json.loads(path.read_text())
            if not isinstance(labels, list):
                raise ValueError(f"a JSON {type(labels).__name__}, not a list of labels")
        return labels

    def weights(self, prefix: str) -> dict[str, Any]:
        """The tensors under `prefix` (`backbone.`, `head.`), with the prefix removed."""
        return {k.removeprefix(prefix): v for k, v in self.state_dict.items() if k.startswith(prefix)}

    # -- rebuilding its model -------------------------------------------------------------------------
    def rebuild_backbone(self) -> Any:
        """The backbone with its trained weights, in eval mode."""
        from bertlab.config.instantiate import instantiate_node

        backbone = instantiate_node(
            self.architecture,
            "architecture",
            vocab_size=self.vocab_size,
            pad_token_id=self.tokenizer().pad_id,
        )
        backbone.load_state_dict(self.weights("backbone."))
        return backbone.eval()

    def rebuild_mlm(self) -> tuple[Any, Any]:
        """The backbone and its MLM head (tied to the word embeddings), trained weights, eval mode."""
        from bertlab.config.instantiate import instantiate_node

        backbone = self.rebuild_backbone()
        head = instantiate_node(
            self.config["mlm_head"]["module"],
            "mlm_head.module",
            hidden_size=backbone.hidden_size,
            vocab_size=self.vocab_size,
        )
        head.tie_to(backbone.word_embeddings)
        head.load_state_dict(self.weights("head."))
        return backbone, head.eval()

    def rebuild_classifier(self) -> tuple[Any, Any]:
        """The backbone and its classification head, trained weights, eval mode."""
        from bertlab.config.instantiate import instantiate_node

        backbone = self.rebuild_backbone()
        head = instantiate_node(
            self.config["classification_head"],
            "classification_head",
            hidden_size=backbone.hidden_size,
            num_labels=len(self.labels()),
        )
        head.load_state_dict(self.weights("head."))
        return backbone, head.eval()


def runs_in(kind_dir: Path) -> list[str]:
    """The names of the runs under `<output_dir>/<kind>/` that hold checkpoints."""
    if not Path(kind_dir).is_dir():
        return []
    return sorted(p.name for p in Path(kind_dir).iterdir() if (p / CHECKPOINTS_DIR).is_dir())
