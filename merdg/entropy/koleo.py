"""The Kozachenko-Leonenko nearest-neighbour entropy estimator (KoLeo).

Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019; used as a regularizer
by DINOv2 (Oquab et al., 2023) with eps = 1e-8 on L2-normalised features. The full estimate with
its constants is from Kozachenko and Leonenko, "Sample estimate of the entropy of a random
vector", Problems of Information Transmission, 1987, in the digamma form of Kraskov, Stoegbauer
and Grassberger, "Estimating mutual information", Physical Review E, 2004.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.gram import validate_features

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant, -digamma(1)."""


@register_estimator("koleo")
class KoLeoEstimator(EntropyEstimator):
    """-mean_i log(min_j ||z_i - z_j|| + eps) over L2-normalised rows, a loss in nats (up to constants).

    The nearest neighbour is chosen without gradient; the distance is differentiated with
    ``eps`` inside the norm, so duplicate rows give a finite loss and gradient. Zero for N < 2.
    Up to ``eps``, the loss is minus the data-dependent term of ``entropy_nats`` on the normalised
    rows, divided by D.
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

    def entropy_nats(self, z: torch.Tensor) -> torch.Tensor:
        """Estimate the differential entropy of the raw rows in nats with the Kozachenko-Leonenko estimator.

        Returns digamma(N) - digamma(1) + log V_D + (D / N) sum_i log rho_i, where rho_i is the
        Euclidean distance from row i to its nearest neighbour and V_D = pi^(D/2) / Gamma(D/2 + 1)
        is the volume of the unit ball in R^D. The rows are not normalised and no ``eps`` is added,
        so duplicate rows give -inf. The estimate is translation and rotation invariant and shifts
        by D log s when the rows are scaled by s > 0. Needs N >= 2. Half-precision input is
        computed in float32, and float64 input stays float64. Cost: O(N^2 D).
        """
        z = validate_features(z, 2, "koleo")
        n, d = z.shape
        with torch.no_grad():
            distances = torch.cdist(z, z)
            distances.fill_diagonal_(math.inf)
            neighbour = distances.argmin(dim=1)
        # The matrix-product distances above only pick the neighbour; the distance itself is taken
        # from the difference, which keeps small distances accurate.
        nearest = torch.linalg.vector_norm(z - z[neighbour], dim=1)
        log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)
        digamma_n = torch.special.digamma(torch.tensor(float(n), dtype=torch.float64)).item()
        return digamma_n + EULER_GAMMA + log_unit_ball + d * torch.log(nearest).mean()
