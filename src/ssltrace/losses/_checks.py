"""Input checks shared by the loss functions: they fail with the argument's name and shape."""

from __future__ import annotations

import torch


def check_pair(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, min_rows: int = 1):
    """Both embeddings must be [N, D] with the same shape and at least `min_rows` rows."""
    for name, x in ((name_a, a), (name_b, b)):
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 2-D tensor [batch, dim], got {shape}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    if a.shape[0] < min_rows:
        raise ValueError(f"{name_a} needs at least {min_rows} rows (batch), got {a.shape[0]}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
