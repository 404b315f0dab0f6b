"""Document packing (data.packing=documents): the documents of a block never see each other, each is encoded
as if alone (positions from 0), the document ids come from the [SEP] tokens, and a real run trains and
resumes to the bit with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import bertlab.model.encoder as encoder_module
from bertlab.data.batch_masking import BatchMasker
from bertlab.data.chunk_encoding import _flatten
from bertlab.data.document_packing import document_ids
from bertlab.data.masking import MaskingPolicy
from bertlab.data.mlm_datamodule import BlockDataset
from bertlab.data.sampler import BatchKey
from bertlab.errors import BertlabError
from bertlab.model.encoder import Encoder
from bertlab.run import run
from bertlab.training.resume import config_changes
from tests.conftest import compose_config, read_csv
from tests.test_schedule_and_masking_runs import interrupted_and_resumed, same_weights, start, train_rows

CLS, SEP, PAD = 2, 3, 0
POSITION_KINDS = ["learned", "sinusoidal", "rope", "alibi"]
ATTENTIONS = ["eager", "sdpa", "local"]
# [CLS] + the end of a document, a whole one, the start of another + the block's closing [SEP].
PACKED = torch.tensor(
    [
        [CLS, 10, 11, SEP, 12, 13, 14, 15, SEP, 16, 17, SEP],
        [CLS, 20, 21, 22, 23, 24, SEP, 25, 26, 27, 28, SEP],
    ]
)
SPANS = [[(0, 4), (4, 9), (9, 12)], [(0, 7), (7, 12)]]  # each row's documents, [start, end)


def tiny_encoder(position_encoding: str, attention: str) -> Encoder:
    torch.manual_seed(0)
    return Encoder(
        40,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        attention=attention,
        position_encoding=position_encoding,
        local_window=3,
        global_every=2,  # with `local`: layer 0 global, layer 1 local
    ).eval()


def recorded_probabilities(model: Encoder) -> list[torch.Tensor]:
    """Make every layer's kernel also record its attention probabilities [B, H, T, T]: the kernel itself,
    applied to identity values (softmax(scores) @ I is the probability matrix)."""
    recorded: list[torch.Tensor] = []
    for layer in model.layers:
        kernel = layer.attention.kernel

        def recording(q, k, v, mask, dropout_p, kernel=kernel):
            identity = torch.eye(k.size(-2)).expand(*k.shape[:-1], k.size(-2))
            recorded.append(kernel(q, k, identity, mask, 0.0))
            return kernel(q, k, v, mask, dropout_p)

        layer.attention.kernel = recording
    return recorded


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position_encoding", POSITION_KINDS)
def test_no_attention_weight_crosses_a_document(position_encoding, attention):
    model = tiny_encoder(position_encoding, attention)
    probabilities = recorded_probabilities(model)
    documents = document_ids(PACKED, SEP)
    with torch.no_grad():
        model(PACKED, document_ids=documents)
    same = documents[:, None, :, None] == documents[:, None, None, :]
    assert len(probabilities) == model.num_layers
    for layer_probabilities in probabilities:
        assert torch.all(layer_probabilities.masked_select(~same) == 0)
        torch.testing.assert_close(layer_probabilities.sum(-1), torch.ones(2, 2, 12))
        assert (layer_probabilities.masked_select(same) > 0).any()
    with torch.no_grad():  # without the option, attention does cross (the check above can fail)
        model(PACKED)
    assert (probabilities[-1].masked_select(~same) > 0).any()


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position_encoding", [*POSITION_KINDS, "none"])
def test_each_packed_document_is_encoded_as_if_alone(position_encoding, attention):
    model = tiny_encoder(position_encoding, attention)
    with torch.no_grad():
        packed = model(PACKED, document_ids=document_ids(PACKED, SEP))
        for row, spans in enumerate(SPANS):
            for start_, end in spans:
                alone = model(PACKED[row : row + 1, start_:end])  # positions from 0
                torch.testing.assert_close(packed[row : row + 1, start_:end], alone, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("position_encoding", POSITION_KINDS)
def test_each_packed_document_is_encoded_as_if_alone_on_cuda(position_encoding):
    """The fused CUDA kernels with the block-diagonal mask (fp32, and finite under bf16 autocast)."""
    model = tiny_encoder(position_encoding, "sdpa").cuda()
    packed_ids = PACKED.cuda()
    with torch.no_grad():
        packed = model(packed_ids, document_ids=document_ids(packed_ids, SEP))
        for row, spans in enumerate(SPANS):
            for start_, end in spans:
                alone = model(packed_ids[row : row + 1, start_:end])
                torch.testing.assert_close(packed[row : row + 1, start_:end], alone, atol=1e-4, rtol=0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert model(packed_ids, document_ids=document_ids(packed_ids, SEP)).isfinite().all()


@pytest.mark.parametrize("position_encoding", ["learned", "alibi"])
def test_documents_combine_with_padding(position_encoding):
    """Padding at the end of a packed row: real tokens match the unpadded row, and nothing is NaN."""
    model = tiny_encoder(position_encoding, "local")
    padded = torch.cat([PACKED, torch.full((2, 3), PAD)], dim=1)
    mask = (padded != PAD).long()
    with torch.no_grad():
        out = model(padded, mask, document_ids(padded, SEP))
        reference = model(PACKED, document_ids=document_ids(PACKED, SEP))
    assert not out.isnan().any()
    torch.testing.assert_close(out[:, :12], reference, atol=1e-5, rtol=0)


def test_document_ids_count_the_seps_before_each_token():
    blocks = torch.tensor(
        [
            [CLS, 5, 6, SEP, 7, SEP, 8, 9, SEP],  # starts mid-document, ends mid-document
            [CLS, 5, 6, 7, SEP, 8, 9, SEP, SEP],  # the stream's [SEP] is the last inner token
            [CLS, 5, 6, 7, 8, 9, 5, 6, SEP],  # inside one long document
        ],
        dtype=torch.uint16,  # the stores' compact dtype
    )
    assert document_ids(blocks, SEP).tolist() == [
        [0, 0, 0, 0, 1, 1, 2, 2, 2],
        [0, 0, 0, 0, 0, 1, 1, 1, 2],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]


def test_document_ids_of_blocks_follow_the_prepared_streams_documents():
    """Blocks cut from a stream as preparation writes it (documents of random lengths, each closed by
    [SEP]): tokens share an id exactly when they share a document; [CLS] goes with the first one."""
    rng = np.random.default_rng(0)
    documents = [list(rng.integers(5, 40, size=rng.integers(1, 30))) for _ in range(300)]
    stream, lengths = _flatten(documents, SEP, "uint16")
    source_document = np.repeat(np.arange(len(lengths)), lengths)
    dataset = BlockDataset([torch.from_numpy(stream)], 32, CLS, SEP)
    batch = dataset[BatchKey(epoch=0, batch_index=0, indices=torch.arange(len(dataset)))]["input_ids"]
    ids = document_ids(batch, SEP)
    inner = dataset.inner
    for block in range(len(dataset)):
        owners = source_document[block * inner : (block + 1) * inner]
        expected = owners - owners[0]
        closing = expected[-1] + (1 if stream[(block + 1) * inner - 1] == SEP else 0)
        assert ids[block].tolist() == [0, *expected.tolist(), closing]


def test_masking_never_touches_the_separators_the_document_ids_come_from():
    vocab = 40
    policy = MaskingPolicy(probability=0.5)
    masker = BatchMasker(policy, [PAD, 1, CLS, SEP, 4], 4, vocab, policy.num_predictions(10), seed=0)
    for index in range(20):
        masked = masker({"input_ids": PACKED, "epoch": 0, "batch_index": index})
        assert torch.equal(document_ids(masked["input_ids"], SEP), document_ids(PACKED, SEP))
        assert torch.equal(masked["input_ids"][:, 0], PACKED[:, 0])


DOCUMENTS = ("data.packing=documents", "training.max_steps=12")


def test_pretraining_with_document_packing_learns_and_resumes_exactly(tmp_path, monkeypatch):
    seen: list[torch.Tensor | None] = []
    forward = Encoder.forward

    def recording(self, input_ids, attention_mask=None, document_ids=None):
        seen.append(document_ids)
        return forward(self, input_ids, attention_mask, document_ids)

    with monkeypatch.context() as patch:
        patch.setattr(encoder_module.Encoder, "forward", recording)
        straight = start(tmp_path, "straight", *DOCUMENTS)
    assert seen and all(ids is not None for ids in seen)
    assert max(int(ids[:, -1].max()) for ids in seen) > 0  # blocks held several documents
    losses = [float(loss) for _, loss, _ in train_rows(straight)]
    assert len(losses) == 6 and sum(losses[-2:]) < sum(losses[:2])
    assert read_csv(straight / "metrics/eval/metrics.csv")

    cut = interrupted_and_resumed(tmp_path, monkeypatch, *DOCUMENTS)
    assert train_rows(cut) == train_rows(straight)
    assert same_weights(cut, straight)


def test_a_bad_packing_value_fails_before_training_naming_the_key(tmp_path):
    cfg = compose_config(["+experiment=smoke", "data.packing=sentences"], tmp_path)
    run_dir = tmp_path / "pretraining" / "smoke"
    with pytest.raises(BertlabError) as caught:
        run(cfg, run_dir)
    assert str(caught.value) == (
        "data.packing: must be one of ('plain', 'documents') or null (plain), got 'sentences'"
    )
    assert not (run_dir / "checkpoints").exists()


def test_runs_saved_before_the_option_resume_only_with_plain_packing():
    """Packing by documents is the default now: a run saved without data.packing (it packed plainly) is a
    changed data key to resume across; data.packing=null (or plain) resumes it unchanged."""
    current = OmegaConf.to_container(compose_config(["+experiment=smoke"], "runs"), resolve=True)
    assert current["data"]["packing"] == "documents"
    saved = {**current, "data": {k: v for k, v in current["data"].items() if k != "packing"}}
    assert config_changes(saved, current) == [("data.packing", None, "documents")]
    as_before = {**current, "data": {**current["data"], "packing": None}}
    assert config_changes(saved, as_before) == []
