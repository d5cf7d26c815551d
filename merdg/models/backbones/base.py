"""The interface of the pretrained backbones: checkpoint format, stages and partial fine-tuning."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

TRAINABLE_FROM_CHOICES = ("stem", "layer1", "layer2", "layer3", "layer4", "head")
"""Values of ``trainable_from``: the first stage that trains; "head" freezes every backbone stage."""

BACKBONE_STAGES = TRAINABLE_FROM_CHOICES[:-1]
"""The stages of every backbone, in forward order."""

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class CheckpointFormat:
    """Location and names of a backbone's tensors in a published checkpoint file.

    The file contains a dict whose ``state_dict_key`` entry maps tensor names to tensors. A tensor
    named ``prefix + name`` is the backbone's tensor ``name``. Tensors under ``head_prefixes`` belong
    to the classifier trained with the backbone, which is not part of the encoder.
    """

    project: str
    """The project that wrote the file, for messages (for example "mmaction2")."""
    published_file: str
    """Name of the published weights file."""
    state_dict_key: str
    """Top-level key of the dict that maps tensor names to tensors."""
    prefix: str
    """Prefix of every backbone tensor name in the file."""
    head_prefixes: tuple[str, ...]
    """Prefixes of the classifier-head tensors, which loading drops."""


class Backbone(nn.Module, metaclass=abc.ABCMeta):
    """A pretrained encoder: maps one modality's input to a pooled embedding (B, embed_dim).

    Subclasses name their submodules so that their state dict keys, with ``checkpoint_format.prefix``
    in front, are the tensor names of the published checkpoint file. Partial fine-tuning freezes the
    stages before ``trainable_from`` (``requires_grad`` false) and, with ``freeze_bn_stats``, keeps
    the BatchNorm layers of those stages in eval mode while the model trains, so that their running
    statistics stay those of the checkpoint.
    """

    embed_dim: int
    """Width of the pooled embedding."""
    modality: str
    """The modality this backbone encodes (video, audio or flow)."""
    checkpoint_format: CheckpointFormat
    """The layout of the published checkpoint file."""

    _frozen_stages: tuple[str, ...] = ()
    _freeze_bn_stats: bool = True

    @abc.abstractmethod
    def stage_modules(self) -> dict[str, list[nn.Module]]:
        """Return the submodules of each stage in ``BACKBONE_STAGES``, in that order.

        Every parameter and buffer of the backbone belongs to exactly one stage.
        """

    @property
    def frozen_stages(self) -> tuple[str, ...]:
        """Stages whose parameters do not train."""
        return self._frozen_stages

    @property
    def freeze_bn_stats(self) -> bool:
        """Whether the BatchNorm layers of frozen stages stay in eval mode in training."""
        return self._freeze_bn_stats

    def set_trainable_from(self, stage: str, *, freeze_bn_stats: bool) -> None:
        """Freeze every stage before ``stage`` and unfreeze the others.

        ``stage`` is one of ``TRAINABLE_FROM_CHOICES``: "stem" trains everything, "layer4" trains
        only the last stage (as in MER-DG), "head" freezes the whole backbone. With
        ``freeze_bn_stats`` false, the BatchNorm layers of frozen stages follow the model's
        train/eval mode and keep updating their running statistics in training, as the MER-DG
        code does.
        """
        if stage not in TRAINABLE_FROM_CHOICES:
            raise ValueError(f"invalid trainable_from stage {stage!r}; choose from {list(TRAINABLE_FROM_CHOICES)}")
        stages = self.stage_modules()
        first_trainable = TRAINABLE_FROM_CHOICES.index(stage)
        self._frozen_stages = BACKBONE_STAGES[:first_trainable]
        self._freeze_bn_stats = freeze_bn_stats
        for name, modules in stages.items():
            trainable = name not in self._frozen_stages
            for module in modules:
                for parameter in module.parameters():
                    parameter.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        """Set train or eval mode, keeping frozen stages' BatchNorm layers in eval mode when ``freeze_bn_stats`` is set."""
        super().train(mode)
        if mode and self._freeze_bn_stats:
            for batch_norm in self._frozen_batch_norms():
                batch_norm.eval()
        return self

    def _frozen_batch_norms(self) -> Iterator[nn.Module]:
        stages = self.stage_modules()
        for name in self._frozen_stages:
            for module in stages[name]:
                yield from (sub for sub in module.modules() if isinstance(sub, _BATCH_NORMS))
