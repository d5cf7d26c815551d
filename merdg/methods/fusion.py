"""Fusion: concatenated embeddings, an MLP head and cross-entropy (the plain multimodal baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from merdg.methods.base import HostMethod, register_method
from merdg.models import ModelOutput


@register_method("fusion")
class Fusion(HostMethod):
    """Cross-entropy on the fused logits; MER regularizes each modality's projection."""

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(output.logits, labels)}

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        if not output.projections:
            raise ValueError("MER needs projections: build the model with with_projectors=True")
        return dict(output.projections)
