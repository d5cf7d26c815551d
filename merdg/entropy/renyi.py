"""The matrix-based Renyi alpha-entropy.

Sanchez Giraldo, Rao and Principe, "Measures of Entropy From Data Using Infinitely Divisible
Kernels", IEEE Transactions on Information Theory, 2015.
"""

from __future__ import annotations

import math

import torch

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.gram import EIGENVALUE_FLOOR, squared_distances


def median_bandwidth(squared: torch.Tensor) -> torch.Tensor:
    """Return the median pairwise distance from a matrix of squared distances, without gradient.

    The median runs over the pairs i < j and is the lower middle value for an even count. When more than half of the pairs coincide the median
    is 0, and the mean distance over all pairs is used instead. When every row coincides that is
    0 as well, and 1 is returned, because the Gram matrix is then all ones for any width.
    """
    with torch.no_grad():
        n = squared.shape[0]
        upper = torch.triu_indices(n, n, offset=1, device=squared.device)
        distances = squared[upper[0], upper[1]].sqrt()
        width = distances.median()
        if width <= 0:
            width = distances.mean()
        if width <= 0:
            width = torch.ones_like(width)
        return width


@register_estimator("renyi")
class RenyiEstimator(EntropyEstimator):
    """-S_alpha(A) with S_alpha = 1/(1 - alpha) log2 sum_k lambda_k(A)^alpha and A = K / trace(K).

    K_ij = exp(-||z_i - z_j||^2 / (2 sigma^2)) is the Gaussian Gram matrix of the raw rows, so
    trace(K) = N. S_alpha is in bits, with 0 <= S_alpha <= log2 N. It is 0 when all rows coincide
    (K is all ones) and log2 N when the rows are far apart relative to sigma (K = I). At alpha = 1
    the Shannon limit -sum_k lambda_k log2 lambda_k is used, which is the von Neumann entropy of A.

    The width sigma is the ``sigma`` parameter, or by default the median pairwise distance of the
    batch (see ``median_bandwidth``), computed without gradient. With the median width the loss is
    invariant to translating, rotating and positively scaling the batch. The lambda_k come from
    ``eigvalsh`` and are clamped to at least ``EIGENVALUE_FLOOR``, so a zero eigenvalue adds
    floor^alpha to the sum and the gradient stays finite for alpha < 1.
    Returns a zero connected to the graph for N < 2. Cost: O(N^2 D + N^3).

    NOTE: in float32 the eigenvalues of A carry rounding noise of about 1e-7. For alpha well below
    1, each of the up to N noise eigenvalues adds about (1e-7)^alpha to the sum and biases S_alpha
    upward. The default alpha = 1.01 is not affected.

    Args:
        alpha: the Renyi order, > 0.
        sigma: a fixed kernel width, > 0, or None for the median heuristic.
    """

    def __init__(self, alpha: float = 1.01, sigma: float | None = None):
        super().__init__()
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"renyi alpha must be a finite number > 0, got {alpha}")
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"renyi sigma must be a finite number > 0, or None for the median heuristic, got {sigma}")
        self.alpha = alpha
        self.sigma = sigma

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        if n < 2:
            return z.sum() * 0.0
        squared = squared_distances(z)
        width = median_bandwidth(squared) if self.sigma is None else self.sigma
        gram = torch.exp(-squared / (2.0 * width**2))
        eigenvalues = torch.linalg.eigvalsh(gram / n).clamp_min(EIGENVALUE_FLOOR)
        if self.alpha == 1.0:
            entropy = -(eigenvalues * torch.log2(eigenvalues)).sum()
        else:
            entropy = torch.log2(eigenvalues.pow(self.alpha).sum()) / (1.0 - self.alpha)
        return -entropy
