"""Label unlabelled text with a finetuned classifier, or embed it with any run's encoder, over inputs of
any size.

    bertlab-predict runs/finetuning/<name> --data new.jsonl --out predictions.parquet
    bertlab-predict runs/pretraining/<name> --data new.txt --embeddings --out vectors.npy
    bertlab-predict <Hugging Face or sentence-transformers folder> --data new.txt --embeddings --out v.npy
    python -m bertlab.predict RUN --data FILE [FILE ...] --out FILE [options]

Inputs are read by the readers a preparation uses (data/text_sources.py: .txt, .jsonl, .csv, the three
also .gz/.zst/.bz2, .parquet, `datasets` folders), one bounded chunk at a time: each chunk's texts are
tokenized together, sorted by length into batches (little padding) and put back in input order, so
memory does not grow with the input. A record is a non-blank line of a .txt or .jsonl file, or a row of
a table; a finetune on text pairs reads both texts of each record (--text-pair-field, default the run's).
Predictions: one row per record, `file`, `line` (line number, or row number for .csv/.parquet), then
`label` and one `p_<label>` column per label (single label), `labels` (those at or above the run's
threshold: a list, joined by the run's label separator in .csv) and `p_<label>` (multi-label), or `value`
in the target's units (regression), to .csv, .jsonl or .parquet (by the suffix of --out).
Embeddings (--embeddings, pooled by --pooling cls|mean, --normalize for unit length): .npy, one row per
record in input order (a skipped bad record gets a row of NaN, so rows stay aligned with the records), or
.parquet with `file`, `line` and `embedding`. A Hugging Face model folder embeds as it is, without a run;
a sentence-transformers folder (modules.json) sets the default pooling, normalisation and length to its
own recipe (sentence_embedding.py), and so does a pretraining run started from one.

Bad records (undecodable, broken JSON, empty) follow the run's data.on_bad_record unless --on-bad-record
says otherwise: `skip` counts them and reports them at the end, `error` stops at the first, naming it.
--out is claimed before any work (output_lock.claimed_output: a lock beside it), so of two predicts writing
one file the second is refused at once; an existing --out is refused unless --overwrite, and hidden files a
killed predict left beside it are removed. The output is written to a hidden file beside --out and renamed
when complete: an interrupted predict (an error, Ctrl-C, SIGTERM) leaves no output, and one in which every
record was skipped fails and writes none.
A run is rebuilt by trained_model.load_trained_model, a folder's encoder by hf_import; the device is the GPU when there is one, with
bf16 autocast where it supports it (--device, --precision).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertlab.atomic_write import replacing_path
from bertlab.data.chunk_encoding import MAX_DOCUMENT_CHARS, BadRecords, chunk_records, pieces
from bertlab.data.text_sources import read_chunks, resolve_inputs
from bertlab.errors import BertlabError
from bertlab.hf_import import read_hf_model
from bertlab.model.classification_head import MULTI_LABEL, POOLINGS, REGRESSION, SINGLE_LABEL, pool
from bertlab.output_lock import claimed_output
from bertlab.progress import StreamProgress
from bertlab.run_folder import CHECKPOINTS_DIR
from bertlab.sentence_embedding import sentence_embedding
from bertlab.tokenizer import TextTokenizer
from bertlab.trained_model import load_trained_model

log = logging.getLogger(__name__)

PREDICTION_FORMATS = (".csv", ".jsonl", ".parquet")
EMBEDDING_FORMATS = (".npy", ".parquet")
BAD_RECORD_MODES = ("skip", "error")
CHUNK_BYTES = 1 << 20  # text read (and sorted by length) at a time
ENCODE_BATCH = 1024  # texts per tokenizer call
PRECISIONS = ("auto", "32", "bf16")


@dataclass
class PredictSummary:
    """What a predict did, for the command's last lines."""

    out: Path
    records: int = 0
    written: int = 0  # rows of the output (a .npy keeps a NaN row for each skipped record)
    used: int = 0  # records predicted (not skipped)
    seconds: float = 0.0
    device: str = "cpu"
    precision: str = "32"
    bad: BadRecords = field(default_factory=BadRecords)


def output_kind(out: Path, embeddings: bool) -> str:
    """The output's format from its suffix; a suffix the mode cannot write is refused naming --out."""
    suffix = out.suffix.lower()
    allowed = EMBEDDING_FORMATS if embeddings else PREDICTION_FORMATS
    if suffix not in allowed:
        what = "embeddings" if embeddings else "predictions"
        raise BertlabError(
            f"{str(out)!r}: {what} are written as {' or '.join(allowed)} (chosen by the suffix)", "--out"
        )
    return suffix[1:]


def check_output_folder(out: Path) -> None:
    """--out goes into a folder that exists (predict creates no folders)."""
    if not out.parent.is_dir():
        raise BertlabError(f"folder {str(out.parent)!r} does not exist; create it first", "--out")


def choose_device(device: str, precision: str) -> tuple[torch.device, torch.dtype | None]:
    """The device (`auto`: the GPU when there is one) and the autocast dtype (None: fp32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BertlabError(f"unknown device {device!r}; use auto, cpu or cuda[:N]", "--device") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BertlabError("no CUDA GPU is visible; use --device cpu (or auto)", "--device")
    if precision not in PRECISIONS:
        raise BertlabError(f"must be one of {PRECISIONS}, got {precision!r}", "--precision")
    if precision == "auto":
        bf16 = resolved.type == "cuda" and torch.cuda.is_bf16_supported()
        return resolved, torch.bfloat16 if bf16 else None
    return resolved, torch.bfloat16 if precision == "bf16" else None


# -- writers: every one writes to a private path that replaces --out once complete ------------------------
class TableWriter:
    """Rows of named columns to .csv, .jsonl or .parquet."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = path, kind
        self.handle: IO[Any] | None = None
        self.parquet: Any = None
        self.csv: Any = None

    def write(self, columns: dict[str, Any]) -> None:
        names = list(columns)
        if self.kind == "parquet":
            import pyarrow as pa
            from pyarrow import parquet

            arrays = {}
            for name, values in columns.items():
                if isinstance(values, np.ndarray) and values.ndim == 2:
                    flat = pa.array(values.reshape(-1), type=pa.float32())
                    arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
                else:
                    arrays[name] = pa.array(values)
            table = pa.table(arrays)
            if self.parquet is None:
                self.parquet = parquet.ParquetWriter(self.path, table.schema)
            self.parquet.write_table(table)
            return
        if self.handle is None:
            self.handle = self.path.open("x", newline="" if self.kind == "csv" else None, encoding="utf-8")
            if self.kind == "csv":
                self.csv = csv.writer(self.handle)
                self.csv.writerow(names)
        values = [
            columns[name].tolist() if isinstance(columns[name], np.ndarray) else columns[name]
            for name in names
        ]
        if self.kind == "csv":
            self.csv.writerows(
                [v if not isinstance(v, float) else f"{v:.6f}" for v in row]
                for row in zip(*values, strict=True)
            )
        else:
            self.handle.write(
                "".join(
                    json.dumps(dict(zip(names, row, strict=True))) + "\n" for row in zip(*values, strict=True)
                )
            )

    def discard(self) -> None:
        """Release the open file without finishing it (the write is abandoned)."""
        for handle in (self.parquet, self.handle):
            if handle is not None:
                handle.close()

    def close(self, columns: list[str]) -> None:
        """Finish the file; an input without records still gets its header (csv) or schema (parquet)."""
        if self.kind == "parquet":
            if self.parquet is None:
                import pyarrow as pa
                from pyarrow import parquet

                parquet.write_table(
                    pa.table({name: pa.array([], pa.string()) for name in columns}), self.path
                )
            else:
                self.parquet.close()
            return
        if self.handle is None:
            self.handle = self.path.open("x", newline="", encoding="utf-8")
            if self.kind == "csv":
                csv.writer(self.handle).writerow(columns)
        self.handle.close()


class NpyWriter:
    """A float32 .npy matrix appended row block by row block; the header's row count is rewritten at the
    end (numpy leaves room in the header for the first axis to grow), so nothing is held in memory."""

    def __init__(self, path: Path, width: int) -> None:
        self.path, self.width, self.rows = path, width, 0
        self.handle = path.open("xb")
        self.header = self._header(0)
        self.handle.write(self.header)

    def _header(self, rows: int) -> bytes:
        import io

        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, self.width)}
        )
        return buffer.getvalue()

    def write(self, matrix: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(matrix, dtype="<f4").tobytes())
        self.rows += len(matrix)

    def discard(self) -> None:
        self.handle.close()

    def close(self, columns: list[str] | None = None) -> None:
        """Write the final row count into the header and close the file."""
        header = self._header(self.rows)
        if len(header) != len(self.header):  # more rows than the header has room for: never in practice
            raise RuntimeError(f"the .npy header grew from {len(self.header)} to {len(header)} bytes")
        self.handle.seek(0)
        self.handle.write(header)
        self.handle.close()


# -- the model side ------------------------------------------------------------------------------------
@dataclass
class Model:
    """What predicting needs of a model: a run's (trained_model) or a Hugging Face folder's encoder."""

    backbone: nn.Module
    head: nn.Module | None  # None: a folder's encoder, embeddings only
    tokenizer: TextTokenizer
    labels: list | None
    task: str  # "mlm" | "classification" | "encoder" (a folder)
    settings: dict[str, Any]  # the run's data section (text field, bad records); empty for a folder
    recipe: (
        dict[str, Any] | None
    )  # the sentence-transformers recipe it was released with (pooling, normalize)
    problem_type: str | None = None  # a finetune's (None: no head to predict with)

    @property
    def text_pair_field(self) -> str | None:
        """The field of a finetune's second text (None: it reads one text)."""
        return self.settings.get("text_pair_field")


def is_model_folder(path: Path) -> bool:
    """A Hugging Face model folder (config.json) rather than a bertlab run folder (checkpoints/)."""
    return (path / "config.json").is_file() and not (path / CHECKPOINTS_DIR).exists()


def open_model(path: str | Path, checkpoint: str | Path | None, pooling: str | None) -> Model:
    """A run folder's model at `checkpoint`, or a model folder's encoder with its sentence-transformers
    recipe (one bertlab cannot compute is refused when the pooling is left to it, saying how to choose one)."""
    path = Path(path)
    if not is_model_folder(path):
        run = load_trained_model(path, checkpoint)
        recipe = (run.saved.config.get("hf_source") or {}).get("sentence_embedding")
        data = run.saved.config.get("data") or {}
        return Model(
            run.backbone, run.head, run.tokenizer, run.labels, run.task, data, recipe, run.problem_type
        )
    if checkpoint is not None:
        raise BertlabError(
            f"{str(path)!r} is a model folder, which has no checkpoints; drop it", "--checkpoint"
        )
    folder = read_hf_model(path, "run")
    try:
        recipe = sentence_embedding(path, "run")
    except BertlabError:
        if pooling is None:  # the folder's pooling was asked for, and bertlab cannot compute it
            raise
        recipe = None
    positions = folder.architecture["max_position_embeddings"]
    tokenizer = folder.tokenizer
    tokenizer.max_length = min(recipe.max_length or positions, positions) if recipe else positions
    return Model(folder.encoder(), None, tokenizer, None, "encoder", {}, recipe.record() if recipe else None)


class Predictor:
    """Batches of token ids -> class probabilities or pooled embeddings, on the chosen device."""

    def __init__(
        self,
        model: Model,
        embeddings: bool,
        pooling: str,
        normalize: bool,
        device: torch.device,
        autocast: torch.dtype | None,
    ) -> None:
        self.model, self.embeddings, self.pooling, self.normalize = model, embeddings, pooling, normalize
        self.device, self.autocast = device, autocast
        self.backbone = model.backbone.to(device).eval()
        self.head = model.head.to(device).eval() if model.head is not None else None
        self.pad_id = model.tokenizer.pad_id

    @property
    def width(self) -> int:
        return self.backbone.hidden_size if self.embeddings else len(self.model.labels or [])

    @torch.inference_mode()
    def __call__(
        self, encoded: Sequence[Sequence[int]], segment_starts: Sequence[int] | None = None
    ) -> np.ndarray:
        """Outputs (float32, one row per sequence, in the given order) of one batch: embeddings, class
        probabilities, or (regression) the value. `segment_starts`: where each pair's second text starts."""
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
        ids = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
        positions = torch.arange(width, device=self.device)[None, :]
        lengths = torch.tensor([len(e) for e in encoded], device=self.device)
        mask = (positions < lengths[:, None]).long()
        types = None
        if segment_starts is not None:
            starts = torch.tensor(list(segment_starts), device=self.device)
            types = (positions >= starts[:, None]).long() * mask
        enabled = self.autocast is not None
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=enabled):
            hidden = self.backbone(ids, mask, token_type_ids=types)
            if self.embeddings:
                out = pool(hidden.float(), mask, self.pooling)
                if self.normalize:
                    out = F.normalize(out, dim=-1)
            else:
                out = self.head.predict(self.head(hidden, mask)).reshape(len(encoded), -1)
        return out.float().cpu().numpy()


def _sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def predict(
    run_dir: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    embeddings: bool = False,
    pooling: str | None = None,
    normalize: bool | None = None,
    text_field: str | None = None,
    text_pair_field: str | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    on_bad_record: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> PredictSummary:
    """Predict labels (or embeddings) for every record of `data` into `out`; see the module docstring.

    `pooling` and `normalize` left None follow the model's sentence-transformers recipe, else cls and no
    normalisation."""
    out = Path(out)
    kind = output_kind(out, embeddings)
    check_output_folder(out)
    if pooling is not None and pooling not in POOLINGS:
        raise BertlabError(f"must be one of {list(POOLINGS)}, got {pooling!r}", "--pooling")
    if batch_size < 1:
        raise BertlabError(f"must be a positive integer, got {batch_size}", "--batch-size")
    if on_bad_record is not None and on_bad_record not in BAD_RECORD_MODES:
        raise BertlabError(f"must be one of {BAD_RECORD_MODES}, got {on_bad_record!r}", "--on-bad-record")
    target, autocast = choose_device(device, precision)
    try:
        inputs = resolve_inputs([str(d) for d in data], "--data")
    except BertlabError as error:
        raise _renamed(error) from None
    with claimed_output(out, "--out", overwrite):
        return _predict(
            run_dir,
            inputs,
            out,
            kind,
            embeddings,
            pooling,
            normalize,
            text_field,
            text_pair_field,
            checkpoint,
            batch_size,
            target,
            autocast,
            on_bad_record,
            progress,
            chunk_bytes,
        )


def _predict(
    run_dir: str | Path,
    inputs: list[Any],
    out: Path,
    kind: str,
    embeddings: bool,
    pooling: str | None,
    normalize: bool | None,
    text_field: str | None,
    text_pair_field: str | None,
    checkpoint: str | Path | None,
    batch_size: int,
    target: torch.device,
    autocast: torch.dtype | None,
    on_bad_record: str | None,
    progress: bool,
    chunk_bytes: int,
) -> PredictSummary:
    """The work of `predict`, once --out is held for it."""
    if not embeddings and is_model_folder(Path(run_dir)):
        raise BertlabError(
            f"{str(run_dir)!r} is a model folder: it has no labels to predict. Add --embeddings for its "
            f"pooled vectors, or finetune it (pretrained_experiment.hf_path={run_dir}) and give that run",
            "run",
        )
    run = open_model(run_dir, checkpoint, pooling if embeddings else "cls")
    if not embeddings and run.task != "classification":
        raise BertlabError(
            f"{str(run_dir)!r} is a pretraining run: it has no labels to predict. Add --embeddings for its "
            f"pooled vectors, or give a finetuning run (runs/finetuning/<name>)",
            "run",
        )
    recipe = run.recipe or {}
    if embeddings and pooling is None and recipe:
        log.info(
            "Embeddings: %s pooling%s, the sentence-transformers recipe of %s",
            recipe["pooling"],
            ", unit length" if recipe["normalize"] and normalize is None else "",
            run_dir,
        )
    pooling = pooling or recipe.get("pooling") or "cls"
    normalize = bool(recipe.get("normalize")) if normalize is None else normalize
    data_cfg = run.settings
    text_field = (
        text_field or data_cfg.get("text_field") or (data_cfg.get("source") or {}).get("text_field") or "text"
    )
    text_pair_field = text_pair_field or run.text_pair_field
    if text_pair_field is not None and any(item.format == "txt" for item in inputs):
        raise BertlabError(
            f"{str(run_dir)!r} reads text pairs (the second text from field {text_pair_field!r}): give .jsonl, "
            f".csv or .parquet records with both fields, not .txt",
            "--data",
        )
    fields = text_field if text_pair_field is None else (text_field, text_pair_field)
    on_bad_record = on_bad_record or data_cfg.get("on_bad_record") or "skip"
    if on_bad_record not in BAD_RECORD_MODES:
        raise BertlabError(f"must be one of {BAD_RECORD_MODES}, got {on_bad_record!r}", "--on-bad-record")
    run.tokenizer.truncation = True  # a long text is cut to max_length, as in training, never refused
    predictor = Predictor(run, embeddings, pooling, normalize, target, autocast)
    summary = PredictSummary(out, device=str(target), precision="bf16" if autocast else "32")
    sizes = [item.size() for item in inputs]
    bar = StreamProgress(
        "Predicting", None if None in sizes else sum(s or 0 for s in sizes), "texts", enabled=progress
    )
    start = time.monotonic()
    labels = [str(label) for label in run.labels or []]
    decision = Decision(
        run.problem_type or SINGLE_LABEL,
        labels,
        float(run.head.threshold) if run.problem_type == MULTI_LABEL else 0.5,
        data_cfg.get("label_separator", ",") if kind == "csv" else None,
    )
    columns = ["file", "line", "embedding"] if embeddings else ["file", "line", *decision.columns]
    try:
        with replacing_path(out) as temporary:
            writer: Any = (
                NpyWriter(temporary, predictor.width) if kind == "npy" else TableWriter(temporary, kind)
            )
            try:
                for chunk in _renamed_errors(read_chunks(inputs, "predict", fields, False, chunk_bytes)):
                    before = summary.bad.total()
                    records = chunk_records(chunk, fields, summary.bad)
                    if on_bad_record == "error" and summary.bad.total() > before:
                        raise BertlabError(
                            f"{summary.bad.describe_first()}; or use --on-bad-record skip to skip and count "
                            f"them",
                            "--data",
                        )
                    outputs, kept = _predict_chunk(predictor, run, records, batch_size)
                    if kind == "npy":
                        writer.write(outputs)
                        summary.written += len(records)
                    elif kept:
                        writer.write(_rows(chunk.source, records, outputs, kept, decision, embeddings))
                        summary.written += len(kept)
                    summary.records += len(records)
                    summary.used += len(kept)
                    bar.update(chunk.raw_bytes, len(records))
                if not summary.used:
                    raise nothing_predicted(summary, text_field)
            except BaseException:
                writer.discard()  # the private file is removed by replacing_path
                raise
            writer.close(columns)
    finally:
        bar.close()
    summary.seconds = time.monotonic() - start
    return summary


def nothing_predicted(summary: PredictSummary, text_field: str) -> BertlabError:
    """Every record was skipped (or there was none): an output of headers only would pass for a result."""
    if not summary.records:
        return BertlabError(
            "the inputs hold no record (no non-blank line or row); nothing was written", "--data"
        )
    kinds = {kind for per_file in summary.bad.counts.values() for kind in per_file}
    message = (
        f"all {summary.records} records were skipped, so nothing was written; first: "
        f"{summary.bad.describe_first()}"
    )
    if kinds == {"no_text_field"}:
        return BertlabError(
            f"{message}. Give the field that holds the text with --text-field", "--text-field"
        )
    return BertlabError(message, "--data")


def _predict_chunk(
    predictor: Predictor, run: Model, records: list[tuple[int, str | None]], batch_size: int
) -> tuple[np.ndarray, list[int]]:
    """Outputs of a chunk's records in their order (NaN for bad ones), and the indices of the good ones."""
    kept = [i for i, (_, text) in enumerate(records) if text is not None]
    outputs = np.full((len(records), predictor.width), np.nan, dtype=np.float32)
    if kept:
        # a record is cut to max_length tokens anyway: only its start goes to the tokenizer, whose memory
        # grows with what it encodes at once
        texts = [records[i][1] for i in kept]
        encoded: list[list[int]] = []
        starts: list[int] | None = None
        for start in range(0, len(texts), ENCODE_BATCH):  # in slices: the tokenizer's Encodings are large
            block = texts[start : start + ENCODE_BATCH]
            if isinstance(block[0], tuple):
                ids, segment = run.tokenizer.encode_pairs(
                    [_start(a) for a, _ in block], [_start(b) for _, b in block]
                )
                starts = (starts or []) + segment
            else:
                ids = run.tokenizer.encode_sequences([_start(text) for text in block])
            encoded += ids
        positions = np.asarray(kept)
        for batch in _sorted_batches([len(ids) for ids in encoded], batch_size):
            outputs[positions[batch]] = predictor(
                [encoded[i] for i in batch], None if starts is None else [starts[i] for i in batch]
            )
    return outputs, kept


def _start(text: str) -> str:
    return text if len(text) <= MAX_DOCUMENT_CHARS else pieces(text)[0]


@dataclass(frozen=True)
class Decision:
    """What a finetune's outputs say, as columns: the label and `p_<label>` per label (single label); the
    labels at or above the threshold and `p_<label>` (multi-label: a list, or in a .csv the labels joined
    by `separator`); the value in the target's units (regression)."""

    problem_type: str
    labels: list[str]
    threshold: float = 0.5
    separator: str | None = None  # multi-label into .csv: join the labels

    @property
    def columns(self) -> list[str]:
        if self.problem_type == REGRESSION:
            return ["value"]
        return ["labels" if self.problem_type == MULTI_LABEL else "label", *[f"p_{x}" for x in self.labels]]

    def values(self, rows: np.ndarray) -> dict[str, Any]:
        if self.problem_type == REGRESSION:
            return {"value": rows[:, 0].astype(np.float64)}
        if self.problem_type == MULTI_LABEL:
            chosen = [[self.labels[j] for j in np.flatnonzero(row >= self.threshold)] for row in rows]
            decided: Any = chosen if self.separator is None else [self.separator.join(c) for c in chosen]
            values = {"labels": decided}
        else:
            values = {"label": [self.labels[i] for i in rows.argmax(1)]}
        values.update({f"p_{label}": rows[:, j].astype(np.float64) for j, label in enumerate(self.labels)})
        return values


def _rows(
    source: str,
    records: list[tuple[int, Any]],
    outputs: np.ndarray,
    kept: list[int],
    decision: Decision,
    embeddings: bool,
) -> dict[str, Any]:
    values: dict[str, Any] = {"file": [source] * len(kept), "line": [records[i][0] for i in kept]}
    rows = outputs[kept]
    if embeddings:
        values["embedding"] = rows
    else:
        values.update(decision.values(rows))
    return values


def _renamed(error: BertlabError) -> BertlabError:
    """Errors of the shared readers name their config keys; here the options that set them."""
    key = error.key or ""
    if key.endswith("text_field"):
        return BertlabError(error.message.replace("data.source.text_field", "--text-field"), "--text-field")
    if key.startswith("source."):
        return BertlabError(error.message, "--data")
    return error


def _renamed_errors(chunks: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from chunks
    except BertlabError as error:
        raise _renamed(error) from None


def main(argv: list[str] | None = None) -> int:
    """Command line; prints one `Error: ...` line and exits 2 on bad input, leaving no output."""
    parser = argparse.ArgumentParser(
        prog="bertlab-predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run",
        type=Path,
        help="a finetuning run (labels), or any run or Hugging Face model folder (--embeddings)",
    )
    parser.add_argument("--data", nargs="+", required=True, help="files, folders or globs of text")
    parser.add_argument("--out", type=Path, required=True, help=".csv/.jsonl/.parquet, or .npy/.parquet")
    parser.add_argument("--embeddings", action="store_true", help="pooled vectors instead of labels")
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="embeddings: cls or mean (default: a sentence-transformers model's own, else cls)",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embeddings: scale to unit length (default: as a sentence-transformers model does, else not)",
    )
    parser.add_argument("--text-field", default=None, help="jsonl/csv/parquet: default the run's, else text")
    parser.add_argument(
        "--text-pair-field",
        default=None,
        help="the second text of a pair (default: the run's data.text_pair_field)",
    )
    parser.add_argument("--checkpoint", default=None, help="best (default, else last), last, or a path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="auto: bf16 on a GPU that has it"
    )
    parser.add_argument("--on-bad-record", choices=BAD_RECORD_MODES, default=None, help="default: the run's")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        summary = predict(
            args.run,
            args.data,
            args.out,
            embeddings=args.embeddings,
            pooling=args.pooling,
            normalize=args.normalize,
            text_field=args.text_field,
            text_pair_field=args.text_pair_field,
            checkpoint=args.checkpoint,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            on_bad_record=args.on_bad_record,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except BertlabError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    bad = summary.bad.total()
    if bad:
        counts = "; ".join(
            f"{source}: {', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}"
            for source, kinds in summary.bad.counts.items()
        )
        print(f"Skipped {bad} bad records ({counts}); first: {summary.bad.describe_first()}", file=sys.stderr)
    rate = summary.records / max(summary.seconds, 1e-9)
    print(
        f"Wrote {summary.written} rows for {summary.records} records to {summary.out} in {summary.seconds:.1f} s "
        f"({rate:,.0f} texts/s, {summary.device}, {'bf16' if summary.precision == 'bf16' else 'fp32'})"
    )
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the private output file is removed and --out is left untouched."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
