"""3-D ResNet pathways with bottleneck blocks, the building blocks of SlowFast and SlowOnly.

The design is ResNet-50/101 (He et al., 2016) with its bottleneck blocks inflated to 3-D as in
SlowFast (Feichtenhofer et al., ICCV 2019): the first 1x1 convolution of a block becomes 3x1x1 in
"inflated" stages, the 3x3 convolution becomes 1x3x3, and time is never strided. Attribute names
give the tensor names of mmaction2's ResNet3d checkpoints (``conv1.conv.weight``,
``layer3.0.conv2.bn.running_var``, ``layer1_lateral.conv.weight``), so their state dicts load
without renaming. Every convolution has no bias and is followed by BatchNorm (eps 1e-5, momentum
0.1), as in mmaction2's configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
"""Bottleneck blocks per stage of each ResNet depth."""

BOTTLENECK_EXPANSION = 4
"""Output channels of a bottleneck block over its inner width."""

SPATIAL_STRIDES = (1, 2, 2, 2)
"""Spatial stride of the first block of each stage; with the stem, space shrinks 32-fold."""


class ConvBN3d(nn.Module):
    """Conv3d without bias, BatchNorm3d, and ReLU when ``activation`` is set; tensors ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        activation: bool,
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.bn(self.conv(x)))


class Bottleneck3d(nn.Module):
    """1x1x1 (or 3x1x1 when inflated), 1x3x3 and 1x1x1 convolutions with a residual connection.

    The spatial stride is in the 1x3x3 convolution. The shortcut is a strided 1x1x1 convolution
    with BatchNorm (``downsample``) when the stride or the channel count changes.
    """

    def __init__(self, in_channels: int, planes: int, *, spatial_stride: int, inflate: bool):
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        temporal_kernel = 3 if inflate else 1
        self.conv1 = ConvBN3d(
            in_channels, planes, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), activation=True
        )
        self.conv2 = ConvBN3d(
            planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride), padding=(0, 1, 1), activation=True
        )
        self.conv3 = ConvBN3d(planes, out_channels, (1, 1, 1), activation=False)
        self.downsample: ConvBN3d | None = None
        if spatial_stride != 1 or in_channels != out_channels:
            self.downsample = ConvBN3d(
                in_channels, out_channels, (1, 1, 1), stride=(1, spatial_stride, spatial_stride), activation=False
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


@dataclass(frozen=True)
class LateralConfig:
    """Lateral connections from a fast pathway into a slow one (SlowFast).

    The fast pathway has ``1 / channel_ratio`` of the slow pathway's channels and ``speed_ratio``
    times its frames. Each lateral connection is a ``fusion_kernel`` x 1 x 1 convolution with
    temporal stride ``speed_ratio`` (no BatchNorm, no bias) that doubles the fast channels. Its
    output is concatenated to the slow features after the stem and after stages 1 to 3.
    """

    speed_ratio: int
    channel_ratio: int
    fusion_kernel: int


class LateralConnection(nn.Module):
    """A time-strided convolution from fast-pathway features to extra slow-pathway channels; tensor ``conv.weight``."""

    def __init__(self, slow_channels: int, lateral: LateralConfig):
        super().__init__()
        fast_channels = slow_channels // lateral.channel_ratio
        self.conv = nn.Conv3d(
            fast_channels,
            2 * fast_channels,
            (lateral.fusion_kernel, 1, 1),
            stride=(lateral.speed_ratio, 1, 1),
            padding=((lateral.fusion_kernel - 1) // 2, 0, 0),
            bias=False,
        )

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        return self.conv(fast)


class ResNet3d(nn.Module):
    """Stem (``conv1``, ``maxpool``) and four bottleneck stages (``layer1`` to ``layer4``) of a 3-D ResNet.

    Input (B, in_channels, T, H, W); output (B, 32 * base_channels, T, ceil(H / 32), ceil(W / 32)).
    The stem is a 1x7x7 (or ``conv1_temporal_kernel`` x 7 x 7) convolution with spatial stride 2 and
    a 1x3x3 max pool with spatial stride 2. ``inflate`` sets per stage whether its blocks use 3x1x1
    first convolutions. With ``lateral`` set, the pathway also contains the lateral connections
    ``conv1_lateral`` and ``layer1_lateral`` to ``layer3_lateral``, and each stage takes the extra
    lateral channels as input; ``SlowFastR101`` then drives the pathways together.
    """

    def __init__(
        self,
        *,
        depth: int,
        in_channels: int,
        base_channels: int,
        conv1_temporal_kernel: int,
        inflate: tuple[bool, bool, bool, bool],
        lateral: LateralConfig | None = None,
    ):
        super().__init__()
        if depth not in STAGE_BLOCKS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(STAGE_BLOCKS)}")
        self.has_lateral = lateral is not None
        self.conv1 = ConvBN3d(
            in_channels,
            base_channels,
            (conv1_temporal_kernel, 7, 7),
            stride=(1, 2, 2),
            padding=((conv1_temporal_kernel - 1) // 2, 3, 3),
            activation=True,
        )
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

        channels = base_channels
        lateral_inputs = {"conv1": channels}
        for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            stage = index + 1
            planes = base_channels * 2**index
            in_channels_first = channels + (2 * channels // lateral.channel_ratio if lateral is not None else 0)
            blocks = [
                Bottleneck3d(
                    in_channels_first if block == 0 else planes * BOTTLENECK_EXPANSION,
                    planes,
                    spatial_stride=SPATIAL_STRIDES[index] if block == 0 else 1,
                    inflate=inflate[index],
                )
                for block in range(num_blocks)
            ]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            channels = planes * BOTTLENECK_EXPANSION
            if stage < 4:
                lateral_inputs[f"layer{stage}"] = channels
        self.out_channels = channels

        # Registered after the stages so that the state dict lists tensors in the checkpoint's order.
        if lateral is not None:
            for name, slow_channels in lateral_inputs.items():
                self.add_module(f"{name}_lateral", LateralConnection(slow_channels, lateral))

    def stage(self, index: int) -> nn.Sequential:
        """Return the bottleneck stage ``layer{index}``, index 1 to 4."""
        return getattr(self, f"layer{index}")

    def lateral(self, name: str) -> LateralConnection:
        """Return the lateral connection after the stem ("conv1") or after a stage ("layer1" to "layer3")."""
        return getattr(self, f"{name}_lateral")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``conv1`` and ``maxpool``."""
        return self.maxpool(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map of ``layer4``; only for a pathway without lateral inputs."""
        if self.has_lateral:
            raise RuntimeError("a pathway with lateral connections needs the fast pathway's features; run it in SlowFastR101")
        x = self.forward_stem(x)
        for index in range(1, 5):
            x = self.stage(index)(x)
        return x


def check_clip(x: torch.Tensor, *, channels: int, frames_multiple: int, backbone: str) -> None:
    """Raise ValueError unless ``x`` is (B, channels, T, H, W) with T a positive multiple of ``frames_multiple``."""
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{backbone} expects clips of shape (B, {channels}, T, H, W); got {tuple(x.shape)}")
    frames = x.shape[2]
    if frames < frames_multiple or frames % frames_multiple:
        raise ValueError(
            f"{backbone} needs a frame count that is a positive multiple of {frames_multiple}; got T={frames} "
            f"in a clip of shape {tuple(x.shape)}: sample {frames_multiple * max(1, frames // frames_multiple)} frames"
        )
