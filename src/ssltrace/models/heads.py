"""Projection head shared by the self-supervised methods."""

from __future__ import annotations

import torch
from torch import nn

from ssltrace.models.backbone import check_positive_int


class MLPHead(nn.Module):
    """fc1 -> ReLU -> BatchNorm1d -> fc2, the order seed paper 000 (section 2.3) specifies.

    The attribute names are part of the contract: extraction hooks `head.fc1`.
    """

    def __init__(self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128):
        super().__init__()
        in_dim = check_positive_int("in_dim", in_dim)
        hidden_dim = in_dim if hidden_dim is None else check_positive_int("hidden_dim", hidden_dim)
        out_dim = check_positive_int("out_dim", out_dim)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.bn(self.relu(self.fc1(x))))
