"""Per-modality encoders, registered by name.

The small convolutional encoders here train on a laptop CPU; they are the default for the
embedded benchmark. The MER-DG paper's pretrained backbones (``merdg.models.backbones``) are
registered here too. Every encoder maps its modality's input tensor to an embedding
(B, encoder.embed_dim).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from merdg.config import ConfigError
from merdg.models.backbones import (
    Backbone,
    ResNet18Audio,
    SlowFastR101,
    SlowOnlyR50Flow,
    load_backbone_checkpoint,
)

ENCODERS: dict[str, Callable[..., nn.Module]] = {}
"""Encoder builders by name; each takes keyword-only ``embed_dim`` and ``width`` and returns a
module with an ``embed_dim`` attribute, the width of its output."""

DEFAULT_ENCODERS = {"video": "video_cnn", "audio": "audio_cnn", "flow": "flow_cnn"}
"""The encoder each modality uses unless the configuration names another."""


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an encoder builder under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ENCODERS[name] = builder
        return builder

    return decorator


def build_encoder(
    name: str,
    *,
    embed_dim: int,
    width: int,
    modality: str | None = None,
    checkpoint: Path | None = None,
    strict_load: bool = True,
    freeze_bn_stats: bool = True,
    trainable_from: str = "layer4",
) -> nn.Module:
    """Build the encoder registered as ``name``; for a pretrained backbone, load and partly freeze it.

    ``embed_dim`` and ``width`` size the small CPU encoders; a backbone has a fixed width. A
    backbone loads ``checkpoint`` (strictly unless ``strict_load`` is false) and freezes its stages
    before ``trainable_from`` (see ``Backbone.set_trainable_from``). Without a checkpoint it must
    train every stage (``trainable_from="stem"``), since frozen random stages would encode nothing.
    ``modality``, when given, must be the one a backbone encodes.
    """
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; registered: {sorted(ENCODERS)}")
    encoder = ENCODERS[name](embed_dim=embed_dim, width=width)
    if not isinstance(getattr(encoder, "embed_dim", None), int):
        raise TypeError(f"encoder {name!r} has no integer attribute embed_dim giving its output width")
    if not isinstance(encoder, Backbone):
        if checkpoint is not None:
            raise ConfigError(
                f"invalid --model.checkpoints: encoder {name!r} is not a pretrained backbone and loads no "
                f"checkpoint ({checkpoint}); choose a backbone in --model.encoders or remove the checkpoint"
            )
        return encoder

    if modality is not None and encoder.modality != modality:
        raise ConfigError(
            f"invalid --model.encoders: {name!r} encodes {encoder.modality}, not {modality}; "
            f"choose an encoder for {modality}"
        )
    if checkpoint is not None:
        load_backbone_checkpoint(encoder, checkpoint, strict=strict_load)
    elif trainable_from != "stem":
        raise ConfigError(
            f"invalid --model.checkpoints: backbone {name!r} has no checkpoint, so its stages before "
            f"{trainable_from} would stay frozen at random initialisation; pass the path of "
            f"{encoder.checkpoint_format.published_file} or set --model.trainable_from stem to train it from scratch"
        )
    encoder.set_trainable_from(trainable_from, freeze_bn_stats=freeze_bn_stats)
    return encoder


def _conv3d_stage(in_channels: int, out_channels: int, temporal_stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=(temporal_stride, 2, 2), padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def _conv2d_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Clip3dEncoder(nn.Module):
    """Three strided 3-D convolution stages, global average pooling and a linear embedding.

    Input (B, C, T, H, W); output (B, embed_dim). Channels grow width, 2 width, 4 width; space is
    halved at every stage and time at the last two.
    """

    def __init__(self, *, in_channels: int, embed_dim: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            _conv3d_stage(in_channels, width, temporal_stride=1),
            _conv3d_stage(width, 2 * width, temporal_stride=2),
            _conv3d_stage(2 * width, 4 * width, temporal_stride=2),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
        )
        self.embed = nn.Linear(4 * width, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.embed(self.features(x))


class Spectrogram2dEncoder(nn.Module):
    """Three strided 2-D convolution stages over a log spectrogram, pooled and embedded.

    Input (B, 1, F, T); output (B, embed_dim).
    """

    def __init__(self, *, embed_dim: int, width: int):
        super().__init__()
        self.features = nn.Sequential(
            _conv2d_stage(1, width),
            _conv2d_stage(width, 2 * width),
            _conv2d_stage(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.embed = nn.Linear(4 * width, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x):
        return self.embed(self.features(x))


@register_encoder("video_cnn")
def video_cnn(*, embed_dim: int, width: int) -> nn.Module:
    """Small 3-D CNN over RGB clips (B, 3, T, H, W)."""
    return Clip3dEncoder(in_channels=3, embed_dim=embed_dim, width=width)


@register_encoder("flow_cnn")
def flow_cnn(*, embed_dim: int, width: int) -> nn.Module:
    """Small 3-D CNN over optical-flow clips (B, 2, T, H, W), x and y as channels."""
    return Clip3dEncoder(in_channels=2, embed_dim=embed_dim, width=width)


@register_encoder("audio_cnn")
def audio_cnn(*, embed_dim: int, width: int) -> nn.Module:
    """Small 2-D CNN over log spectrograms (B, 1, F, T)."""
    return Spectrogram2dEncoder(embed_dim=embed_dim, width=width)


@register_encoder("slowfast_r101")
def slowfast_r101(*, embed_dim: int, width: int) -> nn.Module:
    """SlowFast R101 8x8 over RGB clips (B, 3, T, H, W), T a multiple of 4; 2304-d whatever ``embed_dim`` and ``width``."""
    return SlowFastR101()


@register_encoder("slowonly_r50_flow")
def slowonly_r50_flow(*, embed_dim: int, width: int) -> nn.Module:
    """SlowOnly R50 8x8 over optical-flow clips (B, 2, T, H, W); 2048-d whatever ``embed_dim`` and ``width``."""
    return SlowOnlyR50Flow()


@register_encoder("resnet18_audio")
def resnet18_audio(*, embed_dim: int, width: int) -> nn.Module:
    """VGGSound ResNet-18 over log spectrograms (B, 1, F, frames); 512-d whatever ``embed_dim`` and ``width``."""
    return ResNet18Audio()
