"""The MER-DG paper's pretrained encoders in plain PyTorch, and loading of their published checkpoints.

- ``SlowFastR101``: RGB video (B, 3, T, H, W) to 2304-d, mmaction2's Kinetics-400 SlowFast R101 8x8.
- ``SlowOnlyR50Flow``: optical flow (B, 2, T, H, W) to 2048-d, mmaction2's Kinetics-400 SlowOnly R50.
- ``ResNet18Audio``: log spectrograms (B, 1, F, frames) to 512-d, VGGSound's ResNet-18 "H".

NOTE: the tests check tensor names, shapes and kinds against inventories of the published files,
and feature-map sizes against those of the original code. No test compares outputs with the
original implementations on the real weights.
"""

from merdg.models.backbones.base import BACKBONE_STAGES, TRAINABLE_FROM_CHOICES, Backbone, CheckpointFormat
from merdg.models.backbones.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    LoadReport,
    checkpoint_state_dict,
    load_backbone_checkpoint,
    load_backbone_state,
    read_checkpoint,
)
from merdg.models.backbones.resnet_audio import ResNet18Audio
from merdg.models.backbones.slowfast import SlowFastR101
from merdg.models.backbones.slowonly import SlowOnlyR50Flow

__all__ = [
    "BACKBONE_STAGES",
    "TRAINABLE_FROM_CHOICES",
    "Backbone",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointMismatchError",
    "LoadReport",
    "ResNet18Audio",
    "SlowFastR101",
    "SlowOnlyR50Flow",
    "checkpoint_state_dict",
    "load_backbone_checkpoint",
    "load_backbone_state",
    "read_checkpoint",
]
