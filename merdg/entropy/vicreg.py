"""The variance and covariance terms of VICReg.

Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022.
"""

from __future__ import annotations

import math

import torch

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.logdet import marginal_hinge


def off_diagonal_covariance(z: torch.Tensor) -> torch.Tensor:
    """Return sum_{i != j} C_ij^2 / D, C the unbiased covariance of the columns of z.

    For N >= D the D x D matrix C is formed and its diagonal zeroed. For N < D the squared
    Frobenius norm of C comes from the N x N Gram matrix Zc Zc^T of the centred rows, which has the
    same Frobenius norm as Zc^T Zc, and the diagonal part sum_d var_d^2 is subtracted. The cost
    is O(N D min(N, D)) either way. Zero for N < 2.
    """
    n, d = z.shape
    if n < 2:
        return z.sum() * 0.0
    centred = z - z.mean(dim=0, keepdim=True)
    if n >= d:
        covariance = centred.T @ centred / (n - 1)
        off_diagonal = covariance - torch.diag_embed(torch.diagonal(covariance))
        return (off_diagonal * off_diagonal).sum() / d
    gram = centred @ centred.T / (n - 1)
    variances = (centred * centred).sum(dim=0) / (n - 1)
    return ((gram * gram).sum() - (variances * variances).sum()) / d


@register_estimator("vicreg")
class VICRegEstimator(EntropyEstimator):
    """var_weight * v(Z) + cov_weight * c(Z), a dimensionless loss (lower = more spread).

    v(Z) = mean_d relu(gamma - sqrt(var_d + eps)) is a hinge on each column's unbiased std, and
    c(Z) = sum_{i != j} C_ij^2 / D penalises the off-diagonal entries of the unbiased covariance C.
    Both are translation invariant. The loss is 0 exactly when every column has
    sqrt(var_d + eps) >= gamma and the columns are uncorrelated. Returns a zero connected to the
    graph for N < 2, where the unbiased variance is undefined. Cost: O(N D min(N, D)).

    VICReg weighs invariance, variance and covariance as 25 : 25 : 1. MER has no invariance term,
    so both weights default to 1 here, and ``cov_weight`` is the parameter to tune.

    Args:
        var_weight: weight of the variance hinge, >= 0.
        cov_weight: weight of the covariance penalty, >= 0 (not both 0).
        gamma: the target std, > 0 (VICReg uses 1).
        eps: added to the variance before the square root, > 0 (VICReg uses 1e-4).
    """

    def __init__(self, var_weight: float = 1.0, cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4):
        super().__init__()
        if not (math.isfinite(var_weight) and math.isfinite(cov_weight)) or var_weight < 0 or cov_weight < 0:
            raise ValueError(f"vicreg weights must be finite and >= 0, got var_weight={var_weight}, cov_weight={cov_weight}")
        if var_weight == 0 and cov_weight == 0:
            raise ValueError("vicreg var_weight and cov_weight must not both be 0")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"vicreg gamma must be a finite number > 0, got {gamma}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"vicreg eps must be a finite number > 0, got {eps}")
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.gamma = gamma
        self.eps = eps

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] < 2:
            return z.sum() * 0.0
        total = z.sum() * 0.0
        if self.var_weight:
            total = total + self.var_weight * marginal_hinge(z, self.gamma, self.eps)
        if self.cov_weight:
            total = total + self.cov_weight * off_diagonal_covariance(z)
        return total
