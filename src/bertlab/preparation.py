"""Data preparation as its own run: a corpus -> a prepared-dataset folder that pretraining reads with
`data.prepared=<folder>`.

The folder is the run folder (runs/preparation/<name>/): the composed config (.hydra/), run.log,
the tokenizer file, the token shards and manifest.json (written last: counts per split, bad records,
fingerprints of the sources and the tokenizer). A relaunch of an interrupted preparation continues it
with the same tokenizer; a finished folder is never overwritten.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from bertlab.config.instantiate import instantiate_section
from bertlab.data.shard_store import clear_stores
from bertlab.data.streaming_preparation import read_state
from bertlab.errors import BertlabError
from bertlab.run_folder import PREPARATION, TOKENIZER_FILE, check_run_name, refuse_finished_preparation
from bertlab.training.distributed import is_main_process

log = logging.getLogger(__name__)
KIND = PREPARATION


def prepare(cfg: DictConfig, run_dir: Path, sweep: str | None = None) -> None:
    """Prepare the corpus of `cfg.data` with the tokenizer of `cfg.tokenizer` into `run_dir`."""
    if cfg.experiment.kind != KIND:
        raise BertlabError(
            f"must be {KIND!r} for a preparation, got {cfg.experiment.kind!r}", "experiment.kind"
        )
    if not is_main_process():
        return  # nothing to share out: a preparation uses its worker processes, not DDP
    check_run_name(cfg.experiment.name)
    refuse_finished_preparation(run_dir)
    tokenizer = instantiate_section(cfg, "tokenizer")
    datamodule = instantiate_section(cfg, "data")
    if datamodule.prepared is not None:
        raise BertlabError(
            "a preparation writes its own folder; data.prepared is for the pretraining run that reads it",
            "data.prepared",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_file = run_dir / TOKENIZER_FILE
    state = read_state(run_dir)
    if (
        tokenizer_file.is_file()
        and state.get("splits_fingerprint") == datamodule.splits_fingerprint()
        and state.get("tokenizer_settings") == tokenizer.settings_fingerprint()
    ):
        # An interrupted preparation of the same inputs: its shards were encoded with this vocabulary.
        log.info("Continuing with the tokenizer of the interrupted preparation, %s", tokenizer_file)
        tokenizer.fit((), cache_file=tokenizer_file)  # its vocabulary, with this run's tokenizer settings
    else:
        clear_stores(run_dir)
        try:
            tokenizer.fit(
                datamodule.tokenizer_sample if tokenizer.needs_corpus else (),
                cache_file=datamodule.tokenizer_cache_file(tokenizer),
            )
        except BertlabError as error:  # raised while reading the text: named by its data.* key
            raise error.in_section("data") from None
        tokenizer.save(tokenizer_file)
    try:
        manifest = datamodule.write_prepared(tokenizer, run_dir)
    except BertlabError as error:
        raise error.in_section("data") from None
    counts = {split: manifest["splits"][split]["tokens"] for split in manifest["splits"]}
    log.info("Prepared dataset in %s: tokens per split %s", run_dir, json.dumps(counts))
    log.info("Pretrain on it with: python launch.py +experiment=pretrain data.prepared=%s", run_dir)
