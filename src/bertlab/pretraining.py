"""Masked-language-model pretraining: from a composed config to a finished run folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from bertlab.building import (
    RUN_INFO,
    TOKENIZER_FILE,
    apply_resume,
    build,
    fit_and_test,
    make_loggers,
    make_trainer,
    maybe_compile,
    run_tokenizer,
    setup_run,
    write_run_info,
)
from bertlab.config.checks import check_pretraining
from bertlab.errors import BertlabError
from bertlab.hf_import import load_weights, pretraining_source
from bertlab.tasks.mlm import EVAL_COLUMNS, TRAIN_COLUMNS, MaskedLanguageModel
from bertlab.training.distributed import is_main_process
from bertlab.training.mfu import MFUMonitor, mlm_training_flops_per_token, resolve_peak_flops

log = logging.getLogger(__name__)


def _data_errors(texts: Iterator[str]) -> Iterator[str]:
    """Errors found reading the text while the tokenizer trains are named by their data.* key."""
    try:
        yield from texts
    except BertlabError as error:
        raise error.in_section("data") from None


def pretrain(cfg: DictConfig, run_dir: Path, sweep: str | None = None) -> float | None:
    """Pretrain per `cfg` into `run_dir`; returns the best monitored validation value (for sweepers)."""
    hf = pretraining_source(cfg)  # architecture=from_hf: cfg now holds the imported model's settings
    check_pretraining(cfg)
    training = cfg.training

    # Everything that validates input runs before any file is written.
    tokenizer = build(cfg, "tokenizer")
    masking = build(cfg, "mlm_head.masking")
    datamodule = build(
        cfg, "data", masking=masking, batch_size=training.batch_size, num_workers=training.num_workers
    )
    with torch.device("meta"):
        build(cfg, "architecture", vocab_size=tokenizer.vocab_size_limit)
    setup = setup_run(cfg, run_dir, sweep)
    try:
        peak_flops = resolve_peak_flops(training.peak_tflops, setup.accelerator, setup.precision)
    except BertlabError as error:
        raise error.in_section("training") from None
    # The text is read only when something needs it, and streamed: the tokenizer trains on a bounded
    # sample, the preparation writes memory-mapped shards (bertlab.data.preparation). A prepared folder
    # (data.prepared) brings its own tokenizer and is only read.
    L.seed_everything(cfg.experiment.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    source_dir = setup.checkpoint_path.parent.parent if setup.checkpoint_path else None
    if source_dir is None and datamodule.prepared and (datamodule.prepared / TOKENIZER_FILE).is_file():
        source_dir = datamodule.prepared  # a +experiment=prepare folder brings its tokenizer
    tokenizer = run_tokenizer(
        tokenizer,
        run_dir,
        source_dir,
        fit=lambda fresh: fresh.fit(
            _data_errors(datamodule.tokenizer_sample()) if fresh.needs_corpus else (),
            cache_file=datamodule.tokenizer_cache_file(fresh),
        ),
    )
    try:
        prepared_dir = datamodule.prepare(tokenizer, main=is_main_process())
        datamodule.setup("fit")
    except BertlabError as error:
        raise error.in_section("data") from None

    backbone = build(cfg, "architecture", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
    head = build(cfg, "mlm_head.module", hidden_size=backbone.hidden_size, vocab_size=tokenizer.vocab_size)
    if hf is not None and hf.state_dict is not None:
        head.tie_to(backbone.word_embeddings)
        load_weights(backbone, head, hf.state_dict, hf.model.folder)
    model = MaskedLanguageModel(
        backbone, head, setup.optimizer, setup.scheduler, run_config=OmegaConf.to_container(cfg, resolve=True)
    )
    resumed_from = str(setup.checkpoint_path) if setup.checkpoint_path else None
    fit_checkpoint, step = apply_resume(cfg, setup, model, datamodule)
    # MFU only where the device's peak is known: no column at all otherwise (not a guess).
    train_columns = [*TRAIN_COLUMNS, "mfu"] if peak_flops else TRAIN_COLUMNS
    loggers = make_loggers(cfg, run_dir, train_columns, EVAL_COLUMNS, setup, step)
    maybe_compile(model, training.compile)
    trainer, _ = make_trainer(cfg, run_dir, setup, loggers, datamodule, step)
    flops_per_token = mlm_training_flops_per_token(
        backbone.hidden_size,
        backbone.num_layers,
        cfg.architecture.intermediate_size,
        tokenizer.max_length,
        tokenizer.vocab_size,
        datamodule.masker.num_predictions,
        gated=cfg.architecture.activation != "gelu",
    )
    if peak_flops:
        trainer.callbacks.append(MFUMonitor(flops_per_token, peak_flops, run_dir / RUN_INFO))
    write_run_info(
        run_dir,
        trainer,
        cfg,
        {
            "task": "mlm",
            "accelerator": setup.accelerator,
            "precision": setup.precision,
            "prepared_data": str(prepared_dir),
            "vocab_size": tokenizer.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "num_workers": datamodule.resolved_num_workers("cuda" if setup.accelerator == "gpu" else "cpu"),
            "training_flops_per_token": flops_per_token,
            "peak_tflops": peak_flops / 1e12 if peak_flops else None,
            "resumed_from": resumed_from,
            "resumed_at_step": step if fit_checkpoint else None,
            "hf_source": OmegaConf.to_container(cfg.hf_source) if hf is not None else None,
        },
    )
    best, _ = fit_and_test(cfg, run_dir, trainer, model, datamodule, fit_checkpoint, setup.sweep)
    return best
