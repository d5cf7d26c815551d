"""The Kozachenko-Leonenko nearest-neighbour entropy estimator (KoLeo).

Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019; used as a regularizer
by DINOv2 (Oquab et al., 2023) with eps = 1e-8 on L2-normalised features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from merdg.entropy.base import EntropyEstimator, register_estimator


@register_estimator("koleo")
class KoLeoEstimator(EntropyEstimator):
    """-mean_i log(min_j ||z_i - z_j|| + eps) over L2-normalised rows, a loss in nats (up to constants).

    The nearest neighbour is chosen without gradient; the distance is differentiated with
    ``eps`` inside the norm, so duplicate rows give a finite loss and gradient. Zero for N < 2.
    Cost: O(N^2 D).
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        if eps <= 0:
            raise ValueError(f"koleo eps must be > 0, got {eps}")
        self.eps = eps

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        if n < 2:
            return z.sum() * 0.0
        unit = F.normalize(z, dim=1, eps=self.eps)
        with torch.no_grad():
            similarity = unit @ unit.T
            similarity.fill_diagonal_(-float("inf"))
            neighbour = similarity.argmax(dim=1)
        distance = F.pairwise_distance(unit, unit[neighbour], eps=self.eps)
        return -torch.log(distance + self.eps).mean()
