"""Random projection of wide activations: the Johnson–Lindenstrauss bound, checked."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from ssltrace.projection import distortion, project


def relu_patterns(n, d, seed):
    """ReLU'd maps with a per-image offset and a shared structure, like conv activations."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(d)
    x = rng.standard_normal((n, d)) + 0.5 * shared + rng.normal(0.5, 0.3, (n, 1))
    return np.maximum(x, 0).astype(np.float32)


def test_distortion_inverts_sklearns_min_dim():
    for n, k in [(96, 4096), (500, 2000), (24, 300)]:
        eps = distortion(n, k)
        assert johnson_lindenstrauss_min_dim(n, eps=eps) <= k
        assert johnson_lindenstrauss_min_dim(n, eps=eps * 0.99) > k
    # Hand-worked: n = 96, k = 4096: 4 ln 96 / 4096 = 0.004458 = eps^2/2 - eps^3/3 at 0.0976.
    assert distortion(96, 4096) == pytest.approx(0.0976, abs=1e-4)
    assert distortion(96, 10) == np.inf and distortion(1, 10) == 0.0


def violations(x, y, eps):
    """Per metric, whether some pair of images breaks the bound of `eps`.

    Squared Euclidean: the ratio within 1 +- eps. Correlation and cosine distances delta
    (1 - cosine of the centred or raw patterns): with norms and distances of the unit
    patterns (the origin added to the point set) within 1 +- eps, the inner product moves by
    at most eps (1 + delta) and the norms by eps, so |delta' - delta| <= 2 max(1, delta)
    eps / (1 - eps).
    """
    out = {}
    before = pdist(x.astype(np.float64), "sqeuclidean")
    ratio = pdist(y.astype(np.float64), "sqeuclidean") / before
    out["sqeuclidean"] = bool(np.abs(ratio - 1).max() > eps)
    for metric in ("correlation", "cosine"):
        delta = pdist(x.astype(np.float64), metric)
        moved = np.abs(pdist(y.astype(np.float64), metric) - delta)
        out[metric] = bool((moved > 2 * np.maximum(1, delta) * eps / (1 - eps)).any())
    return out


def test_projection_keeps_rdm_distances_within_the_jl_bound():
    """The bound holds with probability >= 1 - 1/n per projection matrix (and a little less
    for the very sparse matrix, Li et al. 2006): over 12 seeded matrices at most 2 may break
    it (at 3 % per matrix, P(>= 3 of 12) < 1 %); the seeds are fixed, so this is not flaky."""
    n, d, k = 96, 10000, 2048
    x = relu_patterns(n, d, 0)
    eps = distortion(n + 1, k - 1)  # the origin joins the points (norms); k - 1: see project
    broken = {"sqeuclidean": 0, "correlation": 0, "cosine": 0}
    worst = 0.0
    for seed in range(12):
        y = project(x, k, seed)
        assert y.shape == (n, k) and y.dtype == np.float32
        for metric, bad in violations(x, y, eps).items():
            broken[metric] += bad
        ratio = pdist(y.astype(np.float64), "sqeuclidean") / pdist(x.astype(np.float64)) ** 2
        worst = max(worst, np.abs(ratio - 1).max())
    assert all(count <= 2 for count in broken.values()), broken
    assert worst > eps / 3  # the bound is not vacuous: distances do move by a fair part of it


def test_plain_projection_of_raw_patterns_would_break_correlation():
    """Why the mean is kept apart: projecting x itself loses the RDM's correlations."""
    from ssltrace.projection import projector

    x = relu_patterns(48, 20000, 0)
    plain = projector(20000, 2048, 0).transform(x)
    ratio = pdist(plain, "correlation") / pdist(x.astype(np.float64), "correlation")
    assert np.abs(ratio - 1).max() > 0.5
    ours = pdist(project(x, 2048, 0).astype(np.float64), "correlation")
    assert np.abs(ours / pdist(x.astype(np.float64), "correlation") - 1).max() < 0.2


def test_mean_over_units_is_kept_exactly():
    x = relu_patterns(10, 5000, 3)
    y = project(x, 500, 0).astype(np.float64)
    # sum of squares of the mean part: d m^2 before, k (m sqrt(d/k))^2 after
    np.testing.assert_allclose(y.mean(axis=1) * np.sqrt(500 / 5000), x.mean(axis=1), rtol=1e-5)


def test_projection_is_seeded_and_narrow_vectors_pass_unchanged():
    x = relu_patterns(8, 3000, 0)
    np.testing.assert_array_equal(project(x, 100, 5), project(x, 100, 5))
    assert not np.allclose(project(x, 100, 5), project(x, 100, 6))
    assert project(x, 3000, 0) is x and project(x, None, 0) is x
    with pytest.raises(ValueError, match="projection_dim"):
        project(x, 1, 0)
