"""Representational dissimilarity matrices (RDMs) and their comparison.

Conventions follow rsatoolbox (Nili et al. 2014; rsatoolbox 0.3), which the tests check
against, so numbers here can be set beside published RSA results:

- 'correlation': 1 - Pearson r between two images' activation patterns (rsatoolbox
  `calc_rdm(..., method='correlation')`).
- 'euclidean': the *squared* Euclidean distance divided by the number of channels (features),
  exactly what rsatoolbox's `calc_rdm(..., method='euclidean')` returns (its RDM descriptor
  says 'squared euclidean'). Dividing by the channel count makes layers of different widths
  comparable; squaring keeps the measure a mean of per-channel squared differences.
- 'cosine': 1 - cosine similarity of the two patterns (not centred).

RDMs are computed in float64 with numpy: a 96-image RDM of a 512-d layer is a ~5 MFLOP job,
far too small to be worth a device transfer.
"""

from __future__ import annotations

import numpy as np

RDM_METRICS = ("correlation", "euclidean", "cosine")
COMPARE_METHODS = ("pearson", "spearman", "kendall_tau_a")


def compute_rdm(features: np.ndarray, metric: str = "correlation") -> np.ndarray:
    """RDM [n, n] of the rows of `features` [n, d] (one row per image).

    Undefined dissimilarities (a constant row under 'correlation', an all-zero row under
    'cosine', as a dead layer can produce) are NaN, as in rsatoolbox; the diagonal is 0.
    """
    x = _check_features(features)
    if metric == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
        rdm = 1.0 - _normalised_gram(x)
    elif metric == "cosine":
        rdm = 1.0 - _normalised_gram(x)
    elif metric == "euclidean":
        sq = np.einsum("ij,ij->i", x, x)
        rdm = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)) / x.shape[1]
        # The Gram-matrix form can dip a hair below zero for near-identical rows.
        rdm = np.maximum(rdm, 0.0)
    else:
        raise ValueError(f"metric must be one of {RDM_METRICS}, got {metric!r}")
    rdm = (rdm + rdm.T) / 2.0  # exact symmetry despite summation order
    np.fill_diagonal(rdm, 0.0)
    return rdm


def upper(rdm: np.ndarray) -> np.ndarray:
    """The upper triangle (k=1) of a square RDM as a vector, in rsatoolbox's (row-major) order."""
    rdm = np.asarray(rdm, dtype=np.float64)
    if rdm.ndim != 2 or rdm.shape[0] != rdm.shape[1] or rdm.shape[0] < 2:
        raise ValueError(f"rdm must be a square [n, n] matrix with n >= 2, got shape {rdm.shape}")
    return rdm[np.triu_indices(rdm.shape[0], k=1)]


def compare(rdm_a: np.ndarray, rdm_b: np.ndarray, method: str = "spearman") -> float:
    """Similarity of two RDMs over their upper triangles.

    Each argument is a square RDM or an already-extracted upper-triangle vector.
    Methods: 'pearson' (rsatoolbox 'corr'), 'spearman' (Pearson r of average ranks;
    rsatoolbox 'spearman') and 'kendall_tau_a' (rsatoolbox 'tau-a': (concordant − discordant)
    / (m(m−1)/2) over all m(m−1)/2 pairs of entries, ties *not* corrected for, which is the
    right choice when a model RDM predicts tied dissimilarities; Nili et al. 2014).
    Returns NaN when either vector holds NaN or, for Pearson/Spearman, is constant.
    """
    import scipy.stats

    a = _as_vector(rdm_a, "rdm_a")
    b = _as_vector(rdm_b, "rdm_b")
    if a.shape != b.shape:
        raise ValueError(
            f"rdm_a and rdm_b must describe the same images: {a.size} vs {b.size} dissimilarities"
        )
    if method not in COMPARE_METHODS:
        raise ValueError(f"method must be one of {COMPARE_METHODS}, got {method!r}")
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    if method == "kendall_tau_a":
        return kendall_tau_a(a, b)
    if method == "spearman":
        a, b = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
    return _pearson(a, b)


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's τ-a = (C − D) / (m(m−1)/2), in O(m log m).

    scipy computes τ-b = (C − D) / sqrt((P − Tx)(P − Ty)) with P = m(m−1)/2 and Tx, Ty the
    pairs tied in x or in y, so C − D is recovered exactly from it and the tie counts; when
    all of x (or y) is tied, C − D = 0 and τ-b is undefined, so τ-a is 0.
    """
    import scipy.stats

    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    m = x.size
    pairs = m * (m - 1) / 2.0
    tied_x, tied_y = _tied_pairs(x), _tied_pairs(y)
    if tied_x == pairs or tied_y == pairs:
        return 0.0
    tau_b = scipy.stats.kendalltau(x, y, variant="b").statistic
    tau_a = tau_b * np.sqrt((pairs - tied_x) * (pairs - tied_y)) / pairs
    return float(np.clip(tau_a, -1.0, 1.0))


def _tied_pairs(v: np.ndarray) -> float:
    _, counts = np.unique(v, return_counts=True)
    return float((counts * (counts - 1) // 2).sum())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def _normalised_gram(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x / norms[:, None]
    return x @ x.T


def _check_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"features must be a 2-D [n_images, n_features] array with n_images >= 2, "
            f"got shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"features must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("features must be finite (found NaN or inf)")
    return x


def _as_vector(rdm: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(rdm, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"{name} must be a square RDM or a 1-D vector, got shape {arr.shape}")
        return upper(arr)
    if arr.ndim == 1 and arr.size >= 2:
        return arr
    raise ValueError(
        f"{name} must be a square RDM or a 1-D upper-triangle vector, got shape {arr.shape}"
    )
