"""RDMs and RDM comparisons against rsatoolbox, scipy and hand-worked values."""

import sys

import numpy as np
import pytest
import rsatoolbox
import scipy.spatial.distance

from ssltrace.analysis.rdm import compare, compute_rdm, kendall_tau_a, upper


def _rsa_rdm(x, method):
    return rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(x), method=method)


@pytest.mark.parametrize("method", ["correlation", "euclidean"])
@pytest.mark.parametrize("shape", [(12, 5), (30, 64), (96, 3)])
def test_compute_rdm_matches_rsatoolbox(method, shape):
    x = np.random.default_rng(sum(shape)).normal(size=shape) * 3 + 1
    ref = _rsa_rdm(x, method).get_matrices()[0]
    np.testing.assert_allclose(compute_rdm(x, method), ref, atol=1e-12)


def test_euclidean_is_squared_distance_over_channels_by_hand():
    # rsatoolbox's 'euclidean' convention: ||a - b||² / n_channels.
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    expected = np.array([[0, 25 / 2, 1 / 2], [25 / 2, 0, 18 / 2], [1 / 2, 18 / 2, 0]])
    np.testing.assert_allclose(compute_rdm(x, "euclidean"), expected)


@pytest.mark.parametrize("method", ["correlation", "cosine"])
def test_compute_rdm_matches_scipy_cdist(method):
    x = np.random.default_rng(1).normal(size=(15, 9))
    np.testing.assert_allclose(
        compute_rdm(x, method), scipy.spatial.distance.cdist(x, x, method), atol=1e-12
    )


def test_correlation_rdm_by_hand():
    # Rows 0 and 1 are perfectly correlated (1 = affine copy), row 2 anti-correlated.
    x = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [3.0, 2.0, 1.0]])
    expected = np.array([[0, 0, 2], [0, 0, 2], [2, 2, 0]])
    np.testing.assert_allclose(compute_rdm(x, "correlation"), expected, atol=1e-12)


def test_constant_row_gives_nan_and_comparison_is_nan():
    x = np.random.default_rng(2).normal(size=(5, 4))
    x[3] = 7.0
    rdm = compute_rdm(x, "correlation")
    assert np.isnan(rdm[3, [0, 1, 2, 4]]).all() and np.isnan(rdm[[0, 1, 2, 4], 3]).all()
    assert np.isfinite(rdm[:3, :3]).all()
    assert np.isnan(compare(rdm, compute_rdm(x, "euclidean")))


def test_upper_matches_rsatoolbox_vector_order():
    x = np.random.default_rng(3).normal(size=(8, 4))
    rdm = compute_rdm(x, "euclidean")
    np.testing.assert_allclose(upper(rdm), _rsa_rdm(x, "euclidean").get_vectors()[0], atol=1e-12)
    assert upper(rdm).shape == (8 * 7 // 2,)


@pytest.mark.parametrize(
    "ours, theirs", [("pearson", "corr"), ("spearman", "spearman"), ("kendall_tau_a", "tau-a")]
)
def test_compare_matches_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(4)
    base = rng.normal(size=(40, 10))
    a = _rsa_rdm(base, "correlation")
    b = _rsa_rdm(base + rng.normal(size=base.shape), "correlation")
    ref = rsatoolbox.rdm.compare(a, b, method=theirs)[0, 0]
    assert compare(a.get_matrices()[0], b.get_matrices()[0], ours) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize(
    "ours, theirs", [("pearson", "corr"), ("spearman", "spearman"), ("kendall_tau_a", "tau-a")]
)
def test_compare_with_tied_vectors_matches_rsatoolbox(ours, theirs):
    rng = np.random.default_rng(5)
    va = np.round(rng.normal(size=190), 1)  # heavy ties, as in model RDMs
    vb = np.round(va + rng.normal(size=190), 0)
    ref = rsatoolbox.rdm.compare(
        rsatoolbox.rdm.RDMs(va[None]), rsatoolbox.rdm.RDMs(vb[None]), method=theirs
    )[0, 0]
    assert compare(va, vb, ours) == pytest.approx(ref, abs=1e-12)


def _tau_a_brute_force(x, y):
    i, j = np.triu_indices(x.size, k=1)
    return np.sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])) / i.size


def test_kendall_tau_a_equals_pairwise_definition_with_ties():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 5, size=120).astype(float)
    y = x + rng.integers(-2, 3, size=120)
    assert kendall_tau_a(x, y) == pytest.approx(_tau_a_brute_force(x, y), abs=1e-12)
    # τ-a is smaller in magnitude than τ-b under ties: the denominator counts every pair.
    assert abs(kendall_tau_a(x, y)) < abs(scipy.stats.kendalltau(x, y).statistic)


def test_kendall_tau_a_extremes_and_all_tied():
    x = np.arange(10.0)
    assert kendall_tau_a(x, x) == pytest.approx(1.0)
    assert kendall_tau_a(x, -x) == pytest.approx(-1.0)
    assert kendall_tau_a(np.ones(10), x) == 0.0
    rsa_compare = sys.modules["rsatoolbox.rdm.compare"]
    assert rsa_compare._tau_a(np.ones(10), x) == 0.0


def test_compare_accepts_rdm_or_vector_and_is_symmetric():
    rng = np.random.default_rng(7)
    a = compute_rdm(rng.normal(size=(10, 3)))
    b = compute_rdm(rng.normal(size=(10, 3)))
    for method in ("pearson", "spearman", "kendall_tau_a"):
        assert compare(a, b, method) == pytest.approx(compare(upper(a), upper(b), method))
        assert compare(a, b, method) == pytest.approx(compare(b, a, method))
        assert compare(a, a, method) == pytest.approx(1.0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="features"):
        compute_rdm(np.zeros(5))
    with pytest.raises(ValueError, match="features"):
        compute_rdm(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="metric"):
        compute_rdm(np.eye(3), "manhattan")
    with pytest.raises(ValueError, match="rdm_a and rdm_b"):
        compare(np.zeros((4, 4)), np.zeros((5, 5)))
    with pytest.raises(ValueError, match="rdm_b"):
        compare(np.zeros((4, 4)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="method"):
        compare(np.eye(4), np.eye(4), "tau-b")
    with pytest.raises(ValueError, match="rdm"):
        upper(np.zeros((3, 4)))
