"""Masked-language-model pretraining: what is different about it (flow.py runs the rest).

The text is read only when something needs it, and streamed: the tokenizer trains on a bounded sample,
the preparation writes memory-mapped shards (bertlab.data.streaming_preparation). A prepared folder (data.prepared)
brings its own tokenizer and is only read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from bertlab.config.instantiate import edited_config, instantiate_node, instantiate_section, plain_config
from bertlab.errors import BertlabError
from bertlab.flow import (
    BuiltRun,
    RunPlan,
    check_run_kind,
    resume_source_key,
    resumes,
    run_tokenizer,
)
from bertlab.hf_import import HFStart, load_weights, pretraining_source
from bertlab.run_folder import RUN_INFO_FILE, TOKENIZER_FILE
from bertlab.tasks.mlm import EVAL_COLUMNS, TRAIN_COLUMNS, MaskedLanguageModel
from bertlab.tokenizer import TextTokenizer
from bertlab.training.budget import Budget
from bertlab.training.distributed import is_main_process
from bertlab.training.finetuning_lr import AUTO
from bertlab.training.head_warmup import HeadWarmup, resolve_head_warmup_steps
from bertlab.training.mfu import MFUMonitor, mlm_training_flops_per_token
from bertlab.training.pretraining_lr import pretraining_lr

log = logging.getLogger(__name__)


def _data_errors(texts: Iterator[str]) -> Iterator[str]:
    """Errors found reading the text while the tokenizer trains are named by their data.* key."""
    try:
        yield from texts
    except BertlabError as error:
        raise error.in_section("data") from None


def check_pretraining(cfg: DictConfig) -> None:
    """What a pretraining run's config must satisfy beyond the common checks (flow.check_run_config)."""
    check_run_kind(cfg, "pretraining", "MLM", ("val/loss", "val/perplexity", "val/accuracy"))
    if Budget(**plain_config(cfg.training.budget)).active and cfg.training.max_epochs is not None:
        raise BertlabError(
            "must be null with a training.budget: the budget decides where the run (and its schedule) ends",
            "training.max_epochs",
        )
    max_length, max_positions = cfg.tokenizer.max_length, cfg.architecture.max_position_embeddings
    if max_length > max_positions:
        source = cfg.get("hf_source")
        fix = (
            f"the model in {source.path!r} has no positions beyond {max_positions}: lower tokenizer.max_length "
            f"to at most {max_positions}"
            if source
            else "lower tokenizer.max_length or raise architecture.max_position_embeddings"
        )
        raise BertlabError(
            f"{max_length} exceeds architecture.max_position_embeddings={max_positions}; {fix}",
            "tokenizer.max_length",
        )
    window = cfg.architecture.get("local_window")
    if cfg.architecture.get("attention") == "local" and window is not None and window > max_length:
        raise BertlabError(
            f"{window} exceeds tokenizer.max_length={max_length}: a window wider than the sequence is full "
            f"attention; lower architecture.local_window or use architecture.attention=sdpa",
            "architecture.local_window",
        )


@dataclass(frozen=True)
class PretrainingInputs:
    """What a pretraining run resolved from its config and inputs, before anything is written."""

    config: dict[str, Any]  # as the run records it (with an imported model's explicit architecture)
    lr: float
    tokenizer: TextTokenizer  # not fitted yet: build() fits it, or takes the resumed/prepared run's
    datamodule: Any
    hf: HFStart | None  # architecture=from_hf: the model folder and its weights
    head_warmup_steps: int  # training.head_warmup_steps resolved


class Pretraining:
    """Tokenizer fitted on the corpus (or taken from the resumed run / prepared folder), masked blocks,
    backbone + MLM head (optionally seeded from a Hugging Face model), MFU where the peak is known."""

    reports_mfu = True
    default_epochs = None  # training.max_steps (or a budget) bounds a pretraining run

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir

    def resolve(self) -> PretrainingInputs:
        cfg = self.cfg
        hf = pretraining_source(plain_config(cfg.architecture), resumes(cfg, self.run_dir))
        run_cfg = edited_config(cfg, hf.pretraining_config) if hf is not None else cfg
        check_pretraining(run_cfg)
        training = run_cfg.training
        tokenizer = instantiate_section(run_cfg, "tokenizer")
        masking = instantiate_section(run_cfg, "mlm_head.masking")
        datamodule = instantiate_section(
            run_cfg, "data", masking=masking, batch_size=training.batch_size, num_workers=training.num_workers
        )
        config = plain_config(run_cfg)
        with torch.device("meta"):
            instantiate_node(config["architecture"], "architecture", vocab_size=tokenizer.vocab_size_limit)
        new_head = hf is not None and not hf.model.has_mlm_head
        try:
            head_warmup = resolve_head_warmup_steps(training.get("head_warmup_steps", 0), new_head)
        except BertlabError as error:
            raise error.in_section("training") from None
        if new_head:
            log.info(
                "%s has no MLM head (a base model): a new head starts from BERT's initialisation, its decoder "
                "tied to the word embeddings, and trains alone for the first %d steps "
                "(training.head_warmup_steps)",
                hf.model.folder,
                head_warmup,
            )
        configured = training.optimizer.get("lr")
        lr = pretraining_lr(configured, continues_released_model=hf is not None)
        if configured == AUTO:
            log.info(
                "training.optimizer.lr: auto is %.0e (%s)",
                lr,
                "continuing a released model" if hf is not None else "an encoder from random initialisation",
            )
        # Recorded as resolved: a resume compares rates, and runs from before `auto` recorded theirs.
        config["training"]["optimizer"]["lr"] = lr
        return PretrainingInputs(config, lr, tokenizer, datamodule, hf, head_warmup)

    def build(self, inputs: PretrainingInputs, plan: RunPlan) -> BuiltRun:
        config, run_dir, datamodule, hf = inputs.config, self.run_dir, inputs.datamodule, inputs.hf
        peak_flops = plan.peak_flops
        source_dir, source_key = plan.resume.source_dir, resume_source_key(self.cfg)
        if source_dir is None and datamodule.prepared and (datamodule.prepared / TOKENIZER_FILE).is_file():
            source_dir, source_key = (
                datamodule.prepared,
                "data.prepared",
            )  # a prepared folder brings its tokenizer
        tokenizer = run_tokenizer(
            inputs.tokenizer,
            run_dir,
            source_dir,
            fit=lambda fresh: fresh.fit(
                (lambda: _data_errors(datamodule.tokenizer_sample())) if fresh.needs_corpus else (),
                cache_file=datamodule.tokenizer_cache_file(fresh),
            ),
            source_key=source_key,
        )
        if datamodule.masking.needs_word_starts:
            try:
                tokenizer.word_starts()
            except BertlabError as error:
                raise error.in_section("mlm_head.masking") from None
        try:
            prepared_dir = datamodule.prepare(tokenizer, main=is_main_process())
            datamodule.setup("fit")
        except BertlabError as error:
            raise error.in_section("data") from None

        architecture = config["architecture"]
        backbone = instantiate_node(
            architecture, "architecture", vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id
        )
        head = instantiate_node(
            config["mlm_head"]["module"],
            "mlm_head.module",
            hidden_size=backbone.hidden_size,
            vocab_size=tokenizer.vocab_size,
        )
        if hf is not None and hf.state_dict is not None:
            head.tie_to(backbone.word_embeddings)
            load_weights(backbone, head, hf.state_dict, hf.model.folder)
        model = MaskedLanguageModel(
            backbone, head, plan.optimizer, plan.scheduler, run_config=config, lr=inputs.lr
        )
        flops_per_token = mlm_training_flops_per_token(
            backbone.hidden_size,
            backbone.num_layers,
            architecture["intermediate_size"],
            tokenizer.max_length,
            tokenizer.vocab_size,
            datamodule.masker.num_predictions,
            gated=architecture["activation"] != "gelu",
        )
        # MFU only where the device's peak is known: no column at all otherwise (not a guess).
        return BuiltRun(
            model,
            datamodule,
            train_columns=[*TRAIN_COLUMNS, "mfu"] if peak_flops else TRAIN_COLUMNS,
            eval_columns=EVAL_COLUMNS,
            info={
                "task": MaskedLanguageModel.task,
                "prepared_data": str(prepared_dir),
                "evaluation": datamodule.evaluation_info(),
                "vocab_size": tokenizer.vocab_size,
                "parameters": sum(p.numel() for p in model.parameters()),
                "num_workers": datamodule.resolved_num_workers(
                    "cuda" if plan.accelerator == "gpu" else "cpu"
                ),
                "training_flops_per_token": flops_per_token,
                "peak_tflops": peak_flops / 1e12 if peak_flops else None,
                "hf_source": config.get("hf_source"),
                "learning_rate": {"lr": inputs.lr},  # `auto` resolved (training/pretraining_lr.py)
                "head_warmup_steps": inputs.head_warmup_steps,
            },
            callbacks=[
                *([MFUMonitor(flops_per_token, peak_flops, run_dir / RUN_INFO_FILE)] if peak_flops else []),
                *([HeadWarmup(backbone, inputs.head_warmup_steps)] if inputs.head_warmup_steps else []),
            ],
        )

    def after_test(self, inputs: PretrainingInputs, trainer: L.Trainer, built: BuiltRun) -> None:
        """The test figures are in the metric files; nothing else to write."""
