"""Loss functions the host methods share: supervised contrastive, InfoNCE and unit-vector distance.

They run in the features' dtype; the contrastive ones take L2-normalised rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPCON_BASE_TEMPERATURE = 0.07
"""Reference temperature tau_b of the supervised contrastive loss's scale tau / tau_b (Khosla et al., 2020)."""


def supervised_contrastive_loss(
    views: torch.Tensor, labels: torch.Tensor, temperature: float,
    base_temperature: float = SUPCON_BASE_TEMPERATURE,
) -> torch.Tensor:
    """Return the supervised contrastive loss (Khosla et al., NeurIPS 2020) over several views of a batch.

    ``views`` is (B, V, P) with unit rows (here: one view per modality) and ``labels`` is (B,).
    Every one of the N = B * V rows is an anchor i. Its positives P(i) are the other rows with its
    label, including its own other views. With s_ij = z_i . z_j / tau:

        loss = -(tau / tau_b) * mean_i [ mean_{p in P(i)} ( s_ip - log sum_{j != i} exp(s_ij) ) ]

    Anchors without a positive (possible only with V = 1) are left out of the mean.
    """
    if views.ndim != 3:
        raise ValueError(f"views must have shape (batch, views, dim), got {tuple(views.shape)}")
    batch, num_views, _ = views.shape
    features = views.transpose(0, 1).reshape(batch * num_views, -1)
    row_labels = labels.repeat(num_views)
    is_self = torch.eye(batch * num_views, dtype=torch.bool, device=views.device)

    logits = (features @ features.T / temperature).masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (row_labels[:, None] == row_labels[None, :]) & ~is_self
    num_positives = positives.sum(dim=1)
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1) / num_positives.clamp_min(1)
    has_positive = num_positives > 0
    return -(temperature / base_temperature) * mean_log_prob[has_positive].mean()


def info_nce_loss(anchors: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return InfoNCE of (B, P) unit rows: row i of ``candidates`` is the positive of anchor i.

    loss = mean_i [ -log( exp(a_i . c_i / tau) / sum_j exp(a_i . c_j / tau) ) ], the softmax
    cross-entropy that picks each anchor's own candidate among the batch's B candidates.
    """
    logits = anchors @ candidates.T / temperature
    return F.cross_entropy(logits, torch.arange(anchors.shape[0], device=anchors.device))


def unit_distance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return mean_i || predicted_i / ||predicted_i|| - target_i / ||target_i|| ||_2 over (B, D) rows."""
    return torch.linalg.vector_norm(F.normalize(predicted, dim=1) - F.normalize(target, dim=1), dim=1).mean()
