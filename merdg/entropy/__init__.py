"""Entropy estimators for MER, one module per family, behind one registry.

Each estimator maps features of shape (N, D) to a scalar loss (lower = more entropy) and does not
depend on modalities.
"""

from merdg.entropy.base import ESTIMATORS, EntropyEstimator, build_estimator, register_estimator
from merdg.entropy.koleo import KoLeoEstimator
from merdg.entropy.logdet import LogDetEstimator, marginal_hinge, spectral_logdet

__all__ = [
    "ESTIMATORS",
    "EntropyEstimator",
    "KoLeoEstimator",
    "LogDetEstimator",
    "build_estimator",
    "marginal_hinge",
    "register_estimator",
    "spectral_logdet",
]
