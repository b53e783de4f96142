"""Data-parallel training: one run trained by W processes started by torchrun.

`ssltrace pretrain` under `torchrun --nproc-per-node W` (WORLD_SIZE, RANK and LOCAL_RANK set)
trains one run with W processes, one per GPU (NCCL, device cuda:LOCAL_RANK) or on the CPU
(gloo). `train.processes` must be W: it is part of the run's fingerprint, because the numbers
change with it (per-process BatchNorm statistics, per-process augmentation streams).

What every process shares, and how:
- the model: every rank builds it under the run's seed (the same initialisation), and at the
  start of each epoch rank 0's parameters and buffers are broadcast (as DistributedDataParallel
  broadcasts buffers, here once an epoch), so BatchNorm running statistics, which each process
  accumulates over its own share, are rank 0's in every process and in the checkpoints;
- the epoch: the permutation (or the method's order) is drawn identically on every rank from
  (seed, epoch) and rank 0's copy is broadcast with the method's per-epoch tensors (cluster
  labels, pseudo-labels) so that nondeterministic GPU k-means cannot split the ranks; each step
  takes the next `train.batch_size` images of it, of which rank r trains every W-th from the
  r-th (`local_order`); `train.batch_size` is the global batch and must be divisible by W.
  Strided, not contiguous: a batch whose first rows are its labelled images (Mean Teacher's
  and LLP's two-stream batches) gives every rank its share of them, so a loss averaged over a
  rank's labelled rows is, averaged over ranks, the global batch's (exactly when the labelled
  count divides by W);
- gradients: averaged over ranks after every backward (`average_gradients`), so every rank's
  optimiser takes the same step from the same state;
- losses: each rank's summed parts are averaged over ranks when read (every CHECK_EVERY steps
  and at the end of the epoch), so a diverging rank stops every rank, and train_log holds the
  mean over the global batch.

Why not torch's DistributedDataParallel: DDP all-reduces the gradients of the parameters used
in the wrapped module's `forward`. The methods are trained through `method.loss(views, ...)`,
which calls `backbone`/`head` (and momentum encoders, a second CMC network, DeepCluster's
per-epoch embedding in eval mode) directly, never a `forward` of the whole method; wrapping
would need every method rewritten around one forward and `find_unused_parameters` for those
that leave parts unused in some epochs (LA's IR epochs). The gradients DDP produces are the
mean over ranks; `average_gradients` computes exactly that, as one coalesced all_reduce per
dtype after backward. The price: no overlap of communication with the backward pass (DDP's
bucketing), which costs time on many GPUs, not correctness.

Per rank: the augmentation generator of epoch e is seeded from (seed, e, rank) (rank 0 keeps
the one-process seed, so a 1-process run is the run it always was) and the global torch RNG
(NCE noise, MoCo's shuffled BatchNorm groups) from (seed, rank). The resume state records the
world size and every rank's RNG state; a state is resumed only at its own world size.

Rank 0 alone writes (checkpoints, resume state, train_log, the lock); the others wait for it
at a barrier, read what it wrote, and never write to the run's directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ssltrace import distributed

ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
# A rank may wait this long at a barrier for rank 0 (its lock, its writes, a clustering).
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (size 1: a plain one-process run)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0


ONE = World()  # a plain one-process run


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The World torchrun describes in WORLD_SIZE / RANK / LOCAL_RANK (none set: one process)."""
    environ = os.environ if environ is None else environ
    present = [name for name in ENV if environ.get(name, "").strip()]
    if not present:
        return World()
    if len(present) < len(ENV):
        missing = ", ".join(name for name in ENV if name not in present)
        raise ValueError(
            f"{', '.join(present)} set but not {missing}: start several processes with "
            "torchrun (which sets all three), or unset them for one process"
        )
    try:
        size, rank, local = (int(environ[name]) for name in ENV)
    except ValueError:
        values = {name: environ[name] for name in ENV}
        raise ValueError(
            f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers, got {values}"
        ) from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ValueError(f"RANK {rank} / WORLD_SIZE {size} / LOCAL_RANK {local} is not a rank")
    return World(size, rank, local)


def check_settings(train: Mapping[str, Any], world: World) -> None:
    """train.processes must be the world size, and train.batch_size divisible by it."""
    processes = train.get("processes", 1)
    if processes != world.size:
        raise ValueError(
            f"run.train.processes is {processes} but {world.size} process"
            f"{'es run' if world.size > 1 else ' runs'} it: launch it with `torchrun "
            f"--nproc-per-node {processes} -m ssltrace.cli pretrain ...` (the workflow does), "
            f"or set train.processes: {world.size}"
        )
    if train["batch_size"] % world.size:
        raise ValueError(
            f"run.train.batch_size {train['batch_size']} is not divisible by the "
            f"{world.size} processes (train.processes): each trains an equal share of the batch"
        )


def device(world: World, setting: str, resolve: Callable[[str], torch.device]) -> torch.device:
    """One process: `resolve(setting)`. Several: cuda:LOCAL_RANK on a GPU machine (unless
    train.device is 'cpu'), else the CPU; a fixed 'cuda:N' would put every rank on one GPU."""
    if world.size == 1:
        return resolve(setting)
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve("cuda")  # a clear error when CUDA was asked for and is absent
    if world.local_rank >= torch.cuda.device_count():
        raise ValueError(
            f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
            "start at most one process per GPU (torchrun --nproc-per-node)"
        )
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """The process group of a W-process run (NCCL on CUDA, gloo on the CPU), torn down after."""
    if world.size == 1:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # all_gather_object and barriers use the current device
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Rank r's seed derived from `seed` (rank 0: `seed` itself, the one-process stream)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0])


def seed_global_rng(seed: int, world: World) -> None:
    """Give ranks > 0 their own global torch RNG stream (rank 0 keeps the run's)."""
    if world.rank:
        torch.manual_seed(rank_seed(seed, world.rank))


def sync_batchnorm(method: nn.Module, world: World, device: torch.device) -> nn.Module:
    """BatchNorm layers converted to torch.nn.SyncBatchNorm (train.sync_bn on several GPUs).

    torch's SyncBatchNorm runs on GPUs only, so it is refused on the CPU. The converted layers
    keep their parameters and buffers (same state_dict keys), so checkpoints load into the
    plain network extraction builds."""
    if world.size == 1:
        return method
    if device.type != "cuda":
        raise ValueError(
            "run.train.sync_bn: torch's SyncBatchNorm runs on GPUs only; set train.sync_bn: "
            "false for a CPU (gloo) run"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(method)


def local_order(order: torch.Tensor, steps: int, batch: int, world: World) -> torch.Tensor:
    """This rank's share of the epoch `order`: step s trains global rows order[s*B:(s+1)*B]
    of which rank r takes rows r, r+W, r+2W, ..., so the W shares of a step are its global
    batch (the module docstring says why strided)."""
    if world.size == 1:
        return order
    share = batch // world.size
    return order[: steps * batch].reshape(steps, share, world.size)[:, :, world.rank].reshape(-1)


def sync_from_rank0(method: nn.Module, *tensors: torch.Tensor | None) -> None:
    """Rank 0's parameters, buffers, per-epoch tensors of the method (attributes such as
    cluster labels) and `tensors`, in every process (in place)."""
    if not distributed.is_distributed():
        return
    own = [v for v in vars(method).values() if isinstance(v, torch.Tensor)]
    shared = [*method.parameters(), *method.buffers(), *own, *tensors]
    for tensor in shared:
        if tensor is not None:
            distributed.broadcast_(tensor.data)


def average_gradients(parameters: Sequence[nn.Parameter]) -> None:
    """Every parameter's gradient replaced by its mean over the processes (what DDP computes),
    as one all_reduce per dtype of the gradients flattened into one buffer."""
    if not distributed.is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        distributed.mean_(flat)
        offset = 0
        for grad in group:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """A copy of `x` averaged over the processes (`x` itself when not distributed)."""
    return distributed.mean_(x.clone()) if distributed.is_distributed() else x


def barrier() -> None:
    if distributed.is_distributed():
        dist.barrier()


def rank0_first(fn: Callable[[], Any]) -> Any:
    """Run `fn` in rank 0, then (once it is done) in the other ranks, then go on together:
    rank 0 may write while it runs; the others read what it wrote."""
    if not distributed.is_distributed():
        return fn()
    result = fn() if distributed.rank() == 0 else None
    barrier()
    if distributed.rank() != 0:
        result = fn()
    barrier()
    return result


def all_rng_states(own: Mapping[str, Any]) -> list[Any]:
    """Every rank's RNG state (`own` in this process), in rank order."""
    if not distributed.is_distributed():
        return [dict(own)]
    states: list[Any] = [None] * distributed.world_size()
    dist.all_gather_object(states, dict(own))
    return states


@contextlib.contextmanager
def locked(store, log: Callable[[str], None], world: World) -> Iterator[None]:
    """Rank 0 holds the run's lock (`StateStore.locked`) while the others wait for it."""
    if world.size == 1:
        with store.locked(log):
            yield
        return
    with store.locked(log) if world.writer else contextlib.nullcontext():
        barrier()
        yield


def check_saved_world(saved: Mapping[str, Any] | None, world: World, root: Any) -> None:
    """Stop when the saved state was trained by another number of processes: its batches,
    RNG streams and BatchNorm statistics are those of that world size."""
    if not saved or not isinstance(saved.get("description"), Mapping):
        return
    train = saved["description"].get("train") or {}
    if not isinstance(train, Mapping) or not train:
        return  # a method that does not train: nothing depends on the processes
    before = train.get("processes", 1)
    if before != world.size:
        raise ValueError(
            f"the saved training state in {root} was trained by {before} process"
            f"{'es' if before != 1 else ''} and this run has {world.size}: a state resumes "
            f"only at its own world size (run it with train.processes: {before} under "
            f"`torchrun --nproc-per-node {before}`, or delete {root} to start over)"
        )
