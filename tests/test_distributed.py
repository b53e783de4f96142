"""Global-batch losses across processes: 2 gloo processes on CPU give the loss and the
(DDP-averaged) gradients of one process on the concatenated batch.

BatchNorm statistics are per process (no SyncBatchNorm), so the networks run in eval mode
(running statistics): what is compared is the gather inside the losses, not normalisation.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ssltrace import distributed
from ssltrace.losses import barlow_twins_loss, nt_xent_loss, vicreg_loss
from ssltrace.network import build_network

WORLD = 2
PER_RANK = 4
METHODS = {
    "simclr": {"proj_dim": 8, "proj_hidden_dim": 16},
    "vicreg": {"proj_dim": 8, "proj_hidden_dim": 16},
    "barlow_twins": {"proj_dim": 8, "proj_hidden_dim": 16},
}
LOSSES = {
    "nt_xent_loss": lambda a, b: nt_xent_loss(a, b, temperature=0.5)["loss"],
    "vicreg_loss": lambda a, b: vicreg_loss(a, b)["loss"],
    "barlow_twins_loss": lambda a, b: barlow_twins_loss(a, b)["loss"],
}


def fixed_inputs():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * PER_RANK, 6, generator=g)
    views = [torch.randn(WORLD * PER_RANK, 3, 32, 32, generator=g) for _ in range(2)]
    return x1, x1 + 0.3 * torch.randn(x1.shape, generator=g), views


def linear():
    torch.manual_seed(1)
    return nn.Linear(6, 5)


def network(method):
    torch.manual_seed(2)
    arch = {"name": "res_lh", "depth": 1, "hidden": 4}
    return build_network(arch, method, METHODS[method], n_classes=3).eval()


def grads(module):
    return {k: p.grad.clone() for k, p in module.named_parameters() if p.grad is not None}


def losses_and_grads(rows: slice) -> dict:
    """Each loss of a linear layer's embeddings and each method's loss, with the parameter
    gradients, for the batch rows `rows` (gathered across processes when distributed)."""
    x1, x2, views = fixed_inputs()
    out = {}
    for name, loss_fn in LOSSES.items():
        layer = linear()
        z1 = distributed.gather(layer(x1[rows]))
        z2 = distributed.gather(layer(x2[rows]))
        loss = loss_fn(z1, z2)
        loss.backward()
        out[name] = (loss.detach(), mean_over_processes(grads(layer)))
    for method in METHODS:
        net = network(method)
        loss = net.loss([v[rows] for v in views])["loss"]
        loss.backward()
        out[method] = (loss.detach(), mean_over_processes(grads(net)))
    return out


def mean_over_processes(gradients: dict) -> dict:
    """What DistributedDataParallel does to parameter gradients: their mean over ranks."""
    if distributed.is_distributed():
        for tensor in gradients.values():
            dist.all_reduce(tensor)
            tensor /= distributed.world_size()
    return gradients


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        assert distributed.rank() == rank and distributed.world_size() == WORLD
        result = losses_and_grads(slice(rank * PER_RANK, (rank + 1) * PER_RANK))
        result["unequal_error"] = unequal_batch_error(rank)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("name", [*LOSSES, *METHODS])  # keys distinct: one dict holds both
def test_two_processes_equal_one_process_on_the_whole_batch(two_process_results, name):
    single_loss, single_grads = losses_and_grads(slice(None))[name]
    assert single_grads  # the comparison covers real gradients
    for result in two_process_results:
        loss, gradients = result[name]
        torch.testing.assert_close(loss, single_loss, rtol=0, atol=1e-5)
        assert gradients.keys() == single_grads.keys()
        for key, grad in gradients.items():
            torch.testing.assert_close(grad, single_grads[key], rtol=0, atol=1e-5, msg=key)


def test_a_local_batch_alone_gives_another_loss(two_process_results):
    # The check above is not vacuous: without the gather each process's loss differs.
    x1, x2, _ = fixed_inputs()
    layer = linear()
    local = LOSSES["nt_xent_loss"](layer(x1[:PER_RANK]), layer(x2[:PER_RANK]))
    assert not torch.isclose(local, two_process_results[0]["nt_xent_loss"][0], atol=1e-3)


def test_single_process_gather_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    assert not distributed.is_distributed()
    assert distributed.gather(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0


def unequal_batch_error(rank) -> str:
    try:
        distributed.gather(torch.zeros(3 + rank, 2))
    except ValueError as exc:
        return str(exc)
    return "no error"


def test_unequal_batches_are_refused(two_process_results):
    for result in two_process_results:
        assert "same batch size on every process, got [3, 4]" in result["unequal_error"]
