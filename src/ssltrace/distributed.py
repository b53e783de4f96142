"""The global batch across processes, for losses that need all of it.

SimCLR's NT-Xent takes its negatives from the whole batch and VICReg / Barlow Twins compute
variance, covariance and cross-correlation statistics over it. Under data parallelism each
process holds 1/W of the batch, so these methods gather every process's embeddings first
(`gather`) and each process computes the loss of the global batch.

Gradients: `torch.distributed.nn.functional.all_gather` is differentiable; its backward sums,
over processes, the gradient each process's (identical) global loss sends to a rank's slice,
i.e. W times dL/dz_r. DistributedDataParallel then averages the parameter gradients over the W
processes, which gives exactly dL/dtheta of the global-batch loss, as one process on the
concatenated batch would (tested with 2 gloo processes).

Not shared across processes: BatchNorm statistics. Each process normalises with its own
1/W of the batch unless the model is converted with torch.nn.SyncBatchNorm, so a W-process
training step is not that of one process on the whole batch wherever BatchNorm is in training
mode; the gather makes the *losses* global, not the normalisation.

Without an initialised process group (every single-process run), `gather(x)` returns `x`
itself: single-process results are bit-identical to before.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every process's `x` [n, ...] concatenated in rank order [W*n, ...], keeping gradients.

    All processes must pass the same shape (equal per-process batches, as a
    DistributedSampler with drop_last gives). Identity (the same tensor) when not distributed.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    # Tensors on x's device: NCCL gathers only CUDA tensors, gloo CPU ones.
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"gather needs the same batch size on every process, got {[int(s) for s in sizes]}; "
            "drop the last incomplete batch (DistributedSampler(drop_last=True))"
        )
    with warnings.catch_warnings():
        # Deprecated (for torch.distributed._functional_collectives); kept because its backward
        # is the one the docstring relies on and the tests check. Warned at every step.
        warnings.filterwarnings("ignore", "torch.distributed.nn.functional", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


@torch.no_grad()
def gather_detached(x: torch.Tensor) -> torch.Tensor:
    """Every process's `x` [n, ...] concatenated in rank order, without gradient (memory-bank
    and queue updates: every process then writes the same rows, so the banks stay equal).
    Identity when not distributed; equal shapes on every process, as `gather`."""
    if not is_distributed():
        return x
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


@torch.no_grad()
def mean_(x: torch.Tensor) -> torch.Tensor:
    """`x` replaced in place by its mean over processes (a no-op when not distributed)."""
    if is_distributed():
        dist.all_reduce(x)
        x /= world_size()
    return x


@torch.no_grad()
def broadcast_(x: torch.Tensor, source: int = 0) -> torch.Tensor:
    """`x` replaced in place by process `source`'s copy (a no-op when not distributed)."""
    if is_distributed():
        dist.broadcast(x, source)
    return x
