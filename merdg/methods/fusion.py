"""Fusion: concatenated embeddings, an MLP head and cross-entropy (the plain multimodal baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from merdg.methods.base import HostMethod, register_method, require_projections
from merdg.models.multimodal import ModelOutput


@register_method("fusion")
class Fusion(HostMethod):
    """Cross-entropy on the fused logits; MER regularizes each modality's projection.

    The projectors exist only when MER is on, and only MER trains them, as in the official MER-DG
    plain-fusion runs.
    """

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(output.logits, labels)}

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        return require_projections(output, self.name)
