"""SimMMDG (Dong, Nejjar, Sun, Chatzi and Fink, "SimMMDG: A Simple and Effective Framework for
Multi-modal Domain Generalization", NeurIPS 2023).

Each modality's embedding e_m (width D_m, even) is split into a modality-shared half
c_m = e_m[:, :D_m/2] and a modality-specific half s_m = e_m[:, D_m/2:]. The loss is

    L = CE(fusion(e)) + w_con * L_con + w_dis * L_dis + w_trans * L_trans

- L_con: supervised contrastive loss (Khosla et al., 2020; temperature tau) over the views
  g_m(c_m) of every modality, where g_m is a projection head with an L2-normalised output. Rows
  of the same class attract across modalities and samples.
- L_dis = -(1/M) * sum_m MSE(c_m, s_m): pushes each specific half away from its shared half.
- L_trans = mean over ordered pairs (a, b) of mean_i || T_ab(e_a)_i / ||.|| - e_b,i / ||.|| ||_2,
  where T_ab is an MLP that translates modality a's embedding into modality b's.

Defaults (official code): w_con = 3, tau = 0.1, w_dis = 0.7, w_trans = 0.1. The official code
has no unimodal classifiers in the loss, so none are built here.
NOTE: L_dis is unbounded below, as in the official code; only the other terms and weight decay
keep the halves' distance finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from merdg.config import ConfigError, MethodsConfig, SimMMDGConfig
from merdg.methods.base import HostMethod, MethodModules, register_method
from merdg.methods.heads import NormalizedProjectionHead, TranslationMLP
from merdg.methods.losses import supervised_contrastive_loss, unit_distance
from merdg.models.multimodal import ModelOutput, MultimodalModel


def _translator_name(source: str, target: str) -> str:
    return f"{source}_to_{target}"


class SimMMDGModules(MethodModules):
    """Shared-half projection heads, optional specific-half heads (for MER) and translation MLPs.

    Outputs in ``ModelOutput.extras``: 'shared.<m>' and 'specific.<m>' (B, projection_dim) unit
    rows, and 'translation.<a>.<b>' (B, D_b), modality a's embedding translated into b's.
    """

    def __init__(self, embed_dims: dict[str, int], hidden_dim: int, projection_dim: int, translation_hidden: int,
                 *, with_specific_heads: bool):
        super().__init__()
        self.modalities = list(embed_dims)
        self.halves = {m: embed_dims[m] // 2 for m in self.modalities}
        self.shared_heads = nn.ModuleDict(
            {m: NormalizedProjectionHead(self.halves[m], hidden_dim, projection_dim) for m in self.modalities}
        )
        self.specific_heads = nn.ModuleDict()
        if with_specific_heads:
            for m in self.modalities:
                self.specific_heads[m] = NormalizedProjectionHead(self.halves[m], hidden_dim, projection_dim)
        self.translators = nn.ModuleDict({
            _translator_name(a, b): TranslationMLP(embed_dims[a], translation_hidden, embed_dims[b])
            for a in self.modalities for b in self.modalities if a != b
        })

    def forward(self, inputs, output: ModelOutput) -> dict[str, torch.Tensor]:
        extras = {}
        for m in self.modalities:
            embedding = output.embeddings[m]
            extras[f"shared.{m}"] = self.shared_heads[m](embedding[:, : self.halves[m]])
            if m in self.specific_heads:
                extras[f"specific.{m}"] = self.specific_heads[m](embedding[:, self.halves[m]:])
        for a in self.modalities:
            for b in self.modalities:
                if a != b:
                    extras[f"translation.{a}.{b}"] = self.translators[_translator_name(a, b)](output.embeddings[a])
        return extras


@register_method("simmmdg")
class SimMMDG(HostMethod):
    """SimMMDG's loss terms 'ce', 'contrast', 'distance' and 'translation' (see the module docstring).

    MER, as in the official MER-DG code's SimMMDG host, regularizes two feature sets per
    modality: the projections of the shared half and of the specific half, both L2-normalised.
    The specific-half heads are trained by MER alone, so they exist only when MER is on.
    NOTE: on unit rows the dimensions' variances sum to at most 1, so the log-det estimator's
    marginal hinge relu(1 - std) can reach zero in one dimension at most, as in the official code.
    """

    min_modalities = 2
    min_batch_size = 2

    def __init__(self, modalities, config: MethodsConfig | None = None, *, mer_enabled: bool = True):
        super().__init__(modalities, config, mer_enabled=mer_enabled)
        self.config: SimMMDGConfig = (config or MethodsConfig()).simmmdg

    @property
    def uses_projectors(self) -> bool:
        return False

    def build_modules(self, model: MultimodalModel) -> SimMMDGModules:
        odd = {m: width for m, width in model.embed_dims.items() if width % 2}
        if odd:
            raise ConfigError(
                f"invalid --model.embed_dim: SimMMDG splits each embedding into two equal halves, but the widths "
                f"{odd} are odd; choose an even --model.embed_dim"
            )
        return SimMMDGModules(
            model.embed_dims, model.config.projector_hidden, model.config.projection_dim,
            self.config.translation_hidden, with_specific_heads=self.mer_enabled,
        )

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        extras = output.extras
        shared = torch.stack([extras[f"shared.{m}"] for m in self.modalities], dim=1)
        contrast = supervised_contrastive_loss(shared, labels, self.config.temperature)

        distances = []
        for m in self.modalities:
            embedding = output.embeddings[m]
            half = embedding.shape[1] // 2
            distances.append(-F.mse_loss(embedding[:, :half], embedding[:, half:]))
        distance = torch.stack(distances).mean()

        translations = [
            unit_distance(extras[f"translation.{a}.{b}"], output.embeddings[b])
            for a in self.modalities for b in self.modalities if a != b
        ]
        translation = torch.stack(translations).mean()
        return {
            "ce": F.cross_entropy(output.logits, labels),
            "contrast": self.config.contrast_weight * contrast,
            "distance": self.config.distance_weight * distance,
            "translation": self.config.translation_weight * translation,
        }

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        missing = [m for m in self.modalities if f"specific.{m}" not in output.extras]
        if missing:
            raise ValueError(f"no specific-half projections for {missing}: build the method with mer_enabled=True "
                             "and run the model in training mode")
        features = {}
        for m in self.modalities:
            features[f"{m}_shared"] = output.extras[f"shared.{m}"]
            features[f"{m}_specific"] = output.extras[f"specific.{m}"]
        return features

    def entropy_feature_modalities(self) -> dict[str, str]:
        names = {}
        for m in self.modalities:
            names[f"{m}_shared"] = m
            names[f"{m}_specific"] = m
        return names
