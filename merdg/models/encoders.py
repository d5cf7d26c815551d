"""Per-modality encoders, registered by name.

The small convolutional encoders here train on a laptop CPU; they are the default for the
embedded benchmark. Every encoder maps its modality's input tensor to an embedding (B, embed_dim).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ENCODERS: dict[str, Callable[..., nn.Module]] = {}
"""Encoder builders by name; each takes keyword-only ``embed_dim`` and ``width``."""

DEFAULT_ENCODERS = {"video": "video_cnn", "audio": "audio_cnn", "flow": "flow_cnn"}
"""The encoder each modality uses unless the configuration names another."""


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an encoder builder under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        ENCODERS[name] = builder
        return builder

    return decorator


def build_encoder(name: str, *, embed_dim: int, width: int) -> nn.Module:
    """Build the encoder registered as ``name``."""
    if name not in ENCODERS:
        raise KeyError(f"unknown encoder {name!r}; registered: {sorted(ENCODERS)}")
    return ENCODERS[name](embed_dim=embed_dim, width=width)


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
