"""MER: the modality-wise entropy regularizer added to a host method's loss.

L = L_host + lambda * sum_m w_m * L_est(Z_m), where Z_m are the features of modality m (in the
official MER-DG code, a 128-d projection of each encoder's embedding) and L_est is an entropy
estimator's loss. MER-DG (Yarici and AlRegib, ICML 2026) uses the log-determinant estimator,
lambda = 3 and w_m = 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from merdg.entropy import EntropyEstimator


@dataclass
class MERTerms:
    """The estimator loss per feature set (unweighted) and their weighted sum times lambda."""

    per_modality: dict[str, torch.Tensor]
    total: torch.Tensor


class MERRegularizer(nn.Module):
    """Applies one entropy estimator to each modality's features and weights the sum.

    Args:
        estimator: the entropy estimator, shared by all modalities.
        weight: lambda, the weight of the summed terms in the total loss.
        modality_weights: optional w_m per feature-set name; missing names weigh 1.
    """

    def __init__(
        self,
        estimator: EntropyEstimator,
        weight: float,
        modality_weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if weight < 0:
            raise ValueError(f"MER weight (lambda) must be >= 0, got {weight}")
        self.estimator = estimator
        self.weight = weight
        self.modality_weights = dict(modality_weights or {})

    def forward(self, features: Mapping[str, torch.Tensor]) -> MERTerms:
        """Return the per-modality estimator losses and lambda * their weighted sum."""
        if not features:
            raise ValueError("MER needs the features of at least one modality")
        per_modality = {name: self.estimator(z) for name, z in features.items()}
        weighted = [self.modality_weights.get(name, 1.0) * loss for name, loss in per_modality.items()]
        return MERTerms(per_modality=per_modality, total=self.weight * torch.stack(weighted).sum())
