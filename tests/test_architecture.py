"""Backbone options are correct: attention styles agree, padding is inert, relative encodings are relative.

Module-level tests on tiny encoders, in-process; the runs through launch.py are in test_architecture_runs.py.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hydra.utils import instantiate

from bertlab.errors import BertlabError
from bertlab.model import attention as attention_module
from bertlab.model.attention import ATTENTION_STYLES, SelfAttention, combine_masks, eager_attention, rotate
from bertlab.model.encoder import Encoder
from bertlab.model.feed_forward import GatedFeedForward
from bertlab.model.mlm_head import MLMHead
from bertlab.model.positions import POSITION_ENCODINGS, ALiBiPositions, RotaryPositions, alibi_slopes
from bertlab.run import run
from tests.conftest import FAST, compose_config

STYLES = sorted(ATTENTION_STYLES)
ENCODINGS = sorted(POSITION_ENCODINGS)
PRESETS = {
    # name: (num_layers, hidden_size, num_heads)
    "bert_tiny": (2, 128, 2),
    "bert_mini": (4, 256, 4),
    "bert_small": (4, 512, 8),
    "bert_medium": (8, 512, 8),
    "bert_base": (12, 768, 12),
    "modern_tiny": (2, 128, 2),
    "modern_small": (4, 512, 8),
}
VOCAB = 50
TOL = {"atol": 2e-5, "rtol": 1e-4}


def encoder(seed: int = 0, **options) -> Encoder:
    """A small encoder in eval mode (no dropout); the same seed gives the same weights for any attention."""
    torch.manual_seed(seed)
    settings = {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
        "intermediate_size": 64,
        "local_window": 3,
    }
    return Encoder(VOCAB, **{**settings, **options}).eval()


def ids(batch: int = 2, tokens: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, tokens), generator=torch.Generator().manual_seed(seed))


def padded(input_ids: torch.Tensor, lengths: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (with id 0) each row to `total` tokens, keeping its first `lengths[i]` tokens."""
    out = torch.zeros(len(lengths), total, dtype=torch.long)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, length in enumerate(lengths):
        out[row, :length] = input_ids[row, :length]
        mask[row, :length] = 1
    return out, mask


# -- attention styles agree ---------------------------------------------------------------------------


@pytest.mark.parametrize("position_encoding", ENCODINGS)
def test_sdpa_and_eager_agree_with_and_without_padding(position_encoding):
    sdpa = encoder(position_encoding=position_encoding, attention="sdpa")
    eager = encoder(position_encoding=position_encoding, attention="eager")
    eager.load_state_dict(sdpa.state_dict())
    tokens, mask = padded(ids(), [12, 7], 12)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(tokens), eager(tokens), **TOL)
        both = sdpa(tokens, mask), eager(tokens, mask)
    real = mask.bool()
    torch.testing.assert_close(both[0][real], both[1][real], **TOL)


@pytest.mark.parametrize(("style", "position_encoding"), list(itertools.product(STYLES, ENCODINGS)))
def test_more_padding_changes_no_real_token(style, position_encoding):
    model = encoder(attention=style, position_encoding=position_encoding)
    source = ids(tokens=10)
    lengths = [10, 6]
    with torch.no_grad():
        short = model(*padded(source, lengths, 10))
        long = model(*padded(source, lengths, 16))
        unmasked = model(source[:1])  # the full-length row needs no mask at all
    for row, length in enumerate(lengths):
        torch.testing.assert_close(short[row, :length], long[row, :length], **TOL)
    torch.testing.assert_close(unmasked[0], short[0], **TOL)


@pytest.mark.parametrize("position_encoding", ENCODINGS)
def test_local_with_a_window_covering_the_sequence_is_full_attention(position_encoding):
    tokens = ids(tokens=10)
    full = encoder(position_encoding=position_encoding, attention="sdpa")
    local = encoder(position_encoding=position_encoding, attention="local", local_window=10)
    local.load_state_dict(full.state_dict())
    tokens_padded, mask = padded(tokens, [10, 6], 10)
    with torch.no_grad():
        torch.testing.assert_close(local(tokens), full(tokens), **TOL)
        torch.testing.assert_close(
            local(tokens_padded, mask)[mask.bool()], full(tokens_padded, mask)[mask.bool()], **TOL
        )


def test_local_attention_sees_only_its_window_and_global_layers_see_everything():
    """One local layer: token 0's output ignores tokens beyond the window; a global layer does not."""
    tokens = ids(batch=1, tokens=12)
    changed = tokens.clone()
    changed[0, 8] = (changed[0, 8] % (VOCAB - 1)) + 1
    for global_every, influenced in ((0, False), (1, True)):
        model = encoder(attention="local", local_window=3, num_layers=1, global_every=global_every)
        with torch.no_grad():
            before, after = model(tokens), model(changed)
        assert not torch.allclose(before[0, 8], after[0, 8])
        assert not torch.allclose(before[0, 5], after[0, 5])  # |8 - 5| = 3: in the window
        assert torch.allclose(before[0, 0], after[0, 0]) != influenced
    model = encoder(attention="local", num_layers=4, global_every=2)
    assert model.local_layers == [False, True, False, True]


def test_a_padding_query_whose_window_holds_only_padding_stays_finite():
    mask = combine_masks(
        torch.tensor([[1, 1, 0, 0, 0, 0]]).bool()[:, None, None, :],
        None,
        attention_module.sliding_window(6, 1),
    )
    assert mask[0, 0].any(dim=-1).all(), "every query row may attend to something"
    model = encoder(attention="local", local_window=1)
    tokens, pad = padded(ids(tokens=8), [8, 2], 8)
    model.train()
    model(tokens, pad).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -- masks are built only when needed -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "position_encoding", "expected"),
    [
        ("sdpa", "learned", None),
        ("sdpa", "sinusoidal", None),
        ("sdpa", "rope", None),
        ("sdpa", "none", None),
        ("eager", "learned", None),
        ("sdpa", "alibi", torch.float32),
        ("local", "learned", torch.bool),
    ],
)
def test_no_mask_is_built_without_padding(monkeypatch, style, position_encoding, expected):
    seen = []
    kernel = ATTENTION_STYLES[style].kernel

    def spy(q, k, v, mask, dropout_p):
        seen.append(None if mask is None else mask.dtype)
        return kernel(q, k, v, mask, dropout_p)

    model = encoder(attention=style, position_encoding=position_encoding)
    for layer in model.layers:
        layer.attention.kernel = spy
    with torch.no_grad():
        model(ids())
    assert seen == [expected] * len(model.layers)


def test_mixed_precision_runs_every_combination():
    """Under bf16 autocast q, k, v are bf16 while RoPE tables and ALiBi biases are fp32: kernels must cast."""
    tokens, mask = padded(ids(tokens=10), [10, 6], 10)
    for style, position_encoding in itertools.product(STYLES, ENCODINGS):
        model = encoder(attention=style, position_encoding=position_encoding).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(tokens, mask)
        out.float().sum().backward()
        assert torch.isfinite(out).all(), (style, position_encoding)


# -- relative encodings are relative ------------------------------------------------------------------


def test_rope_scores_depend_only_on_relative_positions():
    rope = RotaryPositions(64, hidden_size=32, num_heads=2, rope_base=10000.0)
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 10, 16), torch.randn(1, 2, 10, 16)

    def scores(offset: int) -> torch.Tensor:
        cos, sin = rope.rotary(10, offset)
        return rotate(q, cos, sin) @ rotate(k, cos, sin).transpose(-1, -2)

    for offset in (1, 7, 50):
        torch.testing.assert_close(scores(offset), scores(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rotate(q, *rope.rotary(10)).norm(dim=-1), q.norm(dim=-1))  # a rotation
    assert not torch.allclose(scores(0), q @ k.transpose(-1, -2), atol=1e-3)  # and not the identity


def test_rope_base_changes_the_frequencies():
    slow = RotaryPositions(16, 32, 2, rope_base=1e6).rotary(16)[1]
    fast = RotaryPositions(16, 32, 2, rope_base=10.0).rotary(16)[1]
    assert not torch.allclose(slow, fast)
    assert RotaryPositions(16, 32, 2).cos[5, 0] == pytest.approx(math.cos(5.0))  # first frequency is 1


def test_alibi_bias_is_minus_slope_times_distance_and_shift_invariant():
    alibi = ALiBiPositions(64, hidden_size=32, num_heads=8)
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    assert alibi_slopes(6).shape == (6,) and alibi_slopes(12).shape == (12,)
    bias = alibi.attention_bias(6)
    assert bias.shape == (8, 6, 6)
    assert bias[0, 1, 4].item() == pytest.approx(-0.5 * 3) and bias[7, 4, 1].item() == pytest.approx(
        -(2.0**-8) * 3
    )
    for offset in (1, 30):
        torch.testing.assert_close(alibi.attention_bias(6, offset), bias)


@pytest.mark.parametrize("position_encoding", ["rope", "alibi"])
def test_attention_layer_output_is_invariant_to_shifting_all_positions(position_encoding):
    """Layer level, no absolute embeddings: shifting every position by s changes nothing."""
    torch.manual_seed(0)
    positions = POSITION_ENCODINGS[position_encoding](128, 32, 4)
    layer = SelfAttention(32, 4, 0.0, eager_attention).eval()
    x = torch.randn(2, 9, 32)

    def output(offset: int) -> torch.Tensor:
        rotary = positions.rotary(9, offset)
        return layer(x, positions.attention_bias(9, offset), rotary)

    for offset in (3, 100):
        torch.testing.assert_close(output(offset), output(0), atol=1e-5, rtol=1e-4)
    # and the positions do matter: permuting the tokens does not just permute the outputs
    order = torch.tensor([2, 0, 1, 3, 4, 5, 6, 7, 8])
    permuted = layer(x[:, order], positions.attention_bias(9), positions.rotary(9))
    assert not torch.allclose(permuted, output(0)[:, order], atol=1e-4)


def test_absolute_encodings_add_position_information():
    model = encoder(position_encoding="learned")
    none = encoder(position_encoding="none")
    tokens = torch.full((1, 6), 7)
    with torch.no_grad():
        assert not torch.allclose(model(tokens)[0, 0], model(tokens)[0, 5])
        torch.testing.assert_close(none(tokens)[0, 0], none(tokens)[0, 5])  # a bag of tokens


# -- block options ------------------------------------------------------------------------------------


def test_block_options_build_what_they_say():
    modern = encoder(
        norm_position="pre", norm="rmsnorm", activation="swiglu", bias=False, position_encoding="rope"
    )
    names = dict(modern.named_parameters())
    assert not any(name.endswith("bias") for name in names), "bias=false leaves no bias anywhere"
    assert isinstance(modern.final_norm, torch.nn.RMSNorm) and isinstance(
        modern.layers[0].attention_norm, torch.nn.RMSNorm
    )
    assert modern.layers[0].feed_forward.up.weight.shape == (2 * 64, 32)
    bert = encoder()
    assert isinstance(bert.final_norm, torch.nn.Identity) and isinstance(
        bert.embedding_norm, torch.nn.LayerNorm
    )
    assert "layers.0.attention.qkv.weight" in dict(bert.named_parameters())
    assert not any(name.startswith("final_norm") for name in bert.state_dict())
    layernorm_no_bias = encoder(bias=False)
    assert layernorm_no_bias.embedding_norm.bias is None
    with torch.no_grad():
        for model in (modern, layernorm_no_bias, encoder(activation="geglu", norm_position="pre")):
            assert torch.isfinite(model(ids())).all()


def test_pre_norm_and_post_norm_place_the_norm_differently():
    post, pre = encoder(norm_position="post"), encoder(norm_position="pre")
    pre.load_state_dict(post.state_dict(), strict=False)  # pre has a final norm (unit scale, zero shift)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        layer_post, layer_pre = post.layers[0], pre.layers[0]
        expected_post = layer_post.attention_norm(x + layer_post.attention(x, None))
        expected_post = layer_post.feed_forward_norm(expected_post + layer_post.feed_forward(expected_post))
        torch.testing.assert_close(layer_post(x, None), expected_post)
        expected_pre = x + layer_pre.attention(layer_pre.attention_norm(x), None)
        expected_pre = expected_pre + layer_pre.feed_forward(layer_pre.feed_forward_norm(expected_pre))
        torch.testing.assert_close(layer_pre(x, None), expected_pre)


@pytest.mark.parametrize(
    ("activation", "function"), [("geglu", torch.nn.functional.gelu), ("swiglu", torch.nn.functional.silu)]
)
def test_gated_feed_forward_is_down_of_activation_of_gate_times_value(activation, function):
    model = encoder(activation=activation)
    block = model.layers[0].feed_forward
    assert isinstance(block, GatedFeedForward)
    x = torch.randn(3, 32)
    gate, value = (
        x @ block.up.weight[:64].T + block.up.bias[:64],
        x @ block.up.weight[64:].T + block.up.bias[64:],
    )
    torch.testing.assert_close(block(x), block.down(function(gate) * value))


def test_separate_qkv_projections_equal_the_fused_one():
    fused, separate = encoder(fused_qkv=True), encoder(fused_qkv=False)
    state = fused.state_dict()
    for index in range(2):
        prefix = f"layers.{index}.attention.qkv"
        for suffix in ("weight", "bias"):
            parts = state.pop(f"{prefix}.{suffix}").chunk(3)
            for name, part in zip(("query", "key", "value"), parts, strict=True):
                state[f"{prefix}.{name}.{suffix}"] = part
    separate.load_state_dict(state)
    tokens, mask = padded(ids(), [12, 5], 12)
    with torch.no_grad():
        torch.testing.assert_close(separate(tokens, mask), fused(tokens, mask), **TOL)


def test_mlm_head_ties_its_decoder_to_the_input_embeddings():
    backbone = encoder()
    tied, untied = MLMHead(32, VOCAB, tie_word_embeddings=True), MLMHead(32, VOCAB, tie_word_embeddings=False)
    tied.tie_to(backbone.word_embeddings)
    untied.tie_to(backbone.word_embeddings)
    assert tied.decoder.weight is backbone.word_embeddings.weight
    assert untied.decoder.weight is not backbone.word_embeddings.weight
    hidden = backbone(ids())
    assert tied(hidden).shape == (2, 12, VOCAB)
    assert tied(hidden, torch.tensor([[0, 3], [1, 2]])).shape == (2, 2, VOCAB)


def test_tables_are_buffers_that_checkpoints_do_not_hold():
    for position_encoding in ("sinusoidal", "rope", "alibi"):
        model = encoder(position_encoding=position_encoding)
        assert not any(key.startswith("position_embeddings") for key in model.state_dict())
        assert any(True for _ in model.position_embeddings.buffers())


# -- validation names the key -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"num_heads": 3}, "num_heads", "3 heads do not divide hidden_size 32"),
        (
            {"hidden_size": 24, "num_heads": 8, "position_encoding": "rope"},
            "position_encoding",
            "even head dimension",
        ),
        ({"attention": "local", "local_window": 600}, "local_window", "max_position_embeddings=512"),
        ({"attention": "local", "local_window": 0}, "local_window", "got 0"),
        ({"attention": "local", "global_every": -1}, "global_every", "got -1"),
        ({"position_encoding": "rope", "rope_base": 0.5}, "rope_base", "greater than 1"),
        ({"norm": "batchnorm"}, "norm", "unknown value 'batchnorm'"),
        ({"norm_position": "sandwich"}, "norm_position", "unknown value 'sandwich'"),
        ({"activation": "relu"}, "activation", "unknown value 'relu'"),
        ({"position_encoding": "t5"}, "position_encoding", "unknown value 't5'"),
        ({"attention": "flash"}, "attention", "unknown value 'flash'"),
        ({"layer_norm_eps": 0}, "layer_norm_eps", "must be positive"),
    ],
)
def test_impossible_combinations_name_the_key(options, key, fragment):
    with pytest.raises(BertlabError) as caught:
        encoder(**options)
    assert caught.value.key == key
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            [
                "architecture.hidden_size=120",
                "architecture.num_heads=8",
                "architecture.position_encoding=rope",
            ],
            "architecture.position_encoding: rope rotates pairs",
        ),
        (
            ["architecture.attention=local", "architecture.local_window=100"],
            "architecture.local_window: 100 exceeds tokenizer.max_length=64",
        ),
        (["architecture.norm=batchnorm"], "architecture.norm: unknown value 'batchnorm'"),
    ],
)
def test_run_refuses_impossible_combinations_before_writing(tmp_path, overrides, fragment):
    cfg = compose_config(["+experiment=pretrain", *FAST, *overrides], tmp_path)
    run_dir = tmp_path / "pretraining" / "x"
    with pytest.raises(BertlabError) as caught:
        run(cfg, run_dir)
    assert fragment in str(caught.value)
    assert not run_dir.exists()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_compose_with_their_sizes_and_choices(tmp_path, preset):
    cfg = compose_config(["+experiment=pretrain", f"architecture={preset}"], tmp_path)
    layers, hidden, heads = PRESETS[preset]
    arch = cfg.architecture
    assert (arch.num_layers, arch.hidden_size, arch.num_heads) == (layers, hidden, heads)
    if preset.startswith("bert_"):
        assert (arch.position_encoding, arch.norm_position, arch.activation, arch.bias) == (
            "learned",
            "post",
            "gelu",
            True,
        )
        assert arch.intermediate_size == 4 * hidden
    else:
        assert (arch.position_encoding, arch.norm_position, arch.activation, arch.bias) == (
            "rope",
            "pre",
            "geglu",
            False,
        )
    with torch.device("meta"):
        model = instantiate(arch, vocab_size=30522, pad_token_id=0)
    if preset == "bert_base":  # BERT-Base without pooler and token types: 109.5 M - 0.6 M - 1.5 K
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(108.9e6, rel=0.01)
