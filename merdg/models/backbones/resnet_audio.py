"""ResNet-18 over log spectrograms: the MER-DG audio encoder (VGGSound model "H"), 512-d.

The architecture is the ResNet-18 of He et al. (2016) with a 1-channel stem, as trained on
VGG-Sound by Chen et al. (ICASSP 2020) and published as ``H.pth.tar`` (ResNet-18, average
pooling, 309 classes). The tensor names are those of that file without its ``audnet.`` prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from merdg.models.backbones.base import Backbone, CheckpointFormat

VGGSOUND_H_CHECKPOINT = CheckpointFormat(
    project="VGGSound",
    published_file="H.pth.tar",
    state_dict_key="model_state_dict",
    prefix="audnet.",
    head_prefixes=("audnet.fc.",),
)
"""VGGSound stores the weights under 'model_state_dict'; the 309-class classifier (``audnet.fc``) is dropped."""

STAGE_CHANNELS = (64, 128, 256, 512)
"""Output channels of the four stages."""


class BasicBlock2d(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a residual connection (ResNet-18's block).

    The stride is in the first convolution. The shortcut ``downsample``, a strided 1x1 convolution
    and BatchNorm (tensors ``downsample.0.*`` and ``downsample.1.*``), exists when the stride or
    the channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet18Audio(Backbone):
    """VGGSound ResNet-18: input (B, 1, F, frames), a z-scored log spectrogram; output (B, 512).

    The stem is a 7x7 convolution with stride 2 and a 3x3 max pool with stride 2; stages 2 to 4
    halve both axes again. At the MER-DG spectrogram size, 257 frequencies by 1004 frames, the
    ``layer4`` feature map is 9 x 32; the embedding is its global average.
    """

    embed_dim = 512
    modality = "audio"
    checkpoint_format = VGGSOUND_H_CHECKPOINT

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, STAGE_CHANNELS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = STAGE_CHANNELS[0]
        for index, out_channels in enumerate(STAGE_CHANNELS):
            stride = 1 if index == 0 else 2
            stage = nn.Sequential(
                BasicBlock2d(in_channels, out_channels, stride=stride),
                BasicBlock2d(out_channels, out_channels, stride=1),
            )
            self.add_module(f"layer{index + 1}", stage)
            in_channels = out_channels

    def stage(self, index: int) -> nn.Sequential:
        """Return the residual stage ``layer{index}``, index 1 to 4."""
        return getattr(self, f"layer{index}")

    def stage_modules(self) -> dict[str, list[nn.Module]]:
        """Return each stage's modules."""
        return {"stem": [self.conv1, self.bn1], **{f"layer{index}": [self.stage(index)] for index in range(1, 5)}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"ResNet-18 audio expects spectrograms of shape (B, 1, F, frames); got {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = self.stage(index)(x)
        return x.mean(dim=(2, 3))
