"""Entropy estimators for MER, one module per family, behind one registry.

Each estimator maps features of shape (N, D) to a scalar loss (lower = more entropy) and does not
depend on modalities. Importing this package registers every estimator below.
"""

from merdg.entropy.base import ESTIMATORS, EntropyEstimator, build_estimator, register_estimator
from merdg.entropy.coding_rate import CodingRateEstimator
from merdg.entropy.koleo import KoLeoEstimator
from merdg.entropy.logdet import LogDetEstimator, marginal_hinge, spectral_logdet
from merdg.entropy.renyi import RenyiEstimator, median_bandwidth
from merdg.entropy.uniformity import UniformityEstimator
from merdg.entropy.vicreg import VICRegEstimator, off_diagonal_covariance
from merdg.entropy.von_neumann import VonNeumannEstimator

__all__ = [
    "ESTIMATORS",
    "CodingRateEstimator",
    "EntropyEstimator",
    "KoLeoEstimator",
    "LogDetEstimator",
    "RenyiEstimator",
    "UniformityEstimator",
    "VICRegEstimator",
    "VonNeumannEstimator",
    "build_estimator",
    "marginal_hinge",
    "median_bandwidth",
    "off_diagonal_covariance",
    "register_estimator",
    "spectral_logdet",
]
