"""Mutual information neural estimation (MINE; Belghazi et al. 2018, ICML).

MINE lower-bounds I(X; Z) by the Donsker–Varadhan (DV) representation of the KL divergence,

    I(X; Z) >= sup_T  E_P[T(x, z)] − log E_{P_X ⊗ P_Z}[exp T(x, z')],

with T a neural "statistics network" on the concatenated pair. Joint samples are the pairs
(x_i, z_i); samples of the product of marginals pair x_i with z of another sample (a random
permutation of the batch). The gradient of the log term is biased on mini-batches
(∇ log Ê[e^T] = ∇Ê[e^T] / Ê[e^T], a ratio of batch estimates); the paper's correction
(Belghazi et al. §3.2) replaces the denominator by an exponential moving average of Ê[e^T]
over batches, which is what `mine_estimate` does (`ema` = its rate α).

The reported estimate is the DV bound of the trained network on the whole sample, the
marginal term averaged over `eval_shuffles` permutations (log-mean-exp, computed stably).

Validated in tests/test_mine.py on correlated Gaussians, whose mutual information is known in
closed form: I = −d/2 · log(1 − ρ²) for d independent coordinate pairs of correlation ρ.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ssltrace.analysis.probes import check_features, resolve_device


def gaussian_pairs(
    n: int, dim: int, mi_nats: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n samples of (X, Z), each [n, dim], with I(X; Z) = mi_nats exactly.

    Coordinates are independent pairs of unit Gaussians with correlation ρ, where
    −dim/2 · log(1 − ρ²) = mi_nats, i.e. ρ² = 1 − exp(−2 · mi_nats / dim).
    """
    if mi_nats <= 0 or dim < 1 or n < 2:
        raise ValueError(f"need mi_nats > 0, dim >= 1, n >= 2; got {mi_nats}, {dim}, {n}")
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi_nats / dim))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    noise = rng.standard_normal((n, dim))
    z = rho * x + math.sqrt(1.0 - rho**2) * noise
    return x.astype(np.float32), z.astype(np.float32)


def gaussian_mi(dim: int, rho: float) -> float:
    """Closed-form I(X; Z) of `dim` independent coordinate pairs with correlation rho."""
    return -0.5 * dim * math.log(1.0 - rho**2)


class StatisticsNetwork(nn.Module):
    """T(x, z): an MLP on [x, z] with ELU activations (Belghazi et al. use such MLPs)."""

    def __init__(self, x_dim: int, z_dim: int, hidden: int, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        width = x_dim + z_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ELU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, z], dim=1)).squeeze(1)


def dv_bound(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """Donsker–Varadhan bound mean(T_joint) − log mean(exp T_marginal) (log-mean-exp)."""
    log_mean_exp = torch.logsumexp(t_marginal, dim=0) - math.log(t_marginal.numel())
    return t_joint.mean() - log_mean_exp


def mine_estimate(
    x: np.ndarray,
    z: np.ndarray,
    *,
    iterations: int = 2000,
    batch_size: int = 256,
    hidden: int = 256,
    depth: int = 2,
    lr: float = 1e-4,
    ema: float = 0.01,
    eval_shuffles: int = 10,
    standardise: bool = True,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> float:
    """MINE estimate of I(X; Z) in nats from paired samples x [n, dx], z [n, dz].

    Args:
        iterations: Adam steps on mini-batches of `batch_size` pairs.
        hidden, depth: width and number of hidden layers of the statistics network.
        lr: Adam learning rate.
        ema: rate α of the moving average of Ê[e^T] in the bias-corrected gradient (the
            paper's correction); α = 1 is the plain (biased) mini-batch DV gradient.
        eval_shuffles: permutations averaged in the marginal term of the final bound.
        standardise: z-score each input column first (MI is invariant to per-coordinate
            affine maps; it only conditions the optimisation). Constant columns stay 0.
        seed: network initialisation and batch order (one MINE "initialisation").
    """
    xs = check_features(x, "x", np.float32)
    zs = check_features(z, "z", np.float32)
    if xs.shape[0] != zs.shape[0]:
        raise ValueError(f"x and z must pair up: {xs.shape[0]} vs {zs.shape[0]} samples")
    _check_settings(iterations, batch_size, hidden, depth, lr, ema, eval_shuffles)
    if standardise:
        xs, zs = _standardise(xs), _standardise(zs)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    torch_x, torch_z = torch.from_numpy(xs).to(dev), torch.from_numpy(zs).to(dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = StatisticsNetwork(xs.shape[1], zs.shape[1], hidden, depth).to(dev)
    _train(net, torch_x, torch_z, gen, iterations, min(batch_size, xs.shape[0]), lr, ema)
    return _evaluate(net, torch_x, torch_z, gen, eval_shuffles)


def mine_average(x: np.ndarray, z: np.ndarray, inits: int = 5, seed: int = 0, **options) -> dict:
    """MINE over `inits` initialisations (seeds seed .. seed+inits−1): mean, SD and each."""
    if not isinstance(inits, int) or inits < 1:
        raise ValueError(f"inits must be an integer >= 1, got {inits!r}")
    values = np.array([mine_estimate(x, z, seed=seed + i, **options) for i in range(inits)])
    return {"mean": float(values.mean()), "sd": float(values.std()), "values": values}


def _train(net, x, z, gen, iterations, batch, lr, ema) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    moving = None
    n = x.shape[0]
    for _ in range(iterations):
        idx = torch.randperm(n, generator=gen)[:batch].to(x.device)
        shuffled = idx[torch.randperm(batch, generator=gen).to(x.device)]
        t_joint = net(x[idx], z[idx])
        t_marg = net(x[idx], z[shuffled])
        # exp(T − max) keeps the batch mean finite; the max cancels in the ratio below.
        shift = t_marg.max().detach()
        mean_exp = torch.exp(t_marg - shift).mean()
        batch_value = mean_exp.detach() * torch.exp(shift)
        moving = batch_value if moving is None else (1 - ema) * moving + ema * batch_value
        # Surrogate whose gradient is ∇E[T] − ∇Ê[e^T] / moving: the bias-corrected DV gradient.
        loss = -(t_joint.mean() - mean_exp * torch.exp(shift) / moving)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def _evaluate(net, x, z, gen, shuffles) -> float:
    t_joint = _scores(net, x, z)
    marg = [
        _scores(net, x, z[torch.randperm(x.shape[0], generator=gen).to(x.device)])
        for _ in range(shuffles)
    ]
    return float(dv_bound(t_joint.double(), torch.cat(marg).double()))


def _scores(net, x, z, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([net(x[i : i + chunk], z[i : i + chunk]) for i in range(0, len(x), chunk)])


def _standardise(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return ((a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def _check_settings(iterations, batch_size, hidden, depth, lr, ema, eval_shuffles) -> None:
    for name, value in (
        ("iterations", iterations),
        ("batch_size", batch_size),
        ("hidden", hidden),
        ("depth", depth),
        ("eval_shuffles", eval_shuffles),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if batch_size < 2:
        raise ValueError(
            f"batch_size must be >= 2 (a batch pairs with its shuffle), got {batch_size}"
        )
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0 < ema <= 1:
        raise ValueError(f"ema must be in (0, 1], got {ema!r}")
