"""The host-method interface and registry.

A host method turns the model's outputs into named loss terms. The training loop sums them, adds
MER's terms, and owns backward, the optimizer, precision and DDP. A method that needs modules of
its own (heads, translation MLPs, a teacher) builds them with ``build_modules``. The model
registers them, so DDP and the optimizer see them, and runs them at the end of each training
forward pass. Their outputs reach ``loss_terms`` in ``ModelOutput.extras``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from merdg.config import ConfigError, MethodsConfig
from merdg.models.multimodal import ModelOutput

if TYPE_CHECKING:
    from merdg.models.multimodal import MultimodalModel

HOST_METHODS: dict[str, type[HostMethod]] = {}
"""Registered host methods by name."""


class MethodModules(nn.Module):
    """Trainable modules a host method adds to the model.

    ``MultimodalModel.forward`` calls them after the fusion head, in training mode only, and puts
    the returned tensors into ``ModelOutput.extras``. Every parameter that requires a gradient
    must receive one at every step, because DDP runs without ``find_unused_parameters``.
    """

    def forward(self, inputs: Mapping[str, torch.Tensor], output: ModelOutput) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class HostMethod:
    """A multimodal training objective to which MER is added.

    Args:
        modalities: the active modalities, in the model's order.
        config: every host method's settings; a method reads its own section.
        mer_enabled: whether MER is added, so that modules trained only by MER are built only then.
    """

    name: str = ""
    min_modalities: int = 1
    """Minimum number of modalities the method is defined for."""
    min_batch_size: int = 1
    """Minimum rows of a worker's training batch (contrastive terms and BatchNorm need 2)."""

    def __init__(self, modalities: Sequence[str], config: MethodsConfig | None = None, *, mer_enabled: bool = True):
        self.modalities = list(modalities)
        self.mer_enabled = mer_enabled
        if len(self.modalities) < self.min_modalities:
            raise ConfigError(
                f"invalid --train.method: {self.name} needs at least {self.min_modalities} modalities, got "
                f"{self.modalities}; add modalities to --data.modalities or choose --train.method fusion"
            )

    @property
    def uses_projectors(self) -> bool:
        """Whether the model builds its per-modality projectors (``MultimodalModel(with_projectors=...)``)."""
        return self.mer_enabled

    def build_modules(self, model: MultimodalModel) -> MethodModules | None:
        """Build the method's own modules for ``model``, or return None when it needs none."""
        return None

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the method's named loss terms, each already weighted; their sum is the host loss."""
        raise NotImplementedError

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        """Return the feature sets MER regularizes, keyed by name (one per modality or more)."""
        raise NotImplementedError

    def entropy_feature_modalities(self) -> dict[str, str]:
        """Return the modality of each feature set of ``entropy_features``, so that MER's modality weights apply."""
        return {modality: modality for modality in self.modalities}

    def after_optimizer_step(self, model: MultimodalModel) -> None:
        """Update state that follows the weights (CMRF's averaged teacher) after each optimizer step."""


def register_method(name: str) -> Callable[[type[HostMethod]], type[HostMethod]]:
    """Register a host method class under ``name``."""

    def decorator(cls: type[HostMethod]) -> type[HostMethod]:
        cls.name = name
        HOST_METHODS[name] = cls
        return cls

    return decorator


def build_method(
    name: str, modalities: Sequence[str], config: MethodsConfig | None = None, *, mer_enabled: bool = True
) -> HostMethod:
    """Instantiate the host method registered as ``name`` for ``modalities``.

    Raises:
        KeyError: no method is registered as ``name``.
        ConfigError: the method is not defined for this many modalities.
    """
    if name not in HOST_METHODS:
        raise KeyError(f"unknown host method {name!r}; registered: {sorted(HOST_METHODS)}")
    return HOST_METHODS[name](modalities, config or MethodsConfig(), mer_enabled=mer_enabled)


def modality_pairs(modalities: Sequence[str]) -> list[tuple[str, str]]:
    """Return the unordered pairs (a, b) of ``modalities`` with a before b in their order."""
    return [(a, b) for index, a in enumerate(modalities) for b in modalities[index + 1:]]


def require_projections(output: ModelOutput, method: str) -> dict[str, torch.Tensor]:
    """Return the model's projections, or raise ValueError when the model has no projectors."""
    if not output.projections:
        raise ValueError(f"host method {method!r} needs projections: build the model with with_projectors=True")
    return dict(output.projections)
