"""The estimator interface, the registry, and the float32 guard every estimator runs under."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, type[EntropyEstimator]] = {}
"""Registered estimators by name; registering one puts it into the search space and the tests."""


class EntropyEstimator(nn.Module):
    """Maps a feature batch Z of shape (N, D) to a scalar loss; lower loss means higher entropy.

    Subclasses implement ``loss(z)`` on a float32 tensor of valid rows. ``forward`` drops the
    rows that ``mask`` marks invalid (for example samples missing this modality), casts to
    float32 and disables autocast, because ``torch.linalg`` decompositions reject half precision
    and the estimates are sensitive to rounding.
    """

    name: str = ""

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() != 2:
            raise ValueError(f"{type(self).__name__} expects features of shape (N, D), got {tuple(z.shape)}")
        if mask is not None:
            if mask.shape != (z.shape[0],) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of shape ({z.shape[0]},), got {mask.dtype} {tuple(mask.shape)}")
            z = z[mask]
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.loss(z.float())

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def register_estimator(name: str) -> Callable[[type[EntropyEstimator]], type[EntropyEstimator]]:
    """Register an estimator class under ``name`` (a class decorator)."""

    def decorator(cls: type[EntropyEstimator]) -> type[EntropyEstimator]:
        if name in ESTIMATORS and ESTIMATORS[name] is not cls:
            logger.warning("estimator %r registered twice; %s replaces %s", name, cls, ESTIMATORS[name])
        cls.name = name
        ESTIMATORS[name] = cls
        return cls

    return decorator


def build_estimator(name: str, **params: Any) -> EntropyEstimator:
    """Instantiate the estimator registered as ``name`` with its own parameters."""
    if name not in ESTIMATORS:
        raise KeyError(f"unknown entropy estimator {name!r}; registered: {sorted(ESTIMATORS)}")
    try:
        return ESTIMATORS[name](**params)
    except TypeError as error:
        raise TypeError(f"invalid parameters {params} for entropy estimator {name!r}: {error}") from error
