"""MFU: FLOPs per token from the architecture (checked by hand and by torch's FLOP counter), GPU peaks, and
the train/mfu column, present exactly where the device's peak is known."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bertlab.errors import BertlabError
from bertlab.model.encoder import Encoder
from bertlab.model.mlm_head import MLMHead
from bertlab.run import run
from bertlab.training.mfu import gpu_peak_tflops, mlm_training_flops_per_token, resolve_peak_flops
from tests.conftest import FAST, compose_config, read_csv


def test_flops_per_token_equals_a_hand_count():
    # hidden 8, 1 layer, intermediate 16, 6 tokens, vocabulary 10, 2 predicted positions per sequence.
    # Forward per token: qkv 2*8*24 = 384, output 2*8*8 = 128, feed-forward 2*8*16 + 2*16*8 = 512,
    # scores 2*6*8 = 96, values 2*6*8 = 96: 1216. Head per predicted position: 2*8*8 + 2*8*10 = 288,
    # 2 of 6 positions: 96 per token. Forward + backward: 3 * (1216 + 96) = 3936.
    assert mlm_training_flops_per_token(8, 1, 16, 6, 10, 2) == 3936
    # gated: the first projection is 2 x 16 wide, feed-forward 2*8*32 + 2*16*8 = 768 -> 3 * 1568 = 4704
    assert mlm_training_flops_per_token(8, 1, 16, 6, 10, 2, gated=True) == 4704


@pytest.mark.parametrize("activation", ["gelu", "geglu"])
def test_flops_per_token_equals_torch_flop_counter_on_a_real_step(activation):
    torch.manual_seed(0)
    vocab, hidden, layers, intermediate, batch, length, k = 50, 16, 2, 32, 3, 12, 4
    backbone = Encoder(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=2,
        intermediate_size=intermediate,
        dropout=0.0,
        attention_dropout=0.0,
        attention="eager",  # explicit matmuls, which the counter sees on any device
        activation=activation,
    )
    head = MLMHead(hidden, vocab)
    head.tie_to(backbone.word_embeddings)
    input_ids = torch.randint(5, vocab, (batch, length))
    positions = torch.stack([torch.randperm(length)[:k].sort().values for _ in range(batch)])
    with FlopCounterMode(display=False) as counter:
        logits = head(backbone(input_ids), positions)
        F.cross_entropy(logits.flatten(0, 1), input_ids.gather(1, positions).flatten()).backward()
    expected = mlm_training_flops_per_token(
        hidden, layers, intermediate, length, vocab, k, gated=activation != "gelu"
    )
    assert counter.get_total_flops() == expected * batch * length


def test_gpu_peak_table_knows_common_gpus_and_guesses_none():
    assert gpu_peak_tflops("NVIDIA H200", "bf16") == 989.4  # dense, not the 1,979 with sparsity
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.4
    assert gpu_peak_tflops("NVIDIA H100 PCIe", "fp16") == 756.0
    assert gpu_peak_tflops("NVIDIA A100-SXM4-80GB", "tf32") == 156.0
    assert gpu_peak_tflops("NVIDIA L40S", "bf16") == 362.05
    assert gpu_peak_tflops("NVIDIA L4", "bf16") == 121.0
    assert gpu_peak_tflops("NVIDIA A10", "bf16") == 125.0
    assert gpu_peak_tflops("NVIDIA GeForce RTX 4090", "bf16") == 165.2
    assert gpu_peak_tflops("Tesla V100-SXM2-32GB", "fp16") == 125.0
    assert gpu_peak_tflops("Tesla T4", "fp16") == 65.0
    assert gpu_peak_tflops("Tesla T4", "bf16") is None  # no bf16 tensor cores
    assert gpu_peak_tflops("NVIDIA A10G", "bf16") is None  # another chip: no guess
    assert gpu_peak_tflops("NVIDIA GH200 480GB", "bf16") is None
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "fp32") is None  # fp32 without TF32: no table figure


def test_peak_comes_from_the_setting_else_only_from_a_known_gpu():
    assert resolve_peak_flops(2.5, "cpu", "32-true") == 2.5e12
    assert resolve_peak_flops(None, "cpu", "bf16-mixed") is None
    with pytest.raises(BertlabError, match="peak_tflops: must be a positive number"):
        resolve_peak_flops(0.0, "cpu", "32-true")


def test_mfu_column_only_where_the_peak_is_known(tmp_path):
    steps = ["training.max_steps=6", "logging.log_every_n_steps=2", "logging.log_eval=false"]
    known = tmp_path / "pretraining" / "known"
    run(
        compose_config(
            ["+experiment=pretrain", "experiment.name=known", *FAST, *steps, "training.peak_tflops=0.5"],
            tmp_path,
        ),
        known,
    )
    rows = read_csv(known / "metrics/train/metrics.csv")
    assert "mfu" in rows[0]
    info = json.loads((known / "run.json").read_text())
    assert info["peak_tflops"] == 0.5 and info["training_flops_per_token"] > 0
    for row in rows[1:]:  # the first row's rate spans one step only: empty, like tokens_per_s
        expected = float(row["tokens_per_s"]) * info["training_flops_per_token"] / 0.5e12
        assert float(row["mfu"]) == pytest.approx(expected, rel=1e-6)
    assert 0 < info["mfu_mean"] < 1

    unknown = tmp_path / "pretraining" / "unknown"
    run(
        compose_config(["+experiment=pretrain", "experiment.name=unknown", *FAST, *steps], tmp_path),
        unknown,
    )
    assert "mfu" not in read_csv(unknown / "metrics/train/metrics.csv")[0]
    info = json.loads((unknown / "run.json").read_text())
    assert info["peak_tflops"] is None and "mfu_mean" not in info
