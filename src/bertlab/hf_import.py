"""Start a run from a Hugging Face BERT or RoBERTa model folder, as domain-adaptive pretraining does.

    python launch.py +experiment=pretrain architecture=from_hf architecture.path=<folder> data=text ...
    python launch.py +experiment=finetune pretrained_experiment.hf_path=<folder>

The folder is read as given (no network): config.json, model.safetensors or pytorch_model.bin (sharded ones
through their index), its tokenizer file or vocab.txt. Its config becomes an explicit bertlab architecture, so the
run's checkpoints are self-contained and export, finetuning and resume treat the run like any other; the
weights map through the name table that export uses (model/hf_format.py). A model_type or a setting bertlab's
encoder cannot reproduce exactly is refused before anything is written, naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertlab.errors import BertlabError, reading
from bertlab.model.encoder import ENCODER_TARGET, encoder_defaults
from bertlab.model.hf_format import FORMATS, HFFormat, from_hf
from bertlab.pretrained import load_backbone
from bertlab.sentence_embedding import sentence_embedding
from bertlab.tokenizer import HF_TOKENIZER_FILES, TextTokenizer, is_saved_tokenizer

log = logging.getLogger(__name__)
SUPPORTED = {
    "bert": "BertForMaskedLM, BertForPreTraining, BertModel and models built on them (BioBERT, SciBERT, ...)",
    "roberta": "RobertaForMaskedLM, RobertaModel and models built on them",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# config.json settings bertlab's encoder reproduces only at these values (absent means the default, allowed).
EXACT_SETTINGS: dict[str, tuple[Any, ...]] = {
    "hidden_act": ("gelu",),  # exact erf GELU; gelu_new and the tanh approximations differ
    "position_embedding_type": ("absolute",),
    "is_decoder": (False,),
    "add_cross_attention": (False,),
}


@dataclass
class HFModel:
    """A validated Hugging Face model folder: its config, format, weight files and tokenizer."""

    folder: Path
    config: dict[str, Any]
    format: HFFormat
    weight_files: list[Path]
    tokenizer: TextTokenizer

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", True))

    @property
    def architecture(self) -> dict[str, Any]:
        """The bertlab architecture (every Encoder option) that computes what this model computes."""
        return {
            "_target_": ENCODER_TARGET,
            **encoder_defaults(),
            **self.format.architecture(self.config, self.tokenizer.pad_id),
        }

    @property
    def has_mlm_head(self) -> bool:
        """Whether the weights hold an MLM head (BertForMaskedLM) or only the encoder (BertModel); from the
        tensor names alone, so a resume answers it as the first start did without loading the weights."""
        transform = f"{self.format.head['transform']}.weight"
        return any(transform in _weight_names(path) for path in self.weight_files)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under bertlab's names (`backbone.*`, and `head.*` where the folder has an MLM head)."""
        raw: dict[str, torch.Tensor] = {}
        for path in self.weight_files:
            raw.update(_read_weights(path))
        state, missing = from_hf(raw, self.format, self.config["num_hidden_layers"], self.tokenizer.pad_id)
        encoder_missing = [theirs for ours, theirs in missing.items() if ours.startswith("backbone.")]
        if encoder_missing:
            raise BertlabError(
                f"the weights in {str(self.folder)!r} lack {encoder_missing[:5]} "
                f"({len(encoder_missing)} encoder tensors in all); they are not a complete "
                f"{self.format.model_type} encoder",
                "path",
            )
        if any(key.startswith("head.") for key in missing):  # a base model: pretraining starts a new head
            state = {key: value for key, value in state.items() if not key.startswith("head.")}
        return state

    def encoder(self) -> nn.Module:
        """The encoder with the folder's weights, in eval mode (what embeddings of the folder need)."""
        from bertlab.config.instantiate import instantiate_node

        backbone = instantiate_node(
            self.architecture,
            "architecture",
            vocab_size=self.tokenizer.vocab_size,
            pad_token_id=self.tokenizer.pad_id,
        )
        load_backbone(backbone, self.state_dict(), self.folder)
        return backbone.eval()

    def embedding_record(self) -> dict[str, Any] | None:
        """The folder's sentence-transformers recipe, for runs started from it (bertlab-predict's default
        pooling); None for a plain model folder or a recipe bertlab cannot compute (only embeddings need it)."""
        try:
            recipe = sentence_embedding(self.folder)
        except BertlabError:
            return None
        return recipe.record() if recipe else None

    def weights_sha256(self) -> str:
        digest = hashlib.sha256()
        for path in self.weight_files:
            with path.open("rb") as handle:
                while block := handle.read(1 << 24):
                    digest.update(block)
        return digest.hexdigest()

    def record(self) -> dict[str, Any]:
        """What the run-info file and the checkpoints keep of the source: where, which format, which weights exactly."""
        return {
            "path": str(self.folder.resolve()),
            "model_type": self.format.model_type,
            "architectures": self.config.get("architectures"),
            "weights": [path.name for path in self.weight_files],
            "weights_sha256": self.weights_sha256(),
            "sentence_embedding": self.embedding_record(),
        }


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight file; a file that cannot be read is named, and a pickle holding more
    than tensors is refused (loading it would run code from the file)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise BertlabError(
                f"{str(path)!r} needs safetensors: pip install 'bertlab[hf]' (or pip install safetensors)",
                "path",
            ) from error
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises SafetensorError, OSError, ...
            raise _unreadable(path, error) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise _unreadable(path, error) from None
        raise BertlabError(
            f"file {str(path)!r} is a pickle that holds objects other than tensors; bertlab reads weights "
            f"only as plain tensors and never runs code from a model file: use a folder with "
            f"model.safetensors instead",
            "path",
        ) from None
    except Exception as error:  # a truncated or damaged file: RuntimeError, EOFError, OSError, ...
        raise _unreadable(path, error) from None


def _weight_names(path: Path) -> set[str]:
    """The tensor names of one weight file, read without the tensors where the format allows."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                return set(handle.keys())
        except Exception:  # unreadable: _read_weights names the file when the weights are loaded
            return set()
    for mmap in (True, False):  # files in torch's legacy format cannot be memory-mapped
        try:
            return set(torch.load(path, map_location="cpu", weights_only=True, mmap=mmap))
        except Exception:
            continue
    return set()


def _unreadable(path: Path, error: Exception) -> BertlabError:
    detail = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    if "weights_only" in detail:
        detail = type(error).__name__
    return BertlabError(
        f"file {str(path)!r} cannot be read as weights ({detail}): it is truncated or damaged; copy or "
        f"download the model folder again",
        "path",
    )


def _weight_files(folder: Path, key: str) -> list[Path]:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():  # sharded
            with reading(index, key, "weight index", "copy or download the model folder again"):
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    raise BertlabError(
        f"{str(folder)!r} holds no weights: expected {' or '.join(WEIGHT_FILES)} (or a sharded index)", key
    )


def read_hf_model(path: str | Path, key: str = "architecture.path") -> HFModel:
    """Validate a Hugging Face model folder without writing anything; errors name `key` or the setting."""
    folder = Path(path).expanduser()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BertlabError(f"{str(config_file)!r} does not exist; give a Hugging Face model folder", key)
    with reading(config_file, key, "model config", "copy or download the model folder again"):
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError(f"a JSON {type(config).__name__}, not an object")
    model_type = config.get("model_type")
    supported = "; ".join(f"{name!r} ({classes})" for name, classes in SUPPORTED.items())
    if model_type not in FORMATS:
        raise BertlabError(
            f"{str(config_file)!r} has model_type {model_type!r}, which bertlab cannot import; supported "
            f"model_type values: {supported}",
            key,
        )
    for setting, allowed in EXACT_SETTINGS.items():
        if setting in config and config[setting] not in allowed:
            raise BertlabError(
                f"{str(config_file)!r} sets {setting}={config[setting]!r}; bertlab's encoder reproduces "
                f"{model_type} exactly only with {setting} in {list(allowed)} (supported: {supported})",
                key,
            )
    if not is_saved_tokenizer(folder):
        raise BertlabError(
            f"{str(folder)!r} holds no tokenizer: expected {' or '.join(HF_TOKENIZER_FILES)}; copy the "
            f"model's tokenizer files (tokenizer.json, or vocab.txt with tokenizer_config.json) into it",
            key,
        )
    weight_files = _weight_files(folder, key)
    try:
        tokenizer = TextTokenizer.from_file(folder, fix="copy or download the model folder again")
    except BertlabError as error:
        raise BertlabError(error.message, key) from None
    for setting, ours in (("vocab_size", tokenizer.vocab_size), ("pad_token_id", tokenizer.pad_id)):
        if config.get(setting, ours) != ours:
            raise BertlabError(
                f"{str(config_file)!r} sets {setting}={config[setting]} but its tokenizer has {ours}; bertlab "
                f"needs the model and its tokenizer to agree",
                key,
            )
    return HFModel(folder, config, FORMATS[model_type], weight_files, tokenizer)


def load_weights(
    backbone: nn.Module, head: nn.Module | None, state: dict[str, torch.Tensor], source: Path
) -> None:
    """Strictly load imported weights: the backbone always, the MLM head when the folder had one."""
    load_backbone(backbone, state, source)
    head_state = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    if head is not None and head_state:
        head.load_state_dict(head_state)


@dataclass(frozen=True)
class HFStart:
    """A run's Hugging Face source, and its weights when the run starts fresh (not a resume)."""

    model: HFModel
    state_dict: dict[str, torch.Tensor] | None

    def pretraining_config(self, tree: dict[str, Any]) -> dict[str, Any]:
        """The pretraining run's config tree as it records this start: the model's explicit architecture
        (with the weight-neutral keys the user set), its tokenizer (tokenizer.vocab_source), head tying, and
        the source as `hf_source`. The explicit architecture is what the checkpoints store: export and
        finetuning need neither this module nor the folder afterwards."""
        requested = {k: v for k, v in tree["architecture"].items() if v is not None and k != "path"}
        head = {**tree["mlm_head"]["module"], "tie_word_embeddings": self.model.tied}
        return {
            **tree,
            "architecture": {**self.model.architecture, **requested},
            "tokenizer": {**tree["tokenizer"], "vocab_source": str(self.model.folder)},
            "mlm_head": {**tree["mlm_head"], "module": head},
            "hf_source": self.model.record(),
        }

    def finetuning_config(self, tree: dict[str, Any]) -> dict[str, Any]:
        """The finetuning run's config tree as it records this start: the model's tokenizer."""
        return {**tree, "tokenizer": {**tree["tokenizer"], "vocab_source": str(self.model.folder)}}


def pretraining_source(architecture: dict[str, Any], is_resume: bool) -> HFStart | None:
    """For architecture=from_hf (an `architecture` section with a `path`): the validated model folder and,
    unless resuming, its weights; None for other runs. Reads only: every refusal leaves no trace."""
    if "path" not in architecture:
        return None
    model = read_hf_model(architecture["path"])
    return HFStart(model, None if is_resume else _state_dict(model, "architecture.path"))


def finetuning_source(hf_path: str | None, bertlab_run: str | None, is_resume: bool) -> HFStart | None:
    """For pretrained_experiment.hf_path: the model (its weights, architecture); None when the finetune
    starts from a bertlab run (or from scratch)."""
    if hf_path is None:
        return None
    if bertlab_run is not None:
        log.info(
            "pretrained_experiment.hf_path is set: the backbone comes from %s, not from a bertlab run",
            hf_path,
        )
    model = read_hf_model(hf_path, "pretrained_experiment.hf_path")
    return HFStart(model, None if is_resume else _state_dict(model, "pretrained_experiment.hf_path"))


def _state_dict(model: HFModel, key: str) -> dict[str, torch.Tensor]:
    try:
        return model.state_dict()
    except BertlabError as error:
        raise BertlabError(error.message, key) from None
