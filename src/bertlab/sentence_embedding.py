"""The sentence-embedding recipe of a sentence-transformers folder: how its encoder's output becomes one
vector per text, so that `bertlab-predict <folder> --embeddings` gives the vectors the model was released
with.

A sentence-transformers folder is a Hugging Face model folder plus `modules.json`, which lists the modules
applied in turn: the Transformer (the encoder, in the folder itself), a Pooling module (its
`<path>/config.json` says cls, mean, max, ...) and optionally Normalize (unit length). bertlab pools by the
first token or by the mean over real tokens, so a recipe of other modules or poolings is refused, naming the
file and how to go on. `sentence_bert_config.json` gives the length the model reads (`max_seq_length`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bertlab.errors import BertlabError

MODULES_FILE = "modules.json"
SETTINGS_FILE = "sentence_bert_config.json"
# 1_Pooling/config.json keys and the pooling of bertlab each stands for (None: bertlab has no such pooling).
POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": None,
    "pooling_mode_mean_sqrt_len_tokens": None,
    "pooling_mode_weightedmean_tokens": None,
    "pooling_mode_lasttoken": None,
}
MODULE_TYPES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class SentenceEmbedding:
    """Pooling (`cls` or `mean`), unit length or not, and the longest input in tokens (None: not said)."""

    pooling: str
    normalize: bool
    max_length: int | None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def is_sentence_transformers_folder(folder: str | Path) -> bool:
    return (Path(folder) / MODULES_FILE).is_file()


def _read_json(path: Path, key: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BertlabError(
            f"{str(path)!r} cannot be read as JSON ({type(error).__name__}); copy the model folder again", key
        ) from None


def sentence_embedding(folder: str | Path, key: str = "run") -> SentenceEmbedding | None:
    """The folder's recipe; None for a folder without modules.json (a plain Hugging Face model)."""
    folder = Path(folder)
    if not is_sentence_transformers_folder(folder):
        return None
    modules_file = folder / MODULES_FILE
    modules = _read_json(modules_file, key)
    kinds = {str(module.get("type", "")).rsplit(".", 1)[-1]: module for module in modules}
    unknown = sorted(set(kinds) - set(MODULE_TYPES))
    if unknown or "Pooling" not in kinds:
        raise BertlabError(
            f"{str(modules_file)!r} lists the modules {sorted(kinds)}; bertlab computes a Transformer followed "
            f"by a Pooling (cls or mean) and an optional Normalize module only. Pass --pooling cls or --pooling "
            f"mean to pool the encoder's output in one of bertlab's ways (not the folder's recipe)",
            key,
        )
    pooling_file = folder / kinds["Pooling"].get("path", "1_Pooling") / "config.json"
    if not pooling_file.is_file():
        raise BertlabError(
            f"{str(pooling_file)!r} does not exist ({MODULES_FILE} lists a Pooling module there); copy the "
            f"whole sentence-transformers folder, or pass --pooling cls or --pooling mean",
            key,
        )
    settings = _read_json(pooling_file, key)
    chosen = sorted(mode for mode in POOLING_MODES if settings.get(mode))
    supported = [POOLING_MODES[mode] for mode in chosen if POOLING_MODES[mode]]
    if len(chosen) != 1 or not supported:
        raise BertlabError(
            f"{str(pooling_file)!r} pools with {chosen or 'no mode'}; bertlab pools by the first token "
            f"(pooling_mode_cls_token) or the mean over real tokens (pooling_mode_mean_tokens) only. Pass "
            f"--pooling cls or --pooling mean to pool in one of these ways (the vectors then differ from the "
            f"folder's recipe)",
            key,
        )
    max_length = None
    if (folder / SETTINGS_FILE).is_file():
        max_length = _read_json(folder / SETTINGS_FILE, key).get("max_seq_length")
    return SentenceEmbedding(supported[0], "Normalize" in kinds, max_length)
