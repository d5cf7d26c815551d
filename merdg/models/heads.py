"""The MER projector and the fusion head."""

from __future__ import annotations

from torch import nn


class Projector(nn.Module):
    """Linear(in, hidden)-LayerNorm-ReLU-Linear(hidden, hidden)-LayerNorm-ReLU-Linear(hidden, out).

    The per-modality projection MER is applied to, as in the official MER-DG code (hidden 2048,
    out 128). In the Fusion host it is trained only by the MER term.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.LayerNorm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x):
        return self.layers(x)


class FusionHead(nn.Module):
    """Linear(in, hidden)-ReLU-Dropout-Linear(hidden, classes) over concatenated embeddings."""

    def __init__(self, in_dim: int, hidden_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x):
        return self.layers(x)
