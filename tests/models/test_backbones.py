"""Paper backbones: tensor names against the published checkpoints, strict loading, widths, partial fine-tuning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from merdg.models import DEFAULT_ENCODERS, ENCODERS, build_encoder
from merdg.models.backbones import (
    BACKBONE_STAGES,
    Backbone,
    CheckpointError,
    CheckpointMismatchError,
    checkpoint_state_dict,
    load_backbone_checkpoint,
    load_backbone_state,
)

# Registered name -> (inventory file, pooled width, a small input consistent with the strides).
# SlowFast needs a frame count that is a multiple of 4; 32 pixels give 1 x 1 final feature maps.
BACKBONES = {
    "slowfast_r101": ("slowfast_r101_8x8x1_kinetics400_rgb.json", 2304, (2, 3, 4, 32, 32)),
    "slowonly_r50_flow": ("slowonly_r50_8x8x1_kinetics400_flow.json", 2048, (2, 2, 2, 32, 32)),
    "resnet18_audio": ("vggsound_resnet18_H.json", 512, (2, 1, 64, 64)),
}
NAMES = sorted(BACKBONES)


@pytest.fixture(scope="module")
def backbones() -> dict[str, Backbone]:
    """Each backbone, built once for this module, with every stage trainable; tests overwrite its tensors."""
    return {name: build_encoder(name, embed_dim=1, width=1, trainable_from="stem") for name in NAMES}


@pytest.fixture(scope="module")
def initial_states(backbones) -> dict[str, dict[str, torch.Tensor]]:
    """A copy of each backbone's tensors at random initialisation, for tests that run the backbone."""
    return {name: {key: t.clone() for key, t in backbone.state_dict().items()} for name, backbone in backbones.items()}


@pytest.fixture
def initialized(backbones, initial_states):
    """Return a function that resets a backbone to its initial tensors and every stage trainable."""

    def reset(name: str) -> Backbone:
        backbone = backbones[name]
        backbone.load_state_dict(initial_states[name])
        backbone.set_trainable_from("stem", freeze_bn_stats=True)
        return backbone

    return reset


@pytest.fixture(scope="module")
def inventories(shared_data: Path) -> Path:
    """The folder of JSON inventories of the published checkpoints' tensors."""
    folder = shared_data / "checkpoint-inventories"
    if not folder.is_dir():
        pytest.skip(f"checkpoint inventories not found at {folder}")
    return folder


def make_input(name: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(*BACKBONES[name][2], generator=torch.Generator().manual_seed(seed))


def randomize_(backbone: Backbone, seed: int) -> dict[str, torch.Tensor]:
    """Fill every tensor of the state dict with fresh values (positive variances) and return a copy of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in backbone.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator).sub_(0.5).mul_(0.2))
            else:
                tensor.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
    return {name: tensor.clone() for name, tensor in backbone.state_dict().items()}


def clear_(backbone: Backbone) -> None:
    """Set every tensor of the state dict to a constant that no randomized tensor equals."""
    with torch.no_grad():
        for tensor in backbone.state_dict().values():
            tensor.fill_(7)


def head_tensors(backbone: Backbone) -> dict[str, torch.Tensor]:
    """Classifier-head tensors as the published files hold them (400 Kinetics or 309 VGGSound classes)."""
    head_prefix = backbone.checkpoint_format.head_prefixes[0]
    if head_prefix == "cls_head.":
        return {"cls_head.fc_cls.weight": torch.zeros(400, backbone.embed_dim), "cls_head.fc_cls.bias": torch.zeros(400)}
    return {f"{head_prefix}weight": torch.zeros(309, backbone.embed_dim), f"{head_prefix}bias": torch.zeros(309)}


def save_published(backbone: Backbone, path: Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``state`` (default: the backbone's tensors plus a head) wrapped as the published file is."""
    if state is None:
        state = {**checkpoint_state_dict(backbone), **head_tensors(backbone)}
    checkpoint_format = backbone.checkpoint_format
    if checkpoint_format.project == "mmaction2":
        wrapped = {"meta": {"mmcv_version": "1.3.0", "epoch": 256}, checkpoint_format.state_dict_key: state}
    else:
        wrapped = {"epoch": 1, checkpoint_format.state_dict_key: state}
    torch.save(wrapped, path)
    return path


def test_every_registered_backbone_is_tested(backbones):
    assert set(ENCODERS) - set(DEFAULT_ENCODERS.values()) == set(BACKBONES)
    assert all(isinstance(backbone, Backbone) for backbone in backbones.values())


@pytest.mark.parametrize("name", NAMES)
def test_tensor_names_match_inventory(name, backbones, inventories):
    backbone = backbones[name]
    inventory_file, _, _ = BACKBONES[name]
    tensors = json.loads((inventories / inventory_file).read_text())["tensors"]
    head_prefixes = backbone.checkpoint_format.head_prefixes
    expected = {key: entry for key, entry in tensors.items() if not key.startswith(head_prefixes)}
    ours = checkpoint_state_dict(backbone)

    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert list(ours) == list(expected)
    assert {key: list(t.shape) for key, t in ours.items()} == {key: e["shape"] for key, e in expected.items()}
    assert {key: str(t.dtype).removeprefix("torch.") for key, t in ours.items()} == {
        key: e["dtype"] for key, e in expected.items()
    }
    prefix = backbone.checkpoint_format.prefix
    parameters = {prefix + key for key, _ in backbone.named_parameters()}
    kinds = {key: "param" if key in parameters else "buffer" for key in ours}
    assert kinds == {key: e["kind"] for key, e in expected.items()}
    head = [key for key in tensors if key.startswith(head_prefixes)]
    assert len(head) == 2


@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_pooled_width(name, initialized):
    backbone = initialized(name).eval()
    with torch.no_grad():
        output = backbone(make_input(name))
    assert output.shape == (2, BACKBONES[name][1])
    assert backbone.embed_dim == BACKBONES[name][1]
    assert torch.isfinite(output).all()


def test_slowfast_embedding_is_fast_then_slow(initialized):
    backbone = initialized("slowfast_r101").eval()
    silence = backbone.fast_path.layer4.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
    try:
        with torch.no_grad():
            output = backbone(make_input("slowfast_r101"))
    finally:
        silence.remove()
    assert torch.count_nonzero(output[:, :256]) == 0
    assert torch.count_nonzero(output[:, 256:]) > 0


def test_slowfast_rejects_frames_not_multiple_of_4(backbones):
    with pytest.raises(ValueError, match="multiple of 4; got T=6"):
        backbones["slowfast_r101"](torch.zeros(1, 3, 6, 32, 32))


@pytest.mark.parametrize("name", NAMES)
def test_forward_rejects_wrong_channels(name, backbones):
    shape = list(BACKBONES[name][2])
    shape[1] += 1
    with pytest.raises(ValueError, match="expects"):
        backbones[name](torch.zeros(shape))


@pytest.mark.parametrize("name", NAMES)
def test_published_format_round_trip(name, backbones, tmp_path, caplog):
    backbone = backbones[name]
    saved = randomize_(backbone, seed=1)
    path = save_published(backbone, tmp_path / backbone.checkpoint_format.published_file)
    clear_(backbone)

    with caplog.at_level(logging.INFO, logger="merdg.models.backbones.checkpoints"):
        report = load_backbone_checkpoint(backbone, path)

    assert report.complete
    assert len(report.loaded) == len(saved)
    assert sorted(report.dropped_head) == sorted(head_tensors(backbone))
    assert "dropped 2 classifier-head tensors" in caplog.text
    mismatched = [key for key, tensor in backbone.state_dict().items() if not torch.equal(tensor, saved[key])]
    assert mismatched == []


@pytest.fixture
def audio_file(backbones, tmp_path) -> tuple[Backbone, dict[str, torch.Tensor], Path]:
    """The audio backbone, its tensors under the file's names, and a path to write a variant of them to."""
    backbone = backbones["resnet18_audio"]
    randomize_(backbone, seed=3)
    state = {**checkpoint_state_dict(backbone), **head_tensors(backbone)}
    return backbone, {key: tensor.clone() for key, tensor in state.items()}, tmp_path / "H.pth.tar"


@pytest.mark.parametrize(
    ("change", "category", "key"),
    [
        ("drop", "missing from the file (1)", "audnet.layer4.1.conv2.weight"),
        ("add", "unexpected in the file (1)", "audnet.layer5.0.conv1.weight"),
        ("reshape", "wrong shape (1)", "audnet.layer2.0.conv1.weight"),
    ],
)
def test_strict_load_names_file_and_keys(audio_file, change, category, key):
    backbone, state, path = audio_file
    if change == "drop":
        del state[key]
    elif change == "add":
        state[key] = torch.zeros(3)
    else:
        state[key] = torch.zeros(128, 64, 5, 5)
    save_published(backbone, path, state)
    clear_(backbone)
    before = {name: tensor.clone() for name, tensor in backbone.state_dict().items()}

    with pytest.raises(CheckpointMismatchError) as raised:
        load_backbone_checkpoint(backbone, path)

    message = str(raised.value)
    assert str(path) in message
    assert category in message
    assert key in message
    assert "H.pth.tar" in message
    if change == "reshape":
        assert "file [128, 64, 5, 5], backbone [128, 64, 3, 3]" in message
    unchanged = all(torch.equal(tensor, before[name]) for name, tensor in backbone.state_dict().items())
    assert unchanged


def test_non_strict_load_logs_tensors_left_random(audio_file, caplog):
    backbone, state, path = audio_file
    layer4 = [key for key in state if key.startswith("audnet.layer4.")]
    for key in layer4:
        del state[key]
    save_published(backbone, path, state)
    clear_(backbone)
    left = {key: tensor.clone() for key, tensor in backbone.layer4.state_dict().items()}

    with caplog.at_level(logging.WARNING, logger="merdg.models.backbones.checkpoints"):
        report = load_backbone_checkpoint(backbone, path, strict=False)

    assert sorted(report.missing) == sorted(layer4)
    assert "missing from the file (30)" in caplog.text
    assert "audnet.layer4.0.conv1.weight" in caplog.text
    assert torch.equal(backbone.conv1.weight, state["audnet.conv1.weight"])
    assert all(torch.equal(tensor, left[key]) for key, tensor in backbone.layer4.state_dict().items())


def test_bare_and_ddp_prefixed_state_dicts_load(audio_file):
    backbone, state, path = audio_file
    bare = {key: tensor for key, tensor in state.items()}
    ddp = {f"module.{key}": tensor for key, tensor in state.items()}
    for variant in (bare, ddp):
        clear_(backbone)
        torch.save(variant, path)
        assert load_backbone_checkpoint(backbone, path).complete
        assert torch.equal(backbone.conv1.weight, state["audnet.conv1.weight"])


def test_checkpoint_of_other_backbone_is_rejected(backbones, tmp_path):
    path = save_published(backbones["resnet18_audio"], tmp_path / "H.pth.tar")
    with pytest.raises(CheckpointError, match="has no 'state_dict' entry.*'model_state_dict'"):
        load_backbone_checkpoint(backbones["slowonly_r50_flow"], path)


class _NotATensor:
    """An object that ``torch.load(weights_only=True)`` rejects."""


def test_pickled_objects_rejected_with_fix(audio_file):
    backbone, state, path = audio_file
    torch.save({"model_state_dict": state, "args": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="weights_only=False") as raised:
        load_backbone_checkpoint(backbone, path)
    assert str(path) in str(raised.value)
    trusted = torch.load(path, map_location="cpu", weights_only=False)
    assert load_backbone_state(backbone, trusted, source=str(path)).complete


def test_missing_and_corrupt_files_are_reported(backbones, tmp_path):
    backbone = backbones["resnet18_audio"]
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_backbone_checkpoint(backbone, tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_backbone_checkpoint(backbone, corrupt)


@pytest.mark.parametrize("name", NAMES)
def test_stages_partition_every_tensor(name, backbones):
    backbone = backbones[name]
    stages = backbone.stage_modules()
    assert tuple(stages) == BACKBONE_STAGES
    owned = [
        id(tensor)
        for modules in stages.values()
        for module in modules
        for tensor in module.state_dict(keep_vars=True).values()
    ]
    everything = [id(tensor) for tensor in backbone.state_dict(keep_vars=True).values()]
    assert len(owned) == len(set(owned))
    assert set(owned) == set(everything)


def batch_norm_stats(modules: list[torch.nn.Module]) -> list[torch.Tensor]:
    return [
        module.running_mean.clone()
        for stage_module in modules
        for module in stage_module.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_layer4_alone_gets_gradients(name, initialized):
    backbone = initialized(name)
    backbone.set_trainable_from("layer4", freeze_bn_stats=True)
    backbone.train()
    backbone.zero_grad(set_to_none=True)

    backbone(make_input(name)).sum().backward()

    stages = backbone.stage_modules()
    for stage, modules in stages.items():
        parameters = [p for module in modules for p in module.parameters()]
        if stage == "layer4":
            assert all(p.requires_grad for p in parameters)
            assert all(p.grad is not None for p in parameters)
        else:
            assert not any(p.requires_grad for p in parameters), stage
            assert all(p.grad is None for p in parameters), stage


@pytest.mark.parametrize("freeze_bn_stats", [True, False], ids=["frozen-stats", "peers-updated-stats"])
@pytest.mark.parametrize("name", NAMES)
def test_frozen_stages_batch_norm_statistics(name, freeze_bn_stats, initialized):
    backbone = initialized(name)
    backbone.set_trainable_from("layer4", freeze_bn_stats=freeze_bn_stats)
    backbone.eval()
    backbone.train()
    stages = backbone.stage_modules()
    frozen_modules = [module for stage in BACKBONE_STAGES[:-1] for module in stages[stage]]
    frozen_before = batch_norm_stats(frozen_modules)
    layer4_before = batch_norm_stats(stages["layer4"])

    with torch.no_grad():
        backbone(make_input(name, seed=7))

    frozen_after = batch_norm_stats(frozen_modules)
    layer4_after = batch_norm_stats(stages["layer4"])
    unchanged = [torch.equal(a, b) for a, b in zip(frozen_before, frozen_after)]
    if freeze_bn_stats:
        assert all(unchanged)
    else:
        assert not any(unchanged)
    assert not any(torch.equal(a, b) for a, b in zip(layer4_before, layer4_after))


@pytest.mark.parametrize(("stage", "trainable"), [("stem", 5), ("layer3", 2), ("head", 0)])
def test_trainable_from_counts_stages(stage, trainable, backbones):
    backbone = backbones["resnet18_audio"]
    backbone.set_trainable_from(stage, freeze_bn_stats=True)
    stages = backbone.stage_modules()
    trains = [name for name, modules in stages.items() if all(p.requires_grad for m in modules for p in m.parameters())]
    assert len(trains) == trainable
    assert backbone.frozen_stages == BACKBONE_STAGES[: 5 - trainable]
    with pytest.raises(ValueError, match="invalid trainable_from stage 'layer5'"):
        backbone.set_trainable_from("layer5", freeze_bn_stats=True)
    backbone.set_trainable_from("stem", freeze_bn_stats=True)
