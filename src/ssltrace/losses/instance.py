"""Losses over a memory bank: Instance Recognition (Wu et al., 2018) and Local Aggregation
(Zhuang, Zhai & Yamins, 2019), as pure functions of the batch's embeddings and the bank.

Notation: v the l2-normalised embeddings of the batch [B, D], V the bank [n, D] (one
l2-normalised entry per training image, no gradient), i the batch's positions in the training
set, s_j = v . V_j / t the temperature-scaled similarities.

Instance Recognition, non-parametric softmax (Wu et al. §3.1; P(i|v) = exp(s_i) / sum_j
exp(s_j) over the whole bank), the loss of lemniscate.pytorch's LinearAverage:

    l = -s_i + log sum_j exp(s_j)

`invariance` is the mean of -s_i (pull to the image's own bank entry), `regularisation` the
mean of the log-partition (push from every entry), as NT-Xent's split; they add up to `loss`.

Instance Recognition with NCE (Wu et al. §3.2): with m noise entries j_1..j_m drawn uniformly
from the bank (P_n = 1/n), P(j|v) = exp(s_j) / Z with Z the Monte-Carlo estimate
Z = n / (B (m + 1)) sum_b sum_{j in {i_b, noise_b}} exp(s_bj) of `nce_normaliser` (fixed after
its first estimate, as the paper and its code do), h(j, v) = P(j|v) / (P(j|v) + m P_n) and

    l = -log h(i, v) - sum_k log(1 - h(j_k, v)).

With a_j = s_j - log(m Z / n), -log h = softplus(-a) = -s_i + log(m Z / n) + softplus(a) and
-log(1 - h) = softplus(a), so `invariance` is again the mean of -s_i and `regularisation`
the mean of log(m Z / n) + softplus(a_i) + sum_k softplus(a_jk): the NCE stand-in for the
log-partition. Wu et al.'s proximal term (§3.3) is not used, as in the authors' released code.

Local Aggregation (Zhuang et al., Eqs. 2-4): B_i = the k bank entries most similar to v
(background neighbours, `background_neighbours`), C_i = the entries that share v's image's
cluster in at least one of several k-means clusterings of the bank (close neighbours),
P(A|v) = sum_{j in A} exp(s_j) / Z, and

    l = -log( P(C_i ∩ B_i | v) / P(B_i | v) )

(Z cancels). As in the authors' code, 1e-7 is added to the ratio, so an empty intersection
gives a finite loss. `invariance` = -log( sum_{C∩B} exp(s_j) + 1e-7 sum_B exp(s_j) ) (pull
towards the close neighbours), `regularisation` = log sum_B exp(s_j) (push from the
background); they add up to `loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssltrace.losses._checks import check_positive

# Added to P(C∩B|v) / P(B|v) by the authors' code (LocalAggregation-Pytorch, localagg.py).
LA_EPSILON = 1e-7


def instance_softmax_loss(
    v: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, temperature: float = 0.07
) -> dict:
    """Wu et al.'s non-parametric softmax of embeddings `v` [B, D] over the whole `bank`."""
    v, bank = _check_bank(v, bank, index)
    check_positive("temperature", temperature)
    logits = v @ bank.T / temperature
    alignment = -logits.gather(1, index[:, None]).squeeze(1)
    return _split(alignment, torch.logsumexp(logits, dim=1))


def nce_normaliser(
    v: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    noise: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """Wu et al.'s Monte-Carlo estimate of Z: n times the mean of exp(s) over each row's own
    entry and its noise entries (lemniscate.pytorch estimates it so, once, on the first batch)."""
    v, bank = _check_bank(v, bank, index)
    check_positive("temperature", temperature)
    logits = _sampled_logits(v.detach(), bank, index, _check_noise(noise, v, bank), temperature)
    return logits.exp().mean() * bank.shape[0]


def instance_nce_loss(
    v: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    noise: torch.Tensor,
    normaliser: float | torch.Tensor,
    temperature: float = 0.07,
) -> dict:
    """Wu et al.'s NCE loss of `v` [B, D] against each row's own bank entry and its noise
    entries `noise` [B, m] (indices into the bank) with the fixed normaliser Z."""
    v, bank = _check_bank(v, bank, index)
    noise = _check_noise(noise, v, bank)
    check_positive("temperature", temperature)
    if isinstance(normaliser, (int, float)):
        check_positive("normaliser (Z)", normaliser)
    normaliser = torch.as_tensor(normaliser, dtype=v.dtype, device=v.device)
    logits = _sampled_logits(v, bank, index, noise, temperature)
    # log(m Z / n): the log-odds offset of the noise (m P_n) against P = exp(s) / Z.
    offset = math.log(noise.shape[1] / bank.shape[0]) + normaliser.log()
    a = logits - offset
    uniformity = offset + F.softplus(a[:, 0]) + F.softplus(a[:, 1:]).sum(dim=1)
    return _split(-logits[:, 0], uniformity)


def background_neighbours(
    v: torch.Tensor, bank: torch.Tensor, k: int, temperature: float = 0.07
) -> tuple[torch.Tensor, torch.Tensor]:
    """B_i: the `k` bank entries nearest to each row of `v` by cosine (Zhuang et al.),
    as (scaled similarities s [B, k] carrying v's gradient, bank indices [B, k])."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be an int in [1, {bank.shape[0]}] (the bank size), got {k!r}")
    check_positive("temperature", temperature)
    values, indices = torch.topk(F.normalize(v, dim=1) @ bank.detach().T, k, dim=1)
    return values / temperature, indices


def close_neighbours(cluster_labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """C_i as a mask [B, n]: bank entries sharing image i's cluster in any clustering
    (`cluster_labels` [n_clusterings, n])."""
    labels = _check_labels(cluster_labels)
    return (labels[:, None, :] == labels[:, index, None]).any(dim=0)


def close_in_background(
    cluster_labels: torch.Tensor, index: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """C_i ∩ B_i as a mask over the background [B, k], without the [B, n] mask of C_i."""
    labels = _check_labels(cluster_labels)
    close = torch.zeros_like(background, dtype=torch.bool)
    for clustering in labels:  # one [B, k] comparison per clustering bounds the memory
        close |= clustering[background] == clustering[index][:, None]
    return close


def local_aggregation_loss(
    v: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    cluster_labels: torch.Tensor,
    background_k: int,
    temperature: float = 0.07,
) -> dict:
    """Zhuang et al.'s -log P(C_i ∩ B_i | v) / P(B_i | v) of embeddings `v` [B, D]."""
    v, bank = _check_bank(v, bank, index)
    if cluster_labels.ndim != 2 or cluster_labels.shape[1] != bank.shape[0]:
        raise ValueError(
            f"cluster_labels must be [n_clusterings, {bank.shape[0]}], "
            f"got {tuple(cluster_labels.shape)}"
        )
    logits, background = background_neighbours(v, bank, background_k, temperature)
    close = close_in_background(cluster_labels, index, background)
    log_background = torch.logsumexp(logits, dim=1)
    log_close = torch.logsumexp(logits.masked_fill(~close, float("-inf")), dim=1)
    ratio = torch.exp(log_close - log_background)  # in [0, 1]; 0 when C∩B is empty
    invariance = -torch.log(ratio + LA_EPSILON) - log_background
    return _split(invariance, log_background)


def _split(invariance: torch.Tensor, regularisation: torch.Tensor) -> dict:
    invariance, regularisation = invariance.mean(), regularisation.mean()
    return {
        "loss": invariance + regularisation,
        "invariance": invariance,
        "regularisation": regularisation,
    }


def _sampled_logits(
    v: torch.Tensor,
    bank: torch.Tensor,
    index: torch.Tensor,
    noise: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """s over each row's own entry (column 0) and its noise entries: [B, 1 + m]."""
    entries = bank[torch.cat([index[:, None], noise], dim=1)]  # [B, 1 + m, D]
    return torch.einsum("bd,bjd->bj", v, entries) / temperature


def _check_bank(
    v: torch.Tensor, bank: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """v normalised and the bank detached, after checking shapes and the batch's indices."""
    if not isinstance(v, torch.Tensor) or v.ndim != 2:
        raise ValueError(f"v must be a 2-D tensor [batch, dim], got {getattr(v, 'shape', v)}")
    if not isinstance(bank, torch.Tensor) or bank.ndim != 2 or bank.shape[1] != v.shape[1]:
        got = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
        raise ValueError(f"bank must be [n, {v.shape[1]}], got {got}")
    if not isinstance(index, torch.Tensor) or index.shape != (v.shape[0],):
        got = tuple(index.shape) if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"index must be a LongTensor [{v.shape[0]}] (one per row), got {got}")
    if index.dtype != torch.long:
        raise ValueError(f"index must be int64 positions in the bank, got {index.dtype}")
    _check_range("index", index, bank.shape[0])
    return F.normalize(v, dim=1), bank.detach()


def _check_noise(noise: torch.Tensor, v: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    if not isinstance(noise, torch.Tensor) or noise.ndim != 2 or noise.shape[0] != v.shape[0]:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be [{v.shape[0]}, m] bank indices, got {got}")
    if noise.shape[1] < 1 or noise.dtype != torch.long:
        raise ValueError("noise must hold at least one int64 bank index per row")
    _check_range("noise", noise, bank.shape[0])
    return noise


def _check_range(name: str, index: torch.Tensor, size: int) -> None:
    """Indices in [0, size): checked on the CPU only (on a GPU the check would cost a sync per
    step, and an out-of-range gather fails there anyway)."""
    if index.device.type == "cpu" and index.numel() and not 0 <= index.min() <= index.max() < size:
        raise ValueError(f"{name} must hold positions in [0, {size}) (the bank's rows)")


def _check_labels(cluster_labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(cluster_labels, torch.Tensor) or cluster_labels.ndim != 2:
        got = getattr(cluster_labels, "shape", type(cluster_labels).__name__)
        raise ValueError(f"cluster_labels must be [n_clusterings, n], got {got}")
    return cluster_labels
