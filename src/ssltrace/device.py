"""Which device a stage computes on: one rule for every stage."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None): a CUDA device when present, else the CPU; otherwise torch.device(...).

    With several visible GPUs, 'auto' takes the one with the most free memory, so parallel
    jobs on a multi-GPU workstation (`--resources gpu=N`) spread over the cards; under SLURM
    each job sees only its own card. Asking for CUDA without a GPU is an error.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if torch.cuda.device_count() == 1:
            return torch.device("cuda")
        free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
        return torch.device("cuda", max(range(len(free)), key=free.__getitem__))
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA device is available")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved
