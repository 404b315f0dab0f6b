"""Learning rates by depth, weight decay only on matrices, tied weights listed once, and freezing by epoch."""

from __future__ import annotations

import pytest
import torch

from bertlab.model.classification_head import ClassificationHead
from bertlab.model.encoder import Encoder
from bertlab.model.mlm_head import MLMHead
from bertlab.training.freezing import FreezeSchedule
from bertlab.training.parameter_groups import parameter_groups


def tiny_backbone() -> Encoder:
    return Encoder(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32)


def lr_of(groups, parameter):
    return next(group["lr"] for group in groups if any(p is parameter for p in group["params"]))


def test_layerwise_decay_embeddings_lowest_head_at_its_own_rate():
    backbone, head = tiny_backbone(), ClassificationHead(16, 3)
    groups = parameter_groups(backbone, head, lr=1.0, layerwise_lr_decay=0.5, head_lr=2.0)
    assert lr_of(groups, backbone.word_embeddings.weight) == 0.5**4  # L + 1 factors for L = 3 layers
    for index, layer in enumerate(backbone.layers):
        assert lr_of(groups, next(layer.parameters())) == 0.5 ** (3 - index)
    assert lr_of(groups, head.classifier[-1].weight) == 2.0
    no_decay = [p for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]]
    assert all(p.ndim < 2 for p in no_decay) and backbone.embedding_norm.weight in no_decay
    counted = sum(len(group["params"]) for group in groups)
    assert counted == len(list(backbone.parameters())) + len(list(head.parameters()))


def test_tied_mlm_decoder_is_listed_once_and_decay_one_keeps_every_rate():
    backbone, head = tiny_backbone(), MLMHead(16, 50)
    head.tie_to(backbone.word_embeddings)
    groups = parameter_groups(backbone, head, lr=3e-4)
    listed = [p for group in groups for p in group["params"]]
    assert len(listed) == len({id(p) for p in listed})
    assert {group["lr"] for group in groups} == {3e-4}
    torch.optim.AdamW(groups)  # a parameter in two groups would raise here


@pytest.mark.parametrize(
    ("settings", "epoch", "frozen_depths"),
    [
        ({"embeddings": True}, 0, {0}),
        ({"layers": 2}, 0, {1, 2}),
        ({"backbone_frozen": True}, 5, {0, 1, 2, 3, 4}),
        ({"backbone_frozen": True, "unfreeze_after_epochs": 2}, 1, {0, 1, 2, 3, 4}),
        ({"backbone_frozen": True, "unfreeze_after_epochs": 2}, 2, set()),
    ],
)
def test_freezing_is_a_function_of_the_epoch(settings, epoch, frozen_depths):
    from bertlab.training.parameter_groups import layer_of

    backbone = Encoder(
        vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, norm_position="pre"
    )
    schedule = FreezeSchedule(backbone, 3, **settings)
    schedule.apply(epoch)
    frozen = {layer_of(name, 3) for name, p in backbone.named_parameters() if not p.requires_grad}
    trainable = {layer_of(name, 3) for name, p in backbone.named_parameters() if p.requires_grad}
    assert frozen == frozen_depths
    assert not frozen & trainable
