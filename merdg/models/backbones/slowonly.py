"""SlowOnly R50 8x8 over optical flow: the MER-DG flow encoder, 2048-d.

The architecture is that of mmaction2's ``slowonly_r50_8x8x1_256e_kinetics400_flow`` config, and
the tensor names are those of its published Kinetics-400 checkpoint. It is a ResNet-50 with a
2-channel 1x7x7 stem (the x and y flow components) and inflated stages 3 and 4. No layer strides
time, so 8 input frames give an 8-frame feature map.
"""

from __future__ import annotations

import torch
from torch import nn

from merdg.models.backbones.base import Backbone, CheckpointFormat
from merdg.models.backbones.resnet3d import ResNet3d, check_clip

SLOWONLY_R50_FLOW_CHECKPOINT = CheckpointFormat(
    project="mmaction2",
    published_file="slowonly_r50_8x8x1_256e_kinetics400_flow_20200704-6b384243.pth",
    state_dict_key="state_dict",
    prefix="backbone.",
    head_prefixes=("cls_head.",),
)
"""mmaction2 stores {'meta', 'state_dict'}; the classifier (``cls_head.fc_cls``, 400 classes) is dropped."""


class SlowOnlyR50Flow(Backbone, ResNet3d):
    """SlowOnly R50 over flow clips: input (B, 2, T, H, W), flow scaled as (v - 128) / 128; output (B, 2048).

    The embedding is the global average of the ``layer4`` feature map; at 8 frames of 224 x 224
    pixels that map is 8 x 7 x 7.
    """

    embed_dim = 2048
    modality = "flow"
    checkpoint_format = SLOWONLY_R50_FLOW_CHECKPOINT

    def __init__(self) -> None:
        super().__init__(
            depth=50, in_channels=2, base_channels=64, conv1_temporal_kernel=1, inflate=(False, False, True, True)
        )

    def stage_modules(self) -> dict[str, list[nn.Module]]:
        """Return each stage's modules."""
        return {"stem": [self.conv1], **{f"layer{index}": [self.stage(index)] for index in range(1, 5)}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, channels=2, frames_multiple=1, backbone="SlowOnly R50 flow")
        return super().forward(x).mean(dim=(2, 3, 4))
