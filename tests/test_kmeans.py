"""The torch k-means of Local Aggregation and DeepCluster, against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from ssltrace.kmeans import assign, kmeans, update


def _blobs(n=600, k=8, d=16, seed=0):
    x, y = make_blobs(n_samples=n, centers=k, n_features=d, cluster_std=0.5, random_state=seed)
    return torch.from_numpy(x).float(), y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_separable_blobs_like_scikit_learn(seed):
    x, truth = _blobs(seed=seed)
    ours = kmeans(x, 8, torch.Generator().manual_seed(seed)).labels.numpy()
    theirs = KMeans(8, n_init=10, random_state=seed).fit_predict(x.numpy())
    assert adjusted_rand_score(theirs, ours) >= 0.99
    assert adjusted_rand_score(truth, ours) >= 0.99


def test_inertia_matches_scikit_learn_on_the_same_solution():
    x, _ = _blobs(seed=3)
    ours = kmeans(x, 8, torch.Generator().manual_seed(0))
    sk = KMeans(8, n_init=10, random_state=0).fit(x.numpy())
    assert ours.inertia == pytest.approx(sk.inertia_, rel=1e-4)


def test_same_generator_state_gives_the_same_clustering():
    x, _ = _blobs(n=300, k=5)
    a = kmeans(x, 5, torch.Generator().manual_seed(7))
    b = kmeans(x, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)


def test_an_empty_cluster_takes_half_of_a_populated_one():
    # Two tight groups; centroid 2 sits far away and wins no point.
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    centroids = torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])
    labels, _ = assign(x, centroids)
    assert (labels == 2).sum() == 0
    new, empty = update(x, labels, 3, centroids, torch.Generator().manual_seed(0))
    assert empty == 1
    relabelled, _ = assign(x, new)
    assert set(relabelled.tolist()) == {0, 1, 2}  # the copied centroid splits its source
    result = kmeans(x, 3, torch.Generator().manual_seed(0))
    assert np.bincount(result.labels.numpy(), minlength=3).min() >= 1


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(5, 2), 1), "k must be"),
        ((torch.zeros(5, 2), 6), "k must be"),
        ((torch.zeros(5), 2), r"x must be a float tensor \[n, d\]"),
        ((torch.tensor([[0.0, float("nan")], [1.0, 1.0], [2.0, 2.0]]), 2), "non-finite"),
    ],
)
def test_bad_input_is_named(args, match):
    with pytest.raises(ValueError, match=match):
        kmeans(*args, torch.Generator().manual_seed(0))
