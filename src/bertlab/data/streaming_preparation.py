"""Text -> token-id shards, streaming: bounded memory, every core, restartable, the same bytes whatever
the number of processes.

The main process reads bounded chunks (bertlab.data.text_sources) and hands them, in order, to worker
processes that parse, split and encode them (bertlab.data.chunk_encoding); at most a few chunks per
worker are in flight, so memory does not grow with the corpus. Results are written in input order into
shards (bertlab.data.shard_store); a shard is closed after `shard_tokens` tokens and published
atomically with a record of how many chunks it covers, so a relaunch after a kill skips those chunks and
ends with the same bytes as an uninterrupted preparation. The manifest is written last.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import multiprocessing
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bertlab.atomic_write import atomic_write_text
from bertlab.data.chunk_encoding import (
    BadRecords,
    EncodedChunk,
    EncodingSettings,
    encode_chunk,
    init_worker,
)
from bertlab.data.shard_store import (
    FORMAT_VERSION,
    MANIFEST,
    SPLITS,
    ShardWriter,
    clear_stores,
    finished_records,
    id_dtype,
)
from bertlab.data.text_sources import Chunk
from bertlab.errors import BertlabError
from bertlab.progress import StreamProgress
from bertlab.run_folder import HYDRA_CONFIG

log = logging.getLogger(__name__)
STATE = "preparation.json"  # what a partial folder is being prepared from (checked by a relaunch)


def read_state(folder: Path) -> dict[str, Any]:
    """What the preparation in `folder` was started with ({} when none was)."""
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.is_file() else {}


IN_FLIGHT_PER_PROCESS = 2


def resolve_num_proc(num_proc: int | str) -> int:
    """`auto`: every core this process may use."""
    if str(num_proc) == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        value = int(num_proc)
    except ValueError:
        value = 0
    if value < 1:
        raise BertlabError(f"must be a positive number of processes or auto, got {num_proc!r}", "num_proc")
    return value


@dataclass
class PreparationPlan:
    """What is prepared and how; its fingerprint keys the cache and guards a relaunch."""

    fingerprint: str
    chunks: Callable[[], Iterator[Chunk]]  # every chunk of every split, in order
    total_bytes: int | None  # text bytes of all inputs, when known (for the ETA)
    settings: EncodingSettings
    shard_tokens: int
    on_bad_record: str
    description: dict[str, Any]  # sources, tokenizer, settings: copied into the manifest
    given_splits: frozenset[str] = frozenset({"train"})  # splits read from files of their own


@contextmanager
def folder_lock(folder: Path) -> Iterator[bool]:
    """One preparation per folder at a time (two runs preparing the same cached data, for instance).

    Yields whether this process created the lock file: a failed preparation removes it again (while
    holding it), and a process that then gets the lock of a removed file takes the new one instead.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = lock_file(folder)
    while True:
        created = not path.exists()
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("Waiting for another process that is preparing %s", folder)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(handle.fileno()).st_ino:
                yield created
                return


def lock_file(folder: Path) -> Path:
    """Beside the folder, and not the run-folder lock of a preparation run (run_folder.lock_file_of)."""
    return folder.parent / f".{folder.name}.preparing.lock"


def first_missing(path: Path) -> Path | None:
    """The highest of `path` and its ancestors that does not exist yet: what writing `path` creates first
    (None when `path` exists)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def remove_created(path: Path, top: Path | None) -> None:
    """Remove `path`, which this process created, then its ancestors up to `top` while they are empty:
    what a failed preparation wrote where nothing was before (anything another process wrote stays)."""
    path = Path(path).absolute()
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    if top is None:
        return
    folder = path.parent
    while folder.is_relative_to(top) and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _encoded(chunks: Iterable[Chunk], num_proc: int, settings: EncodingSettings) -> Iterator[EncodedChunk]:
    """Encoded chunks in input order; num_proc worker processes, a few chunks each in flight."""
    if num_proc == 1:  # in this process; `tokenizers` uses its own threads on every core
        init_worker(settings, single_threaded=False)
        yield from map(encode_chunk, chunks)
        return
    # fork: a spawned worker would import the launching script again (Hydra, Lightning: seconds each).
    # TOKENIZERS_PARALLELISM is set across the fork so `tokenizers` in the children starts single-threaded
    # instead of warning that it was forked after using its thread pool.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(
            num_proc, initializer=start_worker, initargs=(settings,)
        )
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM")
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    try:
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(encode_chunk, (chunk,)))
            if len(pending) >= num_proc * IN_FLIGHT_PER_PROCESS:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    except BaseException:  # an error, Ctrl-C, or the consumer stopped early
        pool.terminate()
        pool.join()
        raise
    pool.close()  # the workers take their sentinel and exit
    pool.join()


def start_worker(settings: EncodingSettings) -> None:
    """A pool worker: default signal handling, then the tokenizer.

    A forked worker inherits its parent's Python signal handlers: a training run's graceful-stop handler,
    or submitit's, which ignores SIGTERM. `Pool.terminate()` stops workers with SIGTERM, so with an
    inherited handler it waited forever. Ctrl-C is the parent's to handle; it then terminates the pool.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init_worker(settings, single_threaded=True)


def _raise_bad(encoded: EncodedChunk) -> None:
    raise BertlabError(
        f"{encoded.bad.describe_first()}; or set data.on_bad_record=skip to skip and count bad records",
        f"source.{encoded.split}",
    )


def prepare_folder(plan: PreparationPlan, folder: Path, num_proc: int) -> dict[str, Any]:
    """Prepare into `folder` (continuing a preparation interrupted there); returns the manifest.

    Input that stops the preparation (BertlabError) leaves no trace where there was none: a folder it
    created goes, and so does its lock file; the finished shards of an earlier, interrupted preparation
    in the folder stay for the relaunch.
    """
    top = first_missing(folder)
    with folder_lock(folder) as created_lock:
        if (folder / MANIFEST).is_file():
            log.info("Reusing prepared datasets in %s", folder)
            return json.loads((folder / MANIFEST).read_text())
        try:
            return _prepare(plan, folder, num_proc)
        except BertlabError:
            if top is not None:
                remove_created(folder, None)
            if created_lock:
                remove_created(lock_file(folder), top)
            raise


def _prepare(plan: PreparationPlan, folder: Path, num_proc: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    state = {"fingerprint": plan.fingerprint, "format": FORMAT_VERSION, **plan.description}
    state_file = folder / STATE
    if not state_file.is_file() or json.loads(state_file.read_text()) != state:
        if state_file.is_file():
            log.warning("%s held a preparation of other inputs or settings: starting it over", folder)
        clear_stores(folder)
        atomic_write_text(state_file, json.dumps(state))
    records = finished_records(folder)
    skip = records[-1]["chunks_end"] if records else 0
    if records:
        log.info("Continuing the preparation in %s after its %d finished shard(s)", folder, len(records))
    else:
        log.info("Preparing datasets into %s with %d process(es)", folder, num_proc)
    progress = StreamProgress("Preparing", plan.total_bytes, "tokens", 1e6, "M ")
    started = time.monotonic()
    chunks_done = 0
    bad = BadRecords()
    for record in records:
        bad.merge(BadRecords.from_dict(record["bad_records"]))

    def remaining() -> Iterator[Chunk]:
        nonlocal chunks_done
        for chunk in plan.chunks():
            chunks_done += 1
            if chunks_done <= skip:
                progress.update(chunk.raw_bytes)
                continue
            yield chunk

    writer: ShardWriter | None = None
    shard_bad = BadRecords()
    chunks_written = skip
    try:
        for encoded in _encoded(remaining(), num_proc, plan.settings):
            chunks_written += 1
            if encoded.bad.counts:
                if plan.on_bad_record == "error":
                    _raise_bad(encoded)
                shard_bad.merge(encoded.bad)
            writer = writer or ShardWriter(folder, len(records))
            for split in SPLITS:
                writer.append(split, encoded.ids[split], encoded.lengths[split])
            progress.update(encoded.raw_bytes, encoded.tokens)
            if writer.tokens >= plan.shard_tokens:
                records.append(
                    writer.publish({"chunks_end": chunks_written, "bad_records": shard_bad.as_dict()})
                )
                bad.merge(shard_bad)
                writer, shard_bad = None, BadRecords()
        if writer is not None or not records:
            writer = writer or ShardWriter(folder, len(records))
            records.append(writer.publish({"chunks_end": chunks_written, "bad_records": shard_bad.as_dict()}))
            bad.merge(shard_bad)
            writer = None
    finally:
        progress.close()
        if writer is not None:
            writer.discard()
    manifest = _manifest(plan, records, bad)
    _check_splits(plan, manifest)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    seconds = time.monotonic() - started
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    log.info(
        "Prepared %s tokens in %d shard(s) in %.1f s (%s); %d bad record(s) skipped",
        f"{tokens:,}",
        len(records),
        seconds,
        progress.line(),
        bad.total(),
    )
    for source, firsts in bad.first.items():
        log.warning("%s: %s skipped; first: %s", source, bad.counts[source], "; ".join(firsts))
    return manifest


def _check_splits(plan: PreparationPlan, manifest: dict[str, Any]) -> None:
    """A split that was to get text but came out empty stops the preparation now, saying why: training
    on the folder would be refused anyway."""
    for split in ("val", "test"):
        if manifest["splits"][split]["tokens"]:
            continue
        if split in plan.given_splits:
            raise BertlabError(
                f"the {split} files hold no text that could be read; check them (or leave data.source.{split} "
                f"unset to split {split} text off the training files)",
                f"source.{split}",
            )
        ratio = getattr(plan.settings.rule, f"{split}_ratio")
        if ratio == 0:
            continue  # left out on purpose
        documents = sum(manifest["splits"][s]["documents"] for s in SPLITS)
        if documents == 1:
            advice = (
                "the training text is a single document, which a ratio cannot split (documents go to a "
                f"split whole); give {split} text of its own with data.source.{split}=<file>"
            )
        else:
            advice = (
                f"data.{split}_ratio={ratio} of {documents:,} documents gave none (documents go to a split whole, by "
                f"a hash of their text); give {split} text of its own with data.source.{split}=<file>, or "
                f"raise data.{split}_ratio"
            )
        raise BertlabError(f"the {split} split came out empty: {advice}", f"{split}_ratio")


def _manifest(plan: PreparationPlan, records: list[dict[str, Any]], bad: BadRecords) -> dict[str, Any]:
    splits = {}
    for split in SPLITS:
        shard_tokens = [r["splits"][split]["tokens"] for r in records]
        shard_documents = [r["splits"][split]["documents"] for r in records]
        splits[split] = {
            "documents": sum(shard_documents),
            "tokens": sum(shard_tokens),
            "shard_tokens": shard_tokens,
            "shard_documents": shard_documents,
            "shard_crc32": [r["crc32"][split] for r in records]
            if all("crc32" in r for r in records)
            else None,
        }
    return {
        "format": FORMAT_VERSION,
        "fingerprint": plan.fingerprint,
        "dtype": plan.settings.dtype,
        "shards": len(records),
        "splits": splits,
        "bad_records": {"total": bad.total(), "per_file": bad.as_dict()},
        **plan.description,
    }


def rebuild_advice(folder: Path) -> str:
    """How to prepare `folder` again: the command of its preparation run (from the overrides Hydra saved
    in it), into a new name; a folder without them is a cache, which is simply removed."""
    overrides = Path(folder) / HYDRA_CONFIG.parent / "overrides.yaml"
    if not overrides.is_file():
        return f"remove {str(folder)!r} and it is prepared again on the next run"
    command = " ".join(shlex.quote(str(item)) for item in yaml.safe_load(overrides.read_text()) or [])
    return (
        f"prepare it again with `python launch.py {command}` after moving the damaged folder away (or "
        f"with another experiment.name), then point data.prepared at the new folder"
    )


def wait_for_manifest(folder: Path, report_every_s: float = 60.0, poll_s: float = 1.0) -> None:
    """For processes beside the main one: wait until it has finished preparing `folder`, saying so."""
    start = last = time.monotonic()
    while not (folder / MANIFEST).is_file():
        now = time.monotonic()
        if now - last >= report_every_s:
            last = now
            done = len(list((folder / "shards").glob("*.json"))) if (folder / "shards").is_dir() else 0
            log.info(
                "Waiting %.0f s for the main process to finish preparing %s (%d shard(s) so far)",
                now - start,
                folder,
                done,
            )
        time.sleep(poll_s)


def encoding_settings(tokenizer: Any, text_field: str, paragraphs: bool, rule: Any) -> EncodingSettings:
    return EncodingSettings(
        serialized_tokenizer=tokenizer.backend.to_str(),
        sep_id=tokenizer.sep_id,
        dtype=id_dtype(tokenizer.vocab_size),
        text_field=text_field,
        paragraphs=paragraphs,
        rule=rule,
    )
