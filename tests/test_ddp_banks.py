"""Memory banks, the MoCo queue and clustering inputs across processes: 2 gloo processes,
each with half of a batch, end a step with the bank (queue, features) one process computes
on the whole batch, identical in both; where the paper's loss is a mean over the global
batch (full-softmax IR, LA, MoCo) the loss and the averaged gradients equal one process's.

Networks run in eval mode (BatchNorm from running statistics): what is compared is the
sharing of banks and batches, not per-process normalisation (tests/test_distributed.py).
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssltrace import distributed
from ssltrace.methods import EpochContext
from ssltrace.network import build_network
from ssltrace.training import ddp

WORLD, PER_RANK, N_IMAGES = 2, 4, 24
SMALL = {"proj_dim": 8, "proj_hidden_dim": 16}
# name -> (method, params, whether the loss is a global-batch mean to compare)
CASES = {
    "ir_softmax": ("instance_recognition", SMALL, True),
    "ir_nce": ("instance_recognition", {**SMALL, "nce_negatives": 5}, False),
    "la": (
        "local_aggregation",
        {**SMALL, "ir_epochs": 0, "kmeans_k": 3, "n_kmeans": 2, "background_k": 10},
        True,
    ),
    "llp": ("local_label_propagation", {**SMALL, "ir_epochs": 0, "background_k": 10}, False),
    "cmc_nce": ("cmc", {**SMALL, "negatives": 6}, False),
    "moco": ("moco_v2", {**SMALL, "queue_size": 12}, True),
    "moco_one_way": ("moco_v2", {**SMALL, "queue_size": 12, "symmetric": False}, True),
}
BANKS = ("memory_bank.entries", "nce_z", "memory_l", "memory_ab", "queue", "queue_ptr")


def inputs():
    g = torch.Generator().manual_seed(0)
    index = torch.randperm(N_IMAGES, generator=g)[: WORLD * PER_RANK]
    views = [torch.randn(WORLD * PER_RANK, 3, 32, 32, generator=g) for _ in range(2)]
    labels = torch.randint(-1, 3, (WORLD * PER_RANK,), generator=g)
    all_labels = torch.randint(0, 3, (N_IMAGES,), generator=g)
    all_labels[index] = labels
    images = torch.randint(0, 256, (11, 32, 32, 3), dtype=torch.uint8, generator=g)
    return index, views, labels, all_labels, images


def network(case):
    method, params, _ = CASES[case]
    torch.manual_seed(2)  # every process builds the same network and bank
    arch = {"name": "res_lh", "depth": 1, "hidden": 4}
    net = build_network(arch, method, params, n_classes=3)
    net.setup(N_IMAGES)
    return net.eval()


def one_step(case, rows: slice) -> dict:
    """A step on the batch `rows` of this process: loss (mean over processes), averaged
    gradients, and the banks after the step."""
    index, views, labels, all_labels, _ = inputs()
    net = network(case)
    if hasattr(net, "cluster_bank") or hasattr(net, "pseudo_labels"):  # LA / LLP clusters
        ctx = EpochContext(1, None, all_labels, None, torch.Generator().manual_seed(3), None, 8)
        net.before_epoch(ctx)
    torch.manual_seed(5 + distributed.rank())  # noise of NCE: each process its own
    out = net.loss([v[rows] for v in views[: net.n_views]], labels[rows], index[rows])
    out["loss"].backward()
    ddp.average_gradients(list(net.parameters()))
    net.after_step(0.0)
    state = dict(net.named_buffers())
    banks = {k: state[k].clone() for k in BANKS if k in state}
    grads = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    return {"loss": ddp.mean_over_ranks(out["loss"].detach()), "grads": grads, "banks": banks}


def features():
    _, _, _, _, images = inputs()
    net = network_deepcluster()

    def plain(x):
        return x.permute(0, 3, 1, 2).float() / 255

    return net.embed_sharded(images, plain, chunk=3)


def network_deepcluster():
    torch.manual_seed(2)
    arch = {"name": "res_lh", "depth": 1, "hidden": 4}
    return build_network(arch, "deepcluster", {"k": 2, "pca_dim": 4}, n_classes=3)


def worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        result = {case: one_step(case, rows) for case in CASES}
        result["deepcluster_features"] = features()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("banks")
    mp.spawn(worker, args=(str(tmp / "init"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", CASES)
def test_banks_after_a_step_equal_one_process_on_the_whole_batch(two_processes, case):
    single = one_step(case, slice(None))
    assert single["banks"], "the case has a bank or queue to compare"
    for result in two_processes:
        assert result[case]["banks"].keys() == single["banks"].keys()
        for key, bank in single["banks"].items():
            if key == "nce_z":  # estimated from random noise: equal across ranks (below)
                continue
            torch.testing.assert_close(result[case]["banks"][key], bank, rtol=0, atol=1e-6)
    for key, bank in two_processes[0][case]["banks"].items():  # identical in every process
        assert torch.equal(bank, two_processes[1][case]["banks"][key]), key


def test_the_banks_moved(two_processes):
    # Not vacuous: the step changed the bank rows of the batch (and only those).
    index = inputs()[0]
    before = network("ir_softmax").memory_bank.entries
    after = two_processes[0]["ir_softmax"]["banks"]["memory_bank.entries"]
    moved = (after - before).abs().sum(dim=1) > 0
    assert moved.nonzero().flatten().tolist() == sorted(index.tolist())


@pytest.mark.parametrize("case", [c for c, (_, _, global_loss) in CASES.items() if global_loss])
def test_global_losses_and_gradients_equal_one_process(two_processes, case):
    single = one_step(case, slice(None))
    assert single["grads"]
    for result in two_processes:
        torch.testing.assert_close(result[case]["loss"], single["loss"], rtol=0, atol=1e-5)
        assert result[case]["grads"].keys() == single["grads"].keys()
        for key, grad in single["grads"].items():
            torch.testing.assert_close(result[case]["grads"][key], grad, rtol=0, atol=1e-5)


def test_nce_normalisers_are_shared(two_processes):
    for case in ("ir_nce", "cmc_nce"):
        z = [result[case]["banks"]["nce_z"] for result in two_processes]
        assert (z[0] > 0).all() and torch.equal(z[0], z[1]), case


def test_deepcluster_features_sharded_and_gathered(two_processes):
    # 11 images over 2 processes: shares of 6 and 5 (+1 padding), gathered in order.
    single = features()
    assert single.shape[0] == 11
    for result in two_processes:
        torch.testing.assert_close(result["deepcluster_features"], single, rtol=0, atol=1e-6)
