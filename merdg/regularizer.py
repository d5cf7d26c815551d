"""MER: the modality-wise entropy regularizer added to a host method's loss.

L = L_host + lambda * sum_m w_m * L_est(norm(Z_m)), where Z_m are the features of modality m (in
the official MER-DG code, a 128-d projection of each encoder's embedding), norm is an optional
per-feature normalisation and L_est is an entropy estimator's loss. MER-DG (Yarici and AlRegib,
ICML 2026) uses the log-determinant estimator, no normalisation, lambda = 3 and w_m = 1.

Under DDP the estimate is either per worker or over the global batch. With "local", each
worker's batch is estimated alone, so lambda's effect depends on the per-worker batch size. With
"global", features are gathered from every worker with an autograd all-gather whose backward
sums the gradients. The parameter gradient after DDP's averaging then equals the single-process
gradient on the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from merdg.config import MER_SCOPES as SCOPES
from merdg.config import NORMALIZATIONS
from merdg.entropy import EntropyEstimator

STANDARDIZE_EPS = 1e-4


@dataclass
class MERTerms:
    """The estimator loss per feature set (unweighted) and their weighted sum times lambda."""

    per_modality: dict[str, torch.Tensor]
    total: torch.Tensor


def normalize_features(z: torch.Tensor, method: str) -> torch.Tensor:
    """Apply 'none', 'l2' (unit-norm rows) or 'standardize' (zero-mean, unit-variance columns)."""
    if method == "none":
        return z
    if method == "l2":
        return F.normalize(z, dim=1, eps=1e-8)
    if method == "standardize":
        if z.shape[0] < 2:
            return z - z.mean(dim=0, keepdim=True)
        centred = z - z.mean(dim=0, keepdim=True)
        return centred / (centred.std(dim=0, unbiased=False, keepdim=True) + STANDARDIZE_EPS)
    raise ValueError(f"unknown feature normalisation {method!r}; choose from {list(NORMALIZATIONS)}")


def _distributed_world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_rows(z: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate every worker's rows in rank order; gradients flow back to each worker's rows.

    Workers may hold different numbers of rows: each pads to the largest count, and the padding
    is cut off after the gather. The backward of ``torch.distributed.nn.functional.all_gather``
    sums the gradient of every worker's copy of the loss into the rows' owner.
    """
    world = _distributed_world()
    if world == 1:
        return z, mask
    import torch.distributed.nn.functional as dist_fn

    count = torch.tensor([z.shape[0]], device=z.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = F.pad(z, (0, 0, 0, max(sizes) - z.shape[0]))
    gathered = dist_fn.all_gather(padded)
    rows = torch.cat([part[:size] for part, size in zip(gathered, sizes)])
    if mask is None:
        return rows, None
    padded_mask = F.pad(mask, (0, max(sizes) - mask.shape[0]))
    masks = [torch.zeros_like(padded_mask) for _ in range(world)]
    dist.all_gather(masks, padded_mask)
    return rows, torch.cat([part[:size] for part, size in zip(masks, sizes)])


class MERRegularizer(nn.Module):
    """Applies one entropy estimator to each modality's features and weights the sum.

    Args:
        estimator: the entropy estimator, shared by all modalities.
        weight: lambda, the weight of the summed terms in the total loss.
        modality_weights: optional w_m per feature-set name; missing names weigh 1.
        normalize: per-feature normalisation before the estimator ('none', 'l2', 'standardize').
        scope: 'local' (per DDP worker) or 'global' (gathered over all workers).
    """

    def __init__(
        self,
        estimator: EntropyEstimator,
        weight: float,
        modality_weights: Mapping[str, float] | None = None,
        *,
        normalize: str = "none",
        scope: str = "local",
    ):
        super().__init__()
        if weight < 0:
            raise ValueError(f"MER weight (lambda) must be >= 0, got {weight}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown feature normalisation {normalize!r}; choose from {list(NORMALIZATIONS)}")
        if scope not in SCOPES:
            raise ValueError(f"unknown MER scope {scope!r}; choose from {list(SCOPES)}")
        negative = {name: w for name, w in (modality_weights or {}).items() if w < 0}
        if negative:
            raise ValueError(f"modality weights must be >= 0, got {negative}")
        self.estimator = estimator
        self.weight = weight
        self.modality_weights = dict(modality_weights or {})
        self.normalize = normalize
        self.scope = scope

    def _term(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.scope == "global":
            z, mask = gather_rows(z, mask)
        if mask is not None:
            z = z[mask]
        return self.estimator(normalize_features(z, self.normalize))

    def forward(
        self, features: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None = None
    ) -> MERTerms:
        """Return the per-modality estimator losses and lambda times their weighted sum.

        ``masks`` optionally marks, per feature set, the rows to use (False for a sample that
        lacks that modality). Masked rows take no part in normalisation or estimation.
        """
        if not features:
            raise ValueError("MER needs the features of at least one modality")
        masks = masks or {}
        per_modality = {name: self._term(z, masks.get(name)) for name, z in features.items()}
        weighted = [self.modality_weights.get(name, 1.0) * loss for name, loss in per_modality.items()]
        return MERTerms(per_modality=per_modality, total=self.weight * torch.stack(weighted).sum())
