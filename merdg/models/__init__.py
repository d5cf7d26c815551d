"""Encoders, the MER projector, the fusion head and the multimodal model."""

from merdg.models.encoders import DEFAULT_ENCODERS, ENCODERS, build_encoder, register_encoder
from merdg.models.heads import FusionHead, Projector
from merdg.models.multimodal import ModelOutput, MultimodalModel

__all__ = [
    "DEFAULT_ENCODERS",
    "ENCODERS",
    "FusionHead",
    "ModelOutput",
    "MultimodalModel",
    "Projector",
    "build_encoder",
    "register_encoder",
]
