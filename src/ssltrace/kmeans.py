"""k-means in torch, on the device of the data (the per-epoch clustering of Local Aggregation
and DeepCluster runs on the training GPU; scikit-learn's would copy every epoch to the CPU).

Lloyd iterations from a k-means++ start, with empty clusters handled as faiss and DeepCluster
do (Caron et al. 2018, §3.3 "Avoiding trivial solutions"): an empty cluster takes the centroid
of a non-empty one, chosen with probability proportional to its size, moved by a small
symmetric perturbation, and the two split that cluster's points at the next assignment.
Validated against scikit-learn's KMeans in tests/test_kmeans.py (adjusted Rand index on
separable blobs). Every random choice comes from the caller's generator, so a run resumed from
the same state repeats the same clustering.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Rows of x per chunk of the [rows, k] distance matrix (a few MB), so memory stays bounded
# for a 50,000 x 128 bank and 10,000 clusters.
_CHUNK_ELEMENTS = 2**22
# Relative size of the perturbation that separates a copied centroid from its source (faiss).
_EPSILON = 1 / 1024


@dataclass(frozen=True)
class KMeansResult:
    centroids: torch.Tensor  # [k, d]
    labels: torch.Tensor  # int64 [n]
    inertia: float  # sum of squared distances to the assigned centroid
    n_empty_fixed: int  # empty clusters re-seeded over all iterations


def kmeans(
    x: torch.Tensor,
    k: int,
    generator: torch.Generator,
    iterations: int = 20,
    tolerance: float = 1e-6,
) -> KMeansResult:
    """Cluster the rows of `x` [n, d] into `k` clusters (squared Euclidean distance).

    Stops after `iterations` Lloyd steps or once the inertia improves by less than
    `tolerance` (relative). `generator` must live on x's device.
    """
    x = _check(x, k, iterations)
    centroids = kmeans_plus_plus(x, k, generator)
    previous, fixed = float("inf"), 0
    for _ in range(iterations):
        labels, distances = assign(x, centroids)
        inertia = float(distances.sum())
        centroids, empty = update(x, labels, k, centroids, generator)
        fixed += empty
        if empty == 0 and previous - inertia <= tolerance * max(previous, 1e-30):
            break
        previous = inertia
    labels, distances = assign(x, centroids)
    return KMeansResult(centroids, labels, float(distances.sum()), fixed)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn with
    probability proportional to the squared distance to the nearest centre chosen so far."""
    first = torch.randint(len(x), (1,), generator=generator, device=x.device)
    centres = [x[first[0]]]
    nearest = _squared_distances(x, centres[0][None]).squeeze(1)
    for _ in range(1, k):
        weights = nearest.clamp_min(0)
        if float(weights.sum()) <= 0:  # every point sits on a centre: draw uniformly
            weights = torch.ones_like(weights)
        pick = torch.multinomial(weights, 1, generator=generator)[0]
        centres.append(x[pick])
        nearest = torch.minimum(nearest, _squared_distances(x, x[pick][None]).squeeze(1))
    return torch.stack(centres)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row and the squared distance to it, in bounded chunks."""
    rows = max(1, _CHUNK_ELEMENTS // max(1, len(centroids)))
    labels, distances = [], []
    for start in range(0, len(x), rows):
        d = _squared_distances(x[start : start + rows], centroids)
        best = d.min(dim=1)
        labels.append(best.indices)
        distances.append(best.values.clamp_min(0))
    return torch.cat(labels), torch.cat(distances)


def update(
    x: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    old: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """Mean of each cluster's rows; empty clusters re-seeded from non-empty ones."""
    counts = torch.bincount(labels, minlength=k).to(x.dtype)
    centroids = _cluster_sums(x, labels, counts) / counts.clamp_min(1)[:, None]
    empty = torch.nonzero(counts == 0).flatten()
    for cluster in empty.tolist():
        source = int(torch.multinomial(counts.clamp_min(0), 1, generator=generator)[0])
        shift = _EPSILON * centroids[source].abs().clamp_min(1e-12)
        centroids[cluster] = centroids[source] + shift
        centroids[source] = centroids[source] - shift
        counts[source] /= 2  # the two now share the source's points
        counts[cluster] = counts[source]
    return centroids, len(empty)


def _cluster_sums(x: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Sum of each cluster's rows, in a fixed order: rows sorted by cluster, a float64 running
    sum, differences at the cluster ends. (index_add_ adds with atomics on CUDA, whose order,
    and so whose rounding, changes from run to run: a resumed run would not repeat itself.)"""
    order = torch.sort(labels, stable=True).indices
    running = torch.cumsum(x[order].double(), dim=0)
    ends = torch.cumsum(counts.long(), dim=0) - 1
    at_end = running[ends.clamp_min(0)]
    before = torch.cat([torch.zeros_like(at_end[:1]), at_end[:-1]])
    sums = torch.where((counts > 0)[:, None], at_end - before, torch.zeros_like(at_end))
    return sums.to(x.dtype)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||² as ||a||² - 2 a·b + ||b||² (one matrix product)."""
    return (a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]


def _check(x: torch.Tensor, k: int, iterations: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [n, d], got {getattr(x, 'shape', x)!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(x):
        raise ValueError(f"k must be an int in [2, {len(x)}] (the number of rows), got {k!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if not torch.isfinite(x).all():
        raise ValueError("x has non-finite values")
    return x
