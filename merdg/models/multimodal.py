"""The multimodal model: one encoder per active modality, optional MER projectors, a fusion head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from merdg.config import ModelConfig
from merdg.models.backbones import Backbone
from merdg.models.encoders import DEFAULT_ENCODERS, build_encoder
from merdg.models.heads import FusionHead, Projector

if TYPE_CHECKING:
    from merdg.methods.base import HostMethod


@dataclass
class ModelOutput:
    """Embeddings (B, encoder width) and projections (B, projection_dim) keyed by modality, and logits (B, C).

    ``extras`` contains the outputs of the host method's modules by name, in training mode only.
    """

    embeddings: dict[str, torch.Tensor]
    projections: dict[str, torch.Tensor]
    logits: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """Encodes each active modality, concatenates the embeddings in modality order and classifies.

    Each modality's encoder is ``encoders[m]``, else ``config.encoders[m]``, else its small CPU
    encoder. Pretrained backbones load ``config.checkpoints[m]`` and freeze their stages before
    ``config.trainable_from``. Small CPU encoders have no stages, so ``trainable_from="head"``
    freezes them entirely (``frozen_encoders``), and with ``config.freeze_bn_stats`` their
    BatchNorm layers stay in eval mode, which makes each one a fixed function of its input.
    Every other value trains them entirely. The projectors and the fusion head take each encoder's own width.
    Projectors are built only when ``with_projectors`` is set, because parameters that receive no
    gradient break DDP's gradient synchronisation. A host ``method`` adds its own modules
    (``method_modules``), built last so that they may copy the encoders and projectors; they run
    at the end of each forward pass in training mode.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        num_classes: int,
        config: ModelConfig,
        *,
        with_projectors: bool,
        encoders: Mapping[str, str] | None = None,
        method: HostMethod | None = None,
    ):
        super().__init__()
        if not modalities:
            raise ValueError("the model needs at least one modality")
        if method is not None and method.uses_projectors != with_projectors:
            raise ValueError(f"host method {method.name!r} needs with_projectors={method.uses_projectors}, "
                             f"got {with_projectors}; pass with_projectors=method.uses_projectors")
        self.modalities = list(modalities)
        self.config = config
        self.num_classes = num_classes
        names = {**DEFAULT_ENCODERS, **config.encoders, **(encoders or {})}
        self.encoders = nn.ModuleDict(
            {
                m: build_encoder(
                    names[m],
                    embed_dim=config.embed_dim,
                    width=config.width,
                    modality=m,
                    checkpoint=config.checkpoints.get(m),
                    strict_load=config.strict_load,
                    freeze_bn_stats=config.freeze_bn_stats,
                    trainable_from=config.trainable_from,
                )
                for m in self.modalities
            }
        )
        # The modalities whose small CPU encoder trainable_from="head" freezes (backbones freeze themselves).
        # NOTE: small CPU encoders load no weights, so a frozen one computes random features.
        self.frozen_encoders = [m for m in self.modalities
                                if config.trainable_from == "head" and not isinstance(self.encoders[m], Backbone)]
        for m in self.frozen_encoders:
            self.encoders[m].requires_grad_(False)
        self.embed_dims = {m: int(self.encoders[m].embed_dim) for m in self.modalities}
        self.projectors = nn.ModuleDict()
        if with_projectors:
            for m in self.modalities:
                self.projectors[m] = Projector(self.embed_dims[m], config.projector_hidden, config.projection_dim)
        self.head = FusionHead(sum(self.embed_dims.values()), config.fusion_hidden, num_classes, config.dropout)
        self.method_modules = method.build_modules(self) if method is not None else None

    def train(self, mode: bool = True) -> MultimodalModel:
        """Set train or eval mode, keeping frozen small encoders in eval mode when ``config.freeze_bn_stats`` is set."""
        super().train(mode)
        if mode and self.config.freeze_bn_stats:
            for m in self.frozen_encoders:
                self.encoders[m].eval()
        return self

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> ModelOutput:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"model input lacks modalities {missing}; got {sorted(inputs)}")
        embeddings = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        projections = {m: projector(embeddings[m]) for m, projector in self.projectors.items()}
        logits = self.head(torch.cat([embeddings[m] for m in self.modalities], dim=1))
        output = ModelOutput(embeddings=embeddings, projections=projections, logits=logits)
        if self.method_modules is not None and self.training:
            output.extras.update(self.method_modules(inputs, output))
        return output
