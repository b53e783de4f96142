import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.cluster.hierarchy as sch
from scipy.spatial.distance import squareform
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

from ssltrace.analysis.clustering import (
    LINKAGES,
    best_layer,
    cluster,
    correspondence_matrix,
    cut_linkage,
    error_dissimilarity,
    linkage_matrix,
    mi_permutation_pvalue,
    mutual_information_bits,
    normalised_mutual_information,
)


def _planted_errors(n_coarse=3, per_coarse=4, seed=0):
    """Fine classes confused often within their coarse class and rarely across."""
    rng = np.random.default_rng(seed)
    coarse = np.repeat(np.arange(n_coarse), per_coarse)
    same = coarse[:, None] == coarse[None, :]
    errors = np.where(same, 0.35, 0.05) + rng.uniform(-0.03, 0.03, size=same.shape)
    np.fill_diagonal(errors, 0.0)
    return errors, coarse


def _same_partition(a, b):
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_error_dissimilarity_by_hand():
    errors = np.array([[0.0, 0.2, 0.4], [0.6, 0.0, 0.1], [0.0, 0.3, 0.0]])
    expected = [[0, 1 - 0.4, 1 - 0.2], [1 - 0.4, 0, 1 - 0.2], [1 - 0.2, 1 - 0.2, 0]]
    np.testing.assert_allclose(error_dissimilarity(errors), expected, atol=1e-15)
    with pytest.raises(ValueError, match=r"errors must be finite error rates in \[0, 1\]"):
        error_dissimilarity(errors * 3)


@pytest.mark.parametrize("linkage", LINKAGES)
def test_planted_blocks_are_recovered_with_mi_log2_k(linkage):
    errors, coarse = _planted_errors()
    labels = cluster(error_dissimilarity(errors), 3, linkage=linkage)
    assert _same_partition(labels, coarse)
    assert mutual_information_bits(labels, coarse) == pytest.approx(np.log2(3), abs=1e-12)
    assert normalised_mutual_information(labels, coarse) == pytest.approx(1.0)


def test_exactly_n_clusters_despite_tied_merges():
    d = np.ones((6, 6))
    np.fill_diagonal(d, 0.0)
    z = linkage_matrix(d)
    # Every merge is at height 1, so a cut by height cannot give 3 clusters ...
    assert len(np.unique(sch.fcluster(z, 3, criterion="maxclust"))) == 1
    # ... while cutting the tree by merge order can.
    for k in range(1, 7):
        assert len(np.unique(cut_linkage(z, k))) == k
    rng = np.random.default_rng(1)
    for linkage in LINKAGES:
        for _ in range(5):
            d = rng.integers(1, 3, size=(9, 9)).astype(float)  # heights tie often
            d = np.triu(d, 1) + np.triu(d, 1).T
            for k in range(1, 10):
                labels = cluster(d, k, linkage=linkage)
                assert sorted(np.unique(labels)) == list(range(k))


def test_linkage_matrix_is_scipys_and_inputs_are_checked():
    errors, _ = _planted_errors()
    d = error_dissimilarity(errors)
    np.testing.assert_allclose(
        linkage_matrix(d, "complete"), sch.linkage(squareform(d), "complete")
    )
    with pytest.raises(ValueError, match="symmetric"):
        linkage_matrix(d + np.triu(np.full_like(d, 0.1), 1))
    with pytest.raises(ValueError, match="linkage must be one of"):
        linkage_matrix(d, "centroid")
    with pytest.raises(ValueError, match="n_clusters must be in 1..12"):
        cluster(d, 13)


def test_mutual_information_of_a_tiny_table_by_hand():
    clusters, classes = [0, 0, 1, 1], [0, 0, 0, 1]
    # I = H(class) - H(class | cluster) = H(3/4, 1/4) - 1/2 * H(1/2, 1/2)
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert mutual_information_bits(clusters, classes) == pytest.approx(h - 0.5, abs=1e-15)


def test_mutual_information_and_nmi_match_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = rng.integers(5, 60)
        clusters = rng.integers(0, rng.integers(1, 6), size=n)
        classes = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, size=n)]
        assert mutual_information_bits(clusters, classes) == pytest.approx(
            mutual_info_score(classes, clusters) / np.log(2), abs=1e-12
        )
        assert normalised_mutual_information(clusters, classes) == pytest.approx(
            normalized_mutual_info_score(classes, clusters), abs=1e-12
        )
    assert normalised_mutual_information([3, 3, 3], [1, 1, 1]) == 1.0
    assert normalised_mutual_information([3, 3, 3], [1, 2, 1]) == 0.0


def _best_trace_by_brute_force(counts):
    k, c = counts.shape
    return max(
        sum(counts[rows[i], i] for i in range(c)) for rows in itertools.permutations(range(k), c)
    )


def test_correspondence_puts_the_best_matches_on_the_diagonal():
    rng = np.random.default_rng(3)
    for n_clusters, n_classes in [(4, 4)] * 20 + [(5, 3)] * 5:
        clusters = rng.integers(0, n_clusters, size=40)
        clusters[:n_clusters] = np.arange(n_clusters)  # every cluster occurs
        classes = rng.integers(0, n_classes, size=40)
        classes[:n_classes] = np.arange(n_classes)
        matrix, order = correspondence_matrix(clusters, classes)
        counts = np.zeros((n_clusters, n_classes), dtype=int)
        np.add.at(counts, (clusters, classes), 1)
        assert sorted(order) == list(range(n_clusters))
        np.testing.assert_array_equal(matrix, counts[order])
        assert np.trace(matrix) == _best_trace_by_brute_force(counts)


def test_correspondence_of_a_relabelled_perfect_clustering_is_diagonal():
    classes = np.repeat([0, 1, 2, 3], 3)
    clusters = np.array([2, 0, 3, 1])[classes]
    matrix, order = correspondence_matrix(clusters, classes)
    np.testing.assert_array_equal(matrix, 3 * np.eye(4, dtype=int))
    np.testing.assert_array_equal(order, [2, 0, 3, 1])


def test_mi_permutation_pvalue_against_sklearn_on_the_same_shuffles():
    rng = np.random.default_rng(4)
    clusters, classes = rng.integers(0, 3, size=15), rng.integers(0, 4, size=15)
    n_perm, seed = 300, 8
    shuffles = np.random.default_rng(seed).permuted(
        np.tile(np.unique(clusters, return_inverse=True)[1], (n_perm, 1)), axis=1
    )
    observed = mutual_info_score(classes, clusters)
    null = np.array([mutual_info_score(classes, s) for s in shuffles])
    expected = (1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm)
    assert mi_permutation_pvalue(clusters, classes, n_perm, seed=seed) == pytest.approx(expected)


def test_mi_permutation_pvalue_small_for_perfect_and_not_for_random():
    errors, coarse = _planted_errors()
    labels = cluster(error_dissimilarity(errors), 3)
    # A shuffle reproduces the partition with probability 3! (4!)^3 / 12! ~ 1.2e-4.
    assert mi_permutation_pvalue(labels, coarse, 999, seed=0) <= 0.003
    rng = np.random.default_rng(5)
    p = [mi_permutation_pvalue(rng.integers(0, 3, 12), coarse, 199, seed=s) for s in range(200)]
    assert np.mean(np.array(p) <= 0.05) <= 0.08
    assert 0.4 <= np.mean(p) <= 0.7


def test_best_layer_picks_the_highest_value_per_run():
    table = pd.DataFrame(
        {
            "method": ["simclr"] * 6 + ["byol"] * 3,
            "seed": [0, 0, 0, 1, 1, 1, 0, 0, 0],
            "epoch": [5] * 9,
            "layer": ["conv1", "conv2", "conv3"] * 3,
            "probe": ["novel"] * 9,
            "metric": ["mi_bits"] * 9,
            "value": [0.2, 0.9, 0.4, 0.7, 0.7, np.nan, 0.1, 0.3, 0.5],
        }
    )
    noise = table.assign(metric="nmi", value=5.0)
    best = best_layer(pd.concat([table, noise]))
    got = {(r.method, r.seed): (r.layer, r.value) for r in best.itertuples()}
    assert got == {
        ("simclr", 0): ("conv2", 0.9),
        ("simclr", 1): ("conv1", 0.7),  # a tie goes to the first row
        ("byol", 0): ("conv3", 0.5),
    }
    with pytest.raises(ValueError, match="lacks columns"):
        best_layer(table.drop(columns="probe"))
    with pytest.raises(ValueError, match="no non-NaN values"):
        best_layer(table, metric="nmi")


def test_label_arrays_are_checked():
    with pytest.raises(ValueError, match="same non-zero length"):
        mutual_information_bits([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="n_perm"):
        mi_permutation_pvalue([0, 1], [0, 1], n_perm=0)
