"""The von Neumann entropy of the feature density matrix."""

from __future__ import annotations

import torch

from merdg.entropy.base import EntropyEstimator, register_estimator
from merdg.entropy.gram import EIGENVALUE_FLOOR, gram_eigenvalues, unit_rows

TRACE_FLOOR = 1e-12
"""The trace is clamped to at least this before dividing by it, for batches whose rows are all zero."""


@register_estimator("von_neumann")
class VonNeumannEstimator(EntropyEstimator):
    """-S(rho) with S = -sum_k lambda_k log lambda_k, rho = U^T U / trace(U^T U), u_i = z_i / ||z_i||.

    rho is the uncentred second-moment matrix of the unit-norm rows, normalised to trace 1, so it
    is a density matrix and S is in nats, with 0 <= S <= log min(N, D). S = 0 when all rows are
    parallel (collapse). S = log D when rho = I / D, which for N >= D means the rows form a tight
    frame. The uncentred matrix is used instead of the covariance for two reasons. A batch of
    identical rows keeps a well-defined rho with S = 0, whereas its covariance is the zero matrix.
    Rows clustered around a common direction also count as low entropy, whereas centring would
    remove that shared direction.

    The lambda_k come from ``eigvalsh`` of the smaller of U^T U and U U^T and are clamped to at
    least 0 and then to ``EIGENVALUE_FLOOR`` inside the log, so a zero eigenvalue adds
    0 * log(floor) = 0 with a finite gradient. All-zero rows stay zero after the normalisation and
    add nothing to rho. Returns a zero connected to the graph for N < 2.
    Cost: O(N D min(N, D) + min(N, D)^3).
    """

    def __init__(self):
        super().__init__()

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[0] < 2:
            return z.sum() * 0.0
        eigenvalues = gram_eigenvalues(unit_rows(z)).clamp_min(0.0)
        probabilities = eigenvalues / eigenvalues.sum().clamp_min(TRACE_FLOOR)
        entropy = -(probabilities * torch.log(probabilities.clamp_min(EIGENVALUE_FLOOR))).sum()
        return -entropy
