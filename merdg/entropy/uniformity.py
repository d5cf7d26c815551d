"""The hypersphere uniformity loss.

Wang and Isola, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere", ICML 2020.
"""

from __future__ import annotations

import math

import torch

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.gram import squared_distances, unit_rows


@register_estimator("uniformity")
class UniformityEstimator(EntropyEstimator):
    """log( 1/(N(N-1)) sum_{i != j} exp(-t ||u_i - u_j||^2) ), u_i = z_i / ||z_i||.

    A dimensionless loss in [-4t, 0]; lower means more uniform on the unit sphere, and as N grows
    the uniform distribution on the sphere minimises it. It equals minus a Gaussian-kernel plug-in
    estimate of the Renyi 2-entropy of the u_i, up to an additive constant. All-zero
    rows stay zero after the normalisation. Returns a zero connected to the graph for N < 2.
    Cost: O(N^2 D).

    Args:
        t: the kernel's inverse temperature (Wang and Isola use t = 2).
    """

    def __init__(self, t: float = 2.0):
        super().__init__()
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"uniformity t must be a finite number > 0, got {t}")
        self.t = t

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        if n < 2:
            return z.sum() * 0.0
        logits = -self.t * squared_distances(unit_rows(z))
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
        pair_logits = logits[off_diagonal]
        return torch.logsumexp(pair_logits, dim=0) - math.log(n * (n - 1))
