"""Modules the host methods add to the model: SimMMDG's projection head and translation MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormalizedProjectionHead(nn.Module):
    """Linear(in, hidden)-BatchNorm-ReLU-Linear(hidden, hidden)-BatchNorm-ReLU-Linear(hidden, out), then L2 normalisation.

    SimMMDG's projection head (official code: hidden 2048, out 128). BatchNorm needs at least 2
    rows per batch in training.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(x), dim=1)


class TranslationMLP(nn.Module):
    """Linear(in, hidden)-ReLU-Linear(hidden, hidden)-ReLU-Dropout(0.5)-Linear(hidden, out).

    SimMMDG's cross-modal translator from one modality's embedding to another's (official code:
    hidden 2048).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
