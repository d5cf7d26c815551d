"""The host-method interface and registry.

A host method turns the model's outputs into named loss terms. The training loop sums them, adds
MER's terms, and owns backward, the optimizer, precision and DDP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from merdg.models import ModelOutput

HOST_METHODS: dict[str, type[HostMethod]] = {}
"""Registered host methods by name."""


class HostMethod:
    """A multimodal training objective to which MER is added."""

    name: str = ""

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the method's named loss terms; their sum is the host loss."""
        raise NotImplementedError

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        """Return the feature sets MER regularizes, keyed by name (one per modality or more)."""
        raise NotImplementedError


def register_method(name: str) -> Callable[[type[HostMethod]], type[HostMethod]]:
    """Register a host method class under ``name``."""

    def decorator(cls: type[HostMethod]) -> type[HostMethod]:
        cls.name = name
        HOST_METHODS[name] = cls
        return cls

    return decorator


def build_method(name: str) -> HostMethod:
    """Instantiate the host method registered as ``name``."""
    if name not in HOST_METHODS:
        raise KeyError(f"unknown host method {name!r}; registered: {sorted(HOST_METHODS)}")
    return HOST_METHODS[name]()
