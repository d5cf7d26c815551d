"""CMRF: cross-modal representation flattening (Fan, Xu, Wang and Guo, "Cross-modal Representation
Flattening for Multi-modal Domain Generalization", NeurIPS 2024).

A teacher keeps a moving average of the student's encoders and projectors. For every pair of
modalities (a, b), the teacher's L2-normalised projections t_a, t_b are mixed per sample:

    u_a = lam_a * t_a + (1 - lam_a) * t_b,   lam_a ~ Beta(alpha, alpha) conditioned on lam_a > 1/2
    u_b = lam_b * t_a + (1 - lam_b) * t_b,   lam_b ~ Beta(alpha, alpha) conditioned on lam_b < 1/2

so u_a lies nearer t_a and u_b nearer t_b. The student's projection z_m of each member m of the
pair is distilled towards its mixed target. With modality weights w_m:

    L = CE(fusion(e)) + w_uni * sum_m w_m CE(h_m(e_m))
        + w_con * SupCon({z_m / ||z_m||}_m)
        + w_dis * sum_{(a, b)} sum_{m in {a, b}} w_m * mean_i || u_m,i / ||.|| - z_m,i / ||.|| ||_2

where h_m is a linear classifier on modality m's embedding. Distillation starts once the
optimizer has taken ``start_step`` steps. Until then the teacher copies the student after every
step. From then on it averages: the simple average gives each later step the same weight, the
exponential one keeps teacher = m * teacher + (1 - m) * student.

The facts and defaults come from the CMRF training script of the MMDG benchmark code
(lihongzhao99/MMDG_Benchmark): Beta(0.1, 0.1), w_dis = 3, w_uni = 2, w_con = 3 with tau = 0.1,
a simple moving average from step 400, and half weight for audio in the unimodal and
distillation terms. Sampling lam conditioned on lam > 1/2 equals taking max(lam, 1 - lam),
because Beta(alpha, alpha) is symmetric about 1/2.
NOTE: that script enables the contrastive term with a flag whose setting in the published runs
is not recorded there; w_con = 0 turns it off.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from merdg.config import CMRFConfig, MethodsConfig
from merdg.methods.base import HostMethod, MethodModules, modality_pairs, register_method, require_projections
from merdg.methods.losses import supervised_contrastive_loss, unit_distance
from merdg.models.multimodal import ModelOutput, MultimodalModel


def _target_name(member: str, pair: tuple[str, str]) -> str:
    return f"mixed_target.{member}.{pair[0]}+{pair[1]}"


class CMRFModules(MethodModules):
    """Per-modality classifiers and the weight-averaged teacher of the encoders and projectors.

    Outputs in ``ModelOutput.extras``: 'unimodal_logits.<m>' (B, C), and once distillation has
    started, the teacher's mixed targets 'mixed_target.<m>.<a>+<b>' (B, projection_dim) for each
    member m of each pair (a, b). The teacher requires no gradient, stays in evaluation mode and
    is saved with the model's state, together with the step counters.
    NOTE: the teacher copies every encoder stage, frozen ones included, so it doubles the
    encoders' memory.
    """

    def __init__(self, model: MultimodalModel, num_classes: int, config: CMRFConfig):
        super().__init__()
        self.config = config
        self.modalities = list(model.modalities)
        self.unimodal_heads = nn.ModuleDict(
            {m: nn.Linear(model.embed_dims[m], num_classes) for m in self.modalities}
        )
        self.teacher = nn.ModuleDict(
            {"encoders": copy.deepcopy(model.encoders), "projectors": copy.deepcopy(model.projectors)}
        )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_averaged", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> CMRFModules:
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def distilling(self) -> bool:
        """Whether the optimizer has taken ``start_step`` steps, so distillation is on."""
        return int(self.num_updates) >= self.config.start_step

    def forward(self, inputs, output: ModelOutput) -> dict[str, torch.Tensor]:
        extras = {f"unimodal_logits.{m}": self.unimodal_heads[m](output.embeddings[m]) for m in self.modalities}
        if self.distilling:
            extras.update(self._mixed_targets(inputs))
        return extras

    @torch.no_grad()
    def _mixed_targets(self, inputs) -> dict[str, torch.Tensor]:
        encoders, projectors = self.teacher["encoders"], self.teacher["projectors"]
        teacher = {m: F.normalize(projectors[m](encoders[m](inputs[m])), dim=1) for m in self.modalities}
        targets = {}
        for pair in modality_pairs(self.modalities):
            a, b = pair
            near_a = self._mixing_coefficients(teacher[a], above_half=True)
            near_b = self._mixing_coefficients(teacher[a], above_half=False)
            targets[_target_name(a, pair)] = near_a * teacher[a] + (1.0 - near_a) * teacher[b]
            targets[_target_name(b, pair)] = near_b * teacher[a] + (1.0 - near_b) * teacher[b]
        return targets

    def _mixing_coefficients(self, like: torch.Tensor, *, above_half: bool) -> torch.Tensor:
        """Draw one coefficient per row from Beta(alpha, alpha) conditioned on lying above (or below) 1/2."""
        alpha = torch.tensor(self.config.mixup_alpha, device=like.device, dtype=like.dtype)
        draws = torch.distributions.Beta(alpha, alpha).sample((like.shape[0], 1))
        return torch.maximum(draws, 1.0 - draws) if above_half else torch.minimum(draws, 1.0 - draws)

    @torch.no_grad()
    def update_teacher(self, model: MultimodalModel) -> None:
        """Move the teacher towards the student after one optimizer step (see the module docstring)."""
        self.num_updates += 1
        if int(self.num_updates) <= self.config.start_step:
            student_weight = 1.0
        else:
            self.num_averaged += 1
            if self.config.teacher_average == "simple":
                student_weight = 1.0 / (int(self.num_averaged) + 1)
            else:
                student_weight = 1.0 - self.config.ema_momentum
        for part, student in (("encoders", model.encoders), ("projectors", model.projectors)):
            teacher_state = self.teacher[part].state_dict()
            for name, value in student.state_dict().items():
                average = teacher_state[name]
                if average.is_floating_point():
                    average.lerp_(value, student_weight)
                else:
                    average.copy_(value)


@register_method("cmrf")
class CMRF(HostMethod):
    """CMRF's loss terms 'ce', 'unimodal_ce', 'contrast' and 'distill' (see the module docstring).

    MER regularizes the student's projections before their L2 normalisation, the features that
    the contrastive and distillation terms also shape, as for the CMC host. The teacher's
    projections are targets without gradient, so MER leaves them alone. 'distill' is 0 until the
    optimizer has taken ``start_step`` steps.
    """

    min_modalities = 2
    min_batch_size = 2

    def __init__(self, modalities, config: MethodsConfig | None = None, *, mer_enabled: bool = True):
        super().__init__(modalities, config, mer_enabled=mer_enabled)
        self.config: CMRFConfig = (config or MethodsConfig()).cmrf

    @property
    def uses_projectors(self) -> bool:
        return True

    def build_modules(self, model: MultimodalModel) -> CMRFModules:
        return CMRFModules(model, model.num_classes, self.config)

    def _weight(self, modality: str) -> float:
        return self.config.modality_weights.get(modality, 1.0)

    def loss_terms(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        projections = require_projections(output, self.name)
        students = {m: F.normalize(projections[m], dim=1) for m in self.modalities}
        unimodal = torch.stack([
            self._weight(m) * F.cross_entropy(output.extras[f"unimodal_logits.{m}"], labels) for m in self.modalities
        ]).sum()
        views = torch.stack([students[m] for m in self.modalities], dim=1)
        contrast = supervised_contrastive_loss(views, labels, self.config.temperature)

        distances = []
        for pair in modality_pairs(self.modalities):
            for member in pair:
                target = output.extras.get(_target_name(member, pair))
                if target is not None:
                    distances.append(self._weight(member) * unit_distance(students[member], target))
        distill = torch.stack(distances).sum() if distances else output.logits.new_zeros(())
        return {
            "ce": F.cross_entropy(output.logits, labels),
            "unimodal_ce": self.config.unimodal_weight * unimodal,
            "contrast": self.config.contrast_weight * contrast,
            "distill": self.config.distill_weight * distill,
        }

    def entropy_features(self, output: ModelOutput) -> dict[str, torch.Tensor]:
        return require_projections(output, self.name)

    def after_optimizer_step(self, model: MultimodalModel) -> None:
        modules = model.method_modules
        if not isinstance(modules, CMRFModules):
            raise TypeError("the model was not built with CMRF's modules; pass method=<CMRF> to MultimodalModel")
        modules.update_teacher(model)
