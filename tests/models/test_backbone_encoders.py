"""Paper backbones chosen per modality through ModelConfig: registry, checkpoints, widths and flag validation."""

from __future__ import annotations

import pytest
import torch

from merdg.cli import parse_job
from merdg.config import ConfigError, ModelConfig
from merdg.models import DEFAULT_ENCODERS, MultimodalModel, build_encoder
from merdg.models.backbones import TRAINABLE_FROM_CHOICES, ResNet18Audio, checkpoint_state_dict

SMALL = {"embed_dim": 16, "width": 4, "projector_hidden": 16, "projection_dim": 8, "fusion_hidden": 16}


@pytest.fixture(scope="module")
def audio_checkpoint(tmp_path_factory) -> tuple[dict[str, torch.Tensor], str]:
    """A file in the H.pth.tar layout, holding the tensors of a ResNet18Audio, and those tensors."""
    torch.manual_seed(11)
    source = ResNet18Audio()
    state = checkpoint_state_dict(source)
    state["audnet.fc.weight"] = torch.zeros(309, 512)
    state["audnet.fc.bias"] = torch.zeros(309)
    path = tmp_path_factory.mktemp("checkpoints") / "H.pth.tar"
    torch.save({"epoch": 1, "model_state_dict": state}, path)
    return state, str(path)


def test_default_encoders_are_the_small_ones():
    assert ModelConfig().encoders == DEFAULT_ENCODERS
    assert ModelConfig().strict_load
    assert ModelConfig().freeze_bn_stats
    assert ModelConfig().trainable_from == "layer4"


def test_trainable_from_choices_match_backbones():
    for stage in TRAINABLE_FROM_CHOICES:
        assert ModelConfig(trainable_from=stage).trainable_from == stage
    with pytest.raises(ConfigError, match="--model.trainable_from: unknown stage 'layer5'") as raised:
        ModelConfig(trainable_from="layer5")
    assert str(raised.value).endswith(f"choose from {list(TRAINABLE_FROM_CHOICES)}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"encoders": {"depth": "video_cnn"}}, "--model.encoders: unknown modality"),
        ({"encoders": {"audio": ""}}, "--model.encoders: no encoder name"),
        ({"checkpoints": {"sound": "H.pth.tar"}}, "--model.checkpoints: unknown modality"),
    ],
)
def test_model_config_rejects_bad_backbone_flags(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**fields)


def test_flags_parse_into_model_config(tmp_path):
    checkpoint = tmp_path / "H.pth.tar"
    job = parse_job(
        [
            "--model.encoders", "{audio: resnet18_audio}",
            "--model.checkpoints", f"{{audio: {checkpoint}}}",
            "--model.strict_load", "false",
            "--model.freeze_bn_stats", "false",
            "--model.trainable_from", "layer3",
        ],
        prog="test",
    )
    assert job.model.encoders == {"audio": "resnet18_audio"}
    assert job.model.checkpoints == {"audio": checkpoint}
    assert not job.model.strict_load
    assert not job.model.freeze_bn_stats
    assert job.model.trainable_from == "layer3"


def test_model_takes_width_from_backbone():
    config = ModelConfig(encoders={"audio": "resnet18_audio"}, trainable_from="stem", **SMALL)
    model = MultimodalModel(["video", "audio"], num_classes=3, config=config, with_projectors=True)
    inputs = {"video": torch.randn(2, 3, 4, 16, 16), "audio": torch.randn(2, 1, 64, 64)}

    output = model(inputs)

    assert model.embed_dims == {"video": 16, "audio": 512}
    assert output.embeddings["audio"].shape == (2, 512)
    assert output.projections["audio"].shape == (2, 8)
    assert model.head.layers[0].in_features == 16 + 512
    assert model.projectors["audio"].layers[0].in_features == 512
    assert output.logits.shape == (2, 3)


def test_model_loads_checkpoint_and_freezes_early_stages(audio_checkpoint):
    state, path = audio_checkpoint
    config = ModelConfig(encoders={"audio": "resnet18_audio"}, checkpoints={"audio": path}, **SMALL)
    model = MultimodalModel(["audio"], num_classes=3, config=config, with_projectors=False)
    encoder = model.encoders["audio"]

    loaded = checkpoint_state_dict(encoder)
    assert all(torch.equal(tensor, state[name]) for name, tensor in loaded.items())
    assert all(p.requires_grad for p in encoder.layer4.parameters())
    assert not any(p.requires_grad for p in encoder.layer3.parameters())
    assert not any(p.requires_grad for p in encoder.conv1.parameters())
    model.train()
    assert model.head.training
    assert encoder.layer4[0].bn1.training
    assert not encoder.layer1[0].bn1.training


def test_model_builds_default_encoders_when_unlisted():
    config = ModelConfig(encoders={"video": "video_cnn"}, **SMALL)
    model = MultimodalModel(["video", "flow"], num_classes=3, config=config, with_projectors=False)
    assert model.embed_dims == {"video": 16, "flow": 16}


def test_checkpoint_for_small_encoder_is_rejected(audio_checkpoint):
    _, path = audio_checkpoint
    with pytest.raises(ConfigError, match="--model.checkpoints: encoder 'audio_cnn' is not a pretrained backbone"):
        build_encoder("audio_cnn", embed_dim=8, width=4, modality="audio", checkpoint=path)


def test_backbone_for_other_modality_is_rejected():
    with pytest.raises(ConfigError, match="--model.encoders: 'resnet18_audio' encodes audio, not video"):
        build_encoder("resnet18_audio", embed_dim=8, width=4, modality="video", trainable_from="stem")


def test_backbone_without_checkpoint_must_train_every_stage():
    with pytest.raises(ConfigError, match="no checkpoint.*H.pth.tar.*--model.trainable_from stem"):
        build_encoder("resnet18_audio", embed_dim=8, width=4, modality="audio")


def test_strict_load_flag_reaches_the_loader(audio_checkpoint, tmp_path):
    state, _ = audio_checkpoint
    partial = {name: tensor for name, tensor in state.items() if not name.startswith("audnet.layer4.")}
    path = tmp_path / "H.pth.tar"
    torch.save({"model_state_dict": partial}, path)
    strict = ModelConfig(encoders={"audio": "resnet18_audio"}, checkpoints={"audio": path}, **SMALL)
    with pytest.raises(ValueError, match="missing from the file"):
        MultimodalModel(["audio"], num_classes=3, config=strict, with_projectors=False)
    lenient = ModelConfig(
        encoders={"audio": "resnet18_audio"}, checkpoints={"audio": path}, strict_load=False, **SMALL
    )
    model = MultimodalModel(["audio"], num_classes=3, config=lenient, with_projectors=False)
    assert torch.equal(model.encoders["audio"].conv1.weight, state["audnet.conv1.weight"])
