"""SlowFast R101 8x8 over RGB clips: the MER-DG video encoder, 2304-d.

The architecture is that of mmaction2's ``slowfast_r101_8x8x1_256e_kinetics400_rgb`` config, and
the tensor names are those of its published Kinetics-400 checkpoint. Its settings are resample
rate 4 (the slow pathway takes every 4th frame), speed ratio 4 (the fast pathway takes every
frame, 4 times as many as the slow one), channel ratio 8 (the fast pathway has 1/8 of the
channels) and lateral connections with a 7-frame temporal kernel. Both pathways are ResNet-101s. The slow pathway
inflates stages 3 and 4 only, with a 1x7x7 stem, and the fast one inflates every stage, with a
5x7x7 stem.
"""

from __future__ import annotations

import torch
from torch import nn

from merdg.models.backbones.base import Backbone, CheckpointFormat
from merdg.models.backbones.resnet3d import LateralConfig, ResNet3d, check_clip

SLOWFAST_R101_CHECKPOINT = CheckpointFormat(
    project="mmaction2",
    published_file="slowfast_r101_8x8x1_256e_kinetics400_rgb_20210218-0dd54025.pth",
    state_dict_key="state_dict",
    prefix="backbone.",
    head_prefixes=("cls_head.",),
)
"""mmaction2 stores {'meta', 'state_dict'}; the classifier (``cls_head.fc_cls``, 400 classes) is dropped."""


class SlowFastR101(Backbone):
    """SlowFast R101 8x8: input (B, 3, T, H, W), T a multiple of 4; output (B, 2304).

    The embedding is the global average of the fast pathway's last feature map (256 channels)
    followed by that of the slow pathway (2048 channels), the order of mmaction2's SlowFast head.
    At the MER-DG clip size, 32 frames of 224 x 224 pixels, the slow pathway takes 8 frames and the
    final feature maps are 8 x 7 x 7 (slow) and 32 x 7 x 7 (fast).
    """

    embed_dim = 2304
    modality = "video"
    checkpoint_format = SLOWFAST_R101_CHECKPOINT

    resample_rate = 4
    """Frames of the input per frame of the slow pathway."""
    speed_ratio = 4
    """Frames of the fast pathway per frame of the slow pathway."""
    channel_ratio = 8
    """Channels of the slow pathway per channel of the fast pathway."""

    def __init__(self) -> None:
        super().__init__()
        lateral = LateralConfig(speed_ratio=self.speed_ratio, channel_ratio=self.channel_ratio, fusion_kernel=7)
        self.slow_path = ResNet3d(
            depth=101,
            in_channels=3,
            base_channels=64,
            conv1_temporal_kernel=1,
            inflate=(False, False, True, True),
            lateral=lateral,
        )
        self.fast_path = ResNet3d(
            depth=101,
            in_channels=3,
            base_channels=64 // self.channel_ratio,
            conv1_temporal_kernel=5,
            inflate=(True, True, True, True),
        )

    def stage_modules(self) -> dict[str, list[nn.Module]]:
        """Return each stage's modules; a lateral connection belongs to the stage whose output it reads."""
        stages: dict[str, list[nn.Module]] = {
            "stem": [self.slow_path.conv1, self.fast_path.conv1, self.slow_path.lateral("conv1")]
        }
        for index in range(1, 5):
            modules: list[nn.Module] = [self.slow_path.stage(index), self.fast_path.stage(index)]
            if index < 4:
                modules.append(self.slow_path.lateral(f"layer{index}"))
            stages[f"layer{index}"] = modules
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, channels=3, frames_multiple=self.resample_rate, backbone="SlowFast R101")
        # Taking every 4th frame from frame 0 equals mmaction2's nearest-neighbour temporal
        # resampling at scale 1/4 when T is a multiple of 4, which check_clip ensures.
        slow = self.slow_path.forward_stem(x[:, :, :: self.resample_rate])
        fast = self.fast_path.forward_stem(x[:, :, :: self.resample_rate // self.speed_ratio])
        slow = torch.cat([slow, self.slow_path.lateral("conv1")(fast)], dim=1)
        for index in range(1, 5):
            slow = self.slow_path.stage(index)(slow)
            fast = self.fast_path.stage(index)(fast)
            if index < 4:
                slow = torch.cat([slow, self.slow_path.lateral(f"layer{index}")(fast)], dim=1)
        return torch.cat([fast.mean(dim=(2, 3, 4)), slow.mean(dim=(2, 3, 4))], dim=1)
