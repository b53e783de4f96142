"""Seeded random projection of very wide activation vectors (Johnson–Lindenstrauss).

An RDM of full response patterns (seed 001) needs every unit of a conv map; an early map of
a ResNet-18 on 32x32 images has 64 x 32 x 32 = 65,536 of them. Vectors wider than
`extract.projection_dim` = k are multiplied by one fixed sparse random matrix (scikit-learn's
`SparseRandomProjection`: entries +-sqrt(s/k) with probability 1/(2s) each, else 0,
s = sqrt(d), Li, Hastie & Church 2006), the same for every checkpoint, method and seed, so
that distances computed afterwards are those of the full patterns up to a known distortion.

The bound (Johnson–Lindenstrauss, in Dasgupta & Gupta's form; scikit-learn's
`johnson_lindenstrauss_min_dim` inverts it): for n points and

    k >= 4 ln(n) / (eps^2 / 2 - eps^3 / 3)

a random projection keeps every pairwise squared Euclidean distance within a factor
(1 - eps, 1 + eps) with probability >= 1 - 1/n (for Gaussian or Achlioptas matrices; for the
very sparse matrix used here the guarantee holds asymptotically, its variance exceeding the
Gaussian's by a term that shrinks as 1/sqrt(d) for bounded fourth moments — Li et al. 2006).
`distortion(n, k)` is the smallest such eps. `project` keeps each pattern's mean over units
exactly and projects the deviations from it to k - 1 effective dimensions, so its bound is
`distortion(n, k - 1)`: for the 96 images of the RDM probe set and k = 4096, eps = 0.098,
for squared Euclidean distances and (through inner products of the deviations) for the
correlation and cosine distances of the RDMs (tests/test_projection.py checks all three).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from sklearn.random_projection import SparseRandomProjection


def distortion(n_points: int, n_components: int) -> float:
    """Smallest eps in (0, 1) with n_components >= 4 ln(n) / (eps^2/2 - eps^3/3), else inf."""
    if n_points < 2:
        return 0.0
    target = 4 * math.log(n_points) / n_components  # eps^2/2 - eps^3/3 must reach this
    if target > 1 / 2 - 1 / 3:  # the left side is at most 1/6 on (0, 1]
        return math.inf
    low, high = 0.0, 1.0  # increasing on (0, 1): bisection
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mid**2 / 2 - mid**3 / 3 < target else (low, mid)
    return high


@functools.lru_cache(maxsize=32)
def projector(n_features: int, n_components: int, seed: int) -> SparseRandomProjection:
    """The fitted projection R^n_features -> R^n_components of `seed` (a pure function)."""
    model = SparseRandomProjection(n_components=n_components, dense_output=True, random_state=seed)
    # fit reads only the number of features to draw the matrix.
    return model.fit(np.zeros((1, n_features), dtype=np.float32))


def project(x: np.ndarray, n_components: int | None, seed: int) -> np.ndarray:
    """`x` [n, d] -> [n, k = n_components] when d > k (else unchanged), keeping its mean part.

    Each pattern is split into its mean over units and the deviations from it,
    x = m 1_d + c. The deviations are projected (R, the seeded sparse matrix) and centred over
    the k coordinates, rescaled by sqrt(k / (k - 1)) for the dimension the centring removes:
    q = sqrt(k/(k-1)) C_k R c; the mean comes back exactly as m sqrt(d/k) 1_k. The two parts
    are orthogonal, so ||y1 - y2||^2 = ||q1 - q2||^2 + d (m1 - m2)^2 (Euclidean distance:
    only the deviations are distorted, by at most `distortion(n, k - 1)`), the deviations of y
    from its own mean are q (Pearson correlation between patterns = cosine of the q's, kept
    within the same bound), and <y1, y2> = <q1, q2> + d m1 m2 (cosine). A plain projection
    of x would keep Euclidean distances but not correlations: the common mean of ReLU maps
    would leak into every coordinate.
    """
    if n_components is None or x.shape[1] <= n_components:
        return x
    d, k = x.shape[1], n_components
    if k < 2:
        raise ValueError(f"extract.projection_dim must be >= 2 to project, got {k}")
    data = x.astype(np.float64)
    mean = data.mean(axis=1, keepdims=True)
    q = projector(d, k, seed).transform(data - mean)
    q = (q - q.mean(axis=1, keepdims=True)) * math.sqrt(k / (k - 1))
    return (q + mean * math.sqrt(d / k)).astype(x.dtype, copy=False)
