"""Per-run reduction of wide layers, and the distance distortion a reduction causes.

A pooled layer wider than `extract.projection_dim` = k is reduced to k values per image by
`extract.reduction`:

- `projection` (the default): the seeded sparse random projection of `ssltrace.projection`.
  It needs no fitting — the matrix is a pure function of (seed, width, k) — so every
  extraction of every run uses the same one; what is stored is its seed (in each file's
  cache key). Its distortion has a bound known in advance (Johnson–Lindenstrauss).
- `pca`: the first k principal components of the layer (scikit-learn's PCA, at most as many
  as there are probe images), fitted once per run and probe set on one checkpoint — the
  epoch `extract.reduction_fit_epoch`, by default the last analysed one — and stored in
  the probe set's activation folder (`reduction.npz`: mean and components per layer); every
  epoch of the run is projected onto that same basis, so distances between epochs'
  representations stay comparable. Why the last epoch: the analyses are about what the
  network learns, and the trained network's principal subspace is the one worth keeping
  exactly; at k >= n - 1 PCA keeps the fit epoch's distances exactly, and the distortion at
  every other epoch is measured (below), so the cost of one shared basis is visible rather
  than assumed. Studies that will be extended should name an explicit fit epoch: with
  "last", training longer changes the basis and every epoch is extracted again. A list of
  epochs fits one basis to their stacked activations: a basis has at most n - 1 directions
  (n probe images) fitted to what it saw, and on a 224-px ResNet-18 a basis fitted to one
  checkpoint lost 94-98 % of the distances of an unrelated one (README), so a trajectory
  whose early epochs lie elsewhere is better served by epochs spread over it, or by the
  projection, whose error does not depend on the epoch.

`distance_distortion` measures what a reduction did to the probe images' pairwise
Euclidean distances (median and max relative error); with `extract.distortion: true` every
reduced layer's figures are stored in its activation file (`distortion_<layer>`: median,
max and, for the projection, the JL bound on distances, `jl_distance_bound`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.decomposition import PCA

from ssltrace import projection

KINDS = ("projection", "pca")
FILE = "reduction.npz"  # the fitted PCA of a run's probe set, in its activation folder


def fit_pca(x: np.ndarray, n_components: int) -> dict[str, np.ndarray]:
    """PCA of `x` [n, d] to min(n_components, n, d) components (scikit-learn's full SVD,
    deterministic signs): {"mean", "components" [k, d], "explained" [k]}, float32."""
    k = min(n_components, *x.shape)
    model = PCA(n_components=k, svd_solver="full").fit(x.astype(np.float32, copy=False))
    return {
        "mean": model.mean_.astype(np.float32),
        "components": model.components_.astype(np.float32),
        "explained": model.explained_variance_ratio_.astype(np.float32),
    }


def apply_pca(x: np.ndarray, fitted: dict[str, np.ndarray]) -> np.ndarray:
    """Coordinates of `x` [n, d] in a fitted basis, as PCA.transform (no whitening)."""
    return (x.astype(np.float32, copy=False) - fitted["mean"]) @ fitted["components"].T


def distance_distortion(full: np.ndarray, reduced: np.ndarray) -> tuple[float, float]:
    """(median, max) over image pairs of |d_reduced - d_full| / d_full, Euclidean distances;
    pairs at distance 0 in `full` are left out (no relative error is defined)."""
    if len(full) != len(reduced):
        raise ValueError(f"{len(full)} images before the reduction but {len(reduced)} after")
    before = pdist(full.astype(np.float64))
    after = pdist(reduced.astype(np.float64))
    keep = before > 0
    if not keep.any():
        return 0.0, 0.0
    error = np.abs(after[keep] - before[keep]) / before[keep]
    return float(np.median(error)), float(error.max())


def jl_distance_bound(n_points: int, n_components: int) -> float:
    """Bound on the relative error of Euclidean distances under `projection.project` to
    n_components: its squared distances stay within 1 +- eps (eps = distortion(n, k - 1)),
    so distances within sqrt(1 -+ eps), at most 1 - sqrt(1 - eps) away from 1."""
    eps = projection.distortion(n_points, n_components - 1)
    return 1.0 - math.sqrt(1.0 - eps) if eps < 1 else math.inf
