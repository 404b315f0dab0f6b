"""Masked-language-model pretraining: from a composed config to a finished run folder."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from bertlab.building import (
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

log = logging.getLogger(__name__)


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
    # The text is read only when something needs it: prepared token stores plus a given (or resumed)
    # vocabulary need none, so a run's memory does not grow with the corpus.
    fits_tokenizer = is_main_process() and setup.checkpoint_path is None and tokenizer.needs_corpus
    documents = None
    if datamodule.prepared is None or fits_tokenizer:
        try:
            documents = datamodule.documents()
        except BertlabError as error:
            raise error.in_section("data.source") from None

    L.seed_everything(cfg.experiment.seed, workers=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = run_tokenizer(
        tokenizer,
        run_dir,
        setup.checkpoint_path.parent.parent if setup.checkpoint_path else None,
        fit=lambda fresh: fresh.fit(
            documents["train"] if fits_tokenizer else (),  # () when the vocabulary comes from a file
            cache_file=datamodule.tokenizer_cache_file(fresh),
        ),
    )
    prepared_dir = datamodule.prepare(tokenizer)
    documents = None  # the text is in the memory-mapped token stores now
    datamodule.setup("fit")

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
    loggers = make_loggers(cfg, run_dir, TRAIN_COLUMNS, EVAL_COLUMNS, setup, step)
    maybe_compile(model, training.compile)
    trainer, _ = make_trainer(cfg, run_dir, setup, loggers, datamodule, step)
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
            "resumed_from": resumed_from,
            "resumed_at_step": step if fit_checkpoint else None,
            "hf_source": OmegaConf.to_container(cfg.hf_source) if hf is not None else None,
        },
    )
    best, _ = fit_and_test(cfg, run_dir, trainer, model, datamodule, fit_checkpoint, setup.sweep)
    return best
