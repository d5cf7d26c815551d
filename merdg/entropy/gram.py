"""Gram spectra, pairwise distances and input checks shared by the entropy estimators."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EIGENVALUE_FLOOR = 1e-12
"""Eigenvalues are clamped to at least this before a log or a fractional power.

A zero eigenvalue then contributes 0 * log(floor) = 0 to an entropy and its gradient stays finite.
"""

NORMALIZE_EPS = 1e-8
"""The ``eps`` of ``F.normalize``: rows shorter than this are divided by it instead of their norm."""


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    """Return z with every row scaled to unit L2 norm; all-zero rows stay zero."""
    return F.normalize(z, dim=1, eps=NORMALIZE_EPS)


def gram_eigenvalues(x: torch.Tensor) -> torch.Tensor:
    """Return the eigenvalues of x^T x from the smaller of x^T x (D x D) and x x^T (N x N).

    Both matrices have the same nonzero eigenvalues, so the result has min(N, D) entries in
    ascending order. Cost: O(N D min(N, D) + min(N, D)^3). Only ``eigvalsh`` enters the graph, whose
    backward is V diag(grad) V^T and stays finite for repeated eigenvalues.
    """
    n, d = x.shape
    gram = x @ x.T if n < d else x.T @ x
    return torch.linalg.eigvalsh(gram)


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Return the N x N matrix of squared Euclidean distances between the rows of x.

    Computed as |x_i|^2 + |x_j|^2 - 2 x_i.x_j after centring the rows (which leaves distances
    unchanged and reduces cancellation), clamped at 0 with an exact zero diagonal. No square root
    is taken, so duplicate rows have a finite gradient. Cost: O(N^2 D).
    """
    centred = x - x.mean(dim=0, keepdim=True)
    squared_norms = (centred * centred).sum(dim=1)
    distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * (centred @ centred.T)
    off_diagonal = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.where(off_diagonal, distances.clamp_min(0.0), torch.zeros_like(distances))


def validate_features(z: torch.Tensor, min_rows: int, estimator: str) -> torch.Tensor:
    """Raise ValueError unless z is an (N, D) batch with at least ``min_rows`` rows.

    Returns z with half precision cast to float32 and float32 or float64 unchanged. The
    ``entropy_nats`` methods use it, so that float64 input is estimated in float64.
    """
    if z.dim() != 2:
        raise ValueError(f"{estimator} entropy_nats expects features of shape (N, D), got {tuple(z.shape)}")
    if z.shape[0] < min_rows:
        raise ValueError(
            f"{estimator} entropy_nats needs at least {min_rows} rows for features of width {z.shape[1]}, "
            f"got {z.shape[0]}; pass a larger batch"
        )
    if z.dtype not in (torch.float32, torch.float64):
        z = z.float()
    return z
