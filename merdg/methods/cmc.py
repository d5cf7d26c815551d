"""CMC: cross-modal contrastive learning (Tian, Krishnan and Isola, "Contrastive Multiview Coding",
ECCV 2020) as a multimodal host.

With z_m the L2-normalised projection of modality m's embedding and M modalities, the loss is

    L = CE(fusion(e)) + w * sum_{a < b} [ InfoNCE(z_a, z_b) + InfoNCE(z_b, z_a) ]

Every pair of views is contrasted in both directions, as the CMC code adds the losses of its two
views' directions with weight 1.
InfoNCE(z_a, z_b) is the cross-entropy of matching each row of z_a to its own sample's row of
z_b among the batch's rows, at temperature tau (0.07, the CMC code's ``nce_t``). The CMC code
estimates the same contrast with NCE against a memory bank of negatives. Here the negatives are
the batch's other samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from merdg.config import CMCConfig, MethodsConfig
from merdg.methods.base import HostMethod, modality_pairs, register_method, require_projections
from merdg.methods.losses import info_nce_loss
from merdg.models.multimodal import ModelOutput


@register_method("cmc")
class CMC(HostMethod):
    """Fusion cross-entropy 'ce' plus the cross-modal InfoNCE term 'contrast' (see the module docstring).

    The projections come from the model's per-modality projectors, which the contrastive term
    trains. MER regularizes the same projections before the contrastive L2 normalisation, as the
    official MER-DG code does for its Fusion host. Normalising first would discard the per-dimension
    scale that the log-det estimator's marginal term acts on. On unit rows the dimensions' variances
    sum to at most 1, so the hinge relu(1 - std) can reach zero in one dimension at most.
    """

    min_modalities = 2
    min_batch_size = 2

    def __init__(self, modalities, config: MethodsConfig | None = None, *, mer_enabled: bool = True):
        super().__init__(modalities, config, mer_enabled=mer_enabled)
        self.config: CMCConfig = (config or MethodsConfig()).cmc

    @property
    def uses_projectors(self) -> bool:
        return True

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        projections = require_projections(output, self.name)
        views = {m: F.normalize(projections[m], dim=1) for m in self.modalities}
        pair_losses = [
            info_nce_loss(views[a], views[b], self.config.temperature)
            + info_nce_loss(views[b], views[a], self.config.temperature)
            for a, b in modality_pairs(self.modalities)
        ]
        return {
            "ce": F.cross_entropy(output.logits, labels),
            "contrast": self.config.contrast_weight * torch.stack(pair_losses).sum(),
        }

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        return require_projections(output, self.name)
