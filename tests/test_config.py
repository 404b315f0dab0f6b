"""Composition and fail-fast validation: every section exists, and bad input names the key or path."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from bertlab.errors import BertlabError
from bertlab.run import run
from tests.conftest import FAST, compose_config, launch

SECTIONS = ("experiment", "logging", "tokenizer", "architecture", "mlm_head", "training", "data")


def test_pretrain_experiment_composes_every_section(tmp_path):
    cfg = compose_config(["+experiment=pretrain"], tmp_path)
    assert all(section in cfg for section in SECTIONS)
    assert cfg.experiment.kind == "pretraining" and cfg.experiment.output_dir == str(tmp_path)
    assert set(cfg.training.resume) == {
        "is_resume",
        "checkpoint_path",
        "resume_pretraining_name",
        "strict",
        "load_only_model_state",
        "allow_config_changes",
    }
    assert cfg.training.resume.is_resume is False
    assert cfg.mlm_head.masking.probability == 0.15
    assert cfg.architecture._target_ == "bertlab.model.encoder.Encoder"
    assert cfg.training.optimizer._partial_ is True


def test_group_swaps(tmp_path):
    cfg = compose_config(
        ["+experiment=pretrain", "architecture=bert_mini", "tokenizer=bpe", "logging=wandb"], tmp_path
    )
    assert cfg.architecture.hidden_size == 256 and cfg.architecture.num_layers == 4
    assert cfg.tokenizer._target_ == "bertlab.tokenizer.BPETokenizer"
    assert cfg.logging.use_wandb is True


def test_cfg_job_prints_every_section(tmp_path):
    result = launch(["+experiment=pretrain"], tmp_path, flags=("--cfg", "job"))
    for section in SECTIONS:
        assert f"\n{section}:" in "\n" + result.stdout
    assert not (tmp_path / "pretraining").exists()


@pytest.mark.parametrize(
    ("override", "error", "fragment"),
    [
        ("training.max_stepz=5", ConfigCompositionException, "training.max_stepz"),
        ("architecture=bert_huge", ConfigCompositionException, "bert_huge"),
        ("training.max_steps=many", ConfigCompositionException, "training.max_steps"),
    ],
)
def test_hydra_rejects_unknown_keys_groups_and_types(tmp_path, override, error, fragment):
    with pytest.raises((error, ValidationError)) as caught:
        compose_config(["+experiment=pretrain", override], tmp_path)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("architecture.num_heads=3", "architecture.num_heads: 3 heads do not divide hidden_size 128"),
        ("mlm_head.masking.probability=1.5", "mlm_head.masking.probability: must be in (0, 1), got 1.5"),
        ("mlm_head.masking.probability=0", "mlm_head.masking.probability: must be in (0, 1), got 0"),
        ("training.max_steps=0", "training.max_steps: must be a positive integer, got 0"),
        ("training.optimizer.lr=-1", "training.optimizer.lr: must be positive or auto"),
        ("architecture.attention=fancy", "architecture.attention: unknown value 'fancy'"),
        (
            "tokenizer.max_length=1024",
            "tokenizer.max_length: 1024 exceeds architecture.max_position_embeddings=512",
        ),
        ("training.precision=fp8", "training.precision: unknown precision 'fp8'"),
        (
            "tokenizer.vocab_source=missing/tok.json",
            "tokenizer.vocab_source: tokenizer file 'missing/tok.json'",
        ),
        ("experiment.name=a/b", "experiment.name: must be a plain folder name"),
        ("training.num_workers=-1", "training.num_workers: must be auto or a non-negative integer"),
        ("training.peak_tflops=-5", "training.peak_tflops: must be a positive number of TFLOP/s or null"),
        ("training.cpu_threads=0", "training.cpu_threads: must be a positive integer or null"),
    ],
)
def test_invalid_values_fail_before_anything_is_written(tmp_path, override, fragment):
    cfg = compose_config(["+experiment=pretrain", *FAST, override], tmp_path)
    run_dir = tmp_path / "pretraining" / "x"
    with pytest.raises(BertlabError) as caught:
        run(cfg, run_dir)
    assert fragment in str(caught.value)
    assert not run_dir.exists()
    assert not (tmp_path / ".cache").exists()


def test_missing_and_empty_data_files_name_the_path(tmp_path):
    cfg = compose_config(["+experiment=pretrain", "data=text", "data.source.train=[nowhere/a.txt]"], tmp_path)
    with pytest.raises(BertlabError, match=r"data\.source\.train: file 'nowhere/a.txt' does not exist"):
        run(cfg, tmp_path / "run")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    cfg = compose_config(["+experiment=pretrain", "data=text", f"data.source.train={empty}"], tmp_path)
    with pytest.raises(BertlabError, match=rf"data\.source\.train: file '{empty}' holds no text"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_override_through_launch_exits_nonzero_with_the_key(tmp_path):
    result = launch(["+experiment=pretrain", "architecture.num_heads=3"], tmp_path, check=False)
    assert result.returncode != 0
    assert "architecture.num_heads: 3 heads do not divide hidden_size 128" in result.stderr
    assert not (tmp_path / "pretraining" / "pretrain" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "training.optimzer.lr=1",
            "Error: Could not override 'training.optimzer.lr'. To append to your config use "
            "+training.optimzer.lr=1; Key 'optimzer' not in 'PretrainTrainingConfig'",
        ),
        (
            "training.max_steps=abc",
            "Error: Error merging override training.max_steps=abc; Value 'abc' of type 'str' could not be "
            "converted to Integer",
        ),
        (
            "architecture=nope",
            "Error: In 'config': Could not find 'architecture/nope'; Available options in 'architecture': "
            "bert_base, bert_medium, bert_mini, bert_small, bert_tiny, from_hf, from_pretrained, "
            "modern_small, modern_tiny",
        ),
        ("training.resume.is_resume=maybe", "Error: training.resume.is_resume: must be true, false or auto"),
    ],
)
def test_hydras_own_errors_are_one_error_line_with_exit_status_2(tmp_path, override, line):
    result = launch(["+experiment=smoke", override], tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(line), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not tmp_path.joinpath("pretraining").exists()


def test_two_of_hydras_mode_flags_are_one_error_line_saying_what_to_drop(tmp_path):
    result = launch(["+experiment=smoke"], tmp_path, check=False, flags=("-m", "--cfg", "hydra"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified; "
        "to print a sweep's config, drop -m (--cfg job shows one job's config, --cfg hydra Hydra's)"
    ), result.stderr
    assert not any(tmp_path.iterdir())
