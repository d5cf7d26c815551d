"""The coding-rate estimator of MCR^2.

Yu, Chan, You, Song and Ma, "Learning Diverse and Discriminative Representations via the Principle
of Maximal Coding Rate Reduction", NeurIPS 2020.
"""

from __future__ import annotations

import math

import torch

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.gram import gram_eigenvalues, unit_rows


@register_estimator("coding_rate")
class CodingRateEstimator(EntropyEstimator):
    """-R(Z) with R = 1/2 logdet(I + D / (N eps^2) U^T U), u_i = z_i / ||z_i|| (as MCR^2 does).

    R is the number of nats needed to code the rows up to distortion eps^2, so the loss is in nats.
    With a = D / (N eps^2) and lambda_k the eigenvalues of U^T U, R = 1/2 sum_k log(1 + a lambda_k).
    These come from ``eigvalsh`` of the smaller of U^T U and U U^T. Over unit-norm batches R is
    at most (r / 2) log(1 + D / (r eps^2)) with r = min(N, D). It reaches that bound when the
    nonzero lambda_k are all equal to N / r, which for N >= D means the rows form a tight frame.
    All-zero rows stay zero after the normalisation.
    Returns a zero connected to the graph for N < 2, because one row carries no spread.
    Cost: O(N D min(N, D) + min(N, D)^3).

    Args:
        eps_sq: the distortion eps^2; MCR^2 uses values from 0.01 to 0.5. Smaller values weigh
            small eigenvalues more, like a log-determinant with a smaller ridge.
    """

    def __init__(self, eps_sq: float = 0.5):
        super().__init__()
        if not (math.isfinite(eps_sq) and eps_sq > 0):
            raise ValueError(f"coding_rate eps_sq must be a finite number > 0 (MCR^2 uses 0.01 to 0.5), got {eps_sq}")
        self.eps_sq = eps_sq

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        if n < 2:
            return z.sum() * 0.0
        eigenvalues = gram_eigenvalues(unit_rows(z)).clamp_min(0.0)
        scale = d / (n * self.eps_sq)
        return -0.5 * torch.log1p(scale * eigenvalues).sum()
