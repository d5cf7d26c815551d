"""Multimodal model and encoders on every modality subset (host methods: tests/methods)."""

import itertools

import pytest
import torch

from merdg.config import ModelConfig
from merdg.models import ENCODERS, MultimodalModel, build_encoder
from merdg.models.backbones import Backbone

SUBSETS = [list(c) for r in (1, 2, 3) for c in itertools.combinations(("video", "audio", "flow"), r)]


def make_inputs(modalities, batch=4, frames=8, size=32, spectrogram=(129, 124)):
    generator = torch.Generator().manual_seed(0)
    shapes = {
        "video": (batch, 3, frames, size, size),
        "flow": (batch, 2, frames, size, size),
        "audio": (batch, 1, *spectrogram),
    }
    return {m: torch.randn(*shapes[m], generator=generator) for m in modalities}


@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_model_shapes_for_every_subset(modalities):
    config = ModelConfig(embed_dim=24, width=4, projector_hidden=32, projection_dim=16)
    model = MultimodalModel(modalities, num_classes=5, config=config, with_projectors=True)
    output = model(make_inputs(modalities))
    assert output.logits.shape == (4, 5)
    assert set(output.embeddings) == set(modalities)
    assert all(e.shape == (4, 24) for e in output.embeddings.values())
    assert all(p.shape == (4, 16) for p in output.projections.values())


def test_model_without_projectors_has_no_projection_parameters():
    model = MultimodalModel(["video", "audio"], 3, ModelConfig(width=4), with_projectors=False)
    assert len(model.projectors) == 0
    assert not any(name.startswith("projectors") for name, _ in model.named_parameters())


def test_model_rejects_missing_modality_and_empty_set():
    model = MultimodalModel(["video", "audio"], 3, ModelConfig(width=4), with_projectors=False)
    with pytest.raises(KeyError, match="lacks modalities"):
        model(make_inputs(["video"]))
    with pytest.raises(ValueError, match="at least one modality"):
        MultimodalModel([], 3, ModelConfig(), with_projectors=False)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_registered_encoder_embeds(name):
    # Pretrained backbones have a fixed width and, without a checkpoint, must train every stage.
    encoder = build_encoder(name, embed_dim=10, width=4, trainable_from="stem")
    is_backbone = isinstance(encoder, Backbone)
    modality = encoder.modality if is_backbone else name.split("_")[0]
    output = encoder(make_inputs([modality], batch=2)[modality])
    assert output.shape == (2, encoder.embed_dim if is_backbone else 10)


def small_model(trainable_from: str, freeze_bn_stats: bool = True) -> MultimodalModel:
    config = ModelConfig(embed_dim=8, width=2, fusion_hidden=8, projector_hidden=8, projection_dim=4,
                         trainable_from=trainable_from, freeze_bn_stats=freeze_bn_stats)
    return MultimodalModel(["video", "audio"], 3, config, with_projectors=True)


def test_trainable_from_head_freezes_small_encoders():
    model = small_model("head")
    assert model.frozen_encoders == ["video", "audio"]
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert all(p.requires_grad for p in [*model.head.parameters(), *model.projectors.parameters()])
    model.train()
    assert model.training and model.head.training
    assert not any(module.training for encoder in model.encoders.values() for module in encoder.modules())


def test_frozen_small_encoders_stay_fixed_in_training():
    model = small_model("head")
    before = {name: tensor.clone() for name, tensor in model.encoders.state_dict().items()}
    inputs = make_inputs(["video", "audio"])
    model.train()
    output = model(inputs)
    (output.logits.sum() + sum(p.sum() for p in output.projections.values())).backward()
    assert all(p.grad is None for p in model.encoders.parameters())
    # BatchNorm running statistics are buffers: eval mode keeps them too.
    for name, tensor in model.encoders.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_frozen_small_encoders_can_update_bn_stats():
    model = small_model("head", freeze_bn_stats=False)
    model.train()
    assert all(module.training for encoder in model.encoders.values() for module in encoder.modules())
    before = model.encoders["video"].features[0][1].running_mean.clone()
    model(make_inputs(["video", "audio"]))
    assert not torch.equal(model.encoders["video"].features[0][1].running_mean, before)


@pytest.mark.parametrize("stage", ["stem", "layer4"])
def test_other_stages_train_small_encoders_entirely(stage):
    model = small_model(stage)
    assert model.frozen_encoders == []
    assert all(p.requires_grad for p in model.encoders.parameters())
