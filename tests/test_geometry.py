"""Clustering-geometry measures against hand-worked cases and brute-force definitions."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestCentroid

from ssltrace.analysis.geometry import (
    cdnv,
    geometry_metrics,
    mean_class_distance,
    ncc_accuracy,
    sample_level_sets,
    within_class_variance,
)

# Three 2-D classes worked out by hand:
#   A: (0,0), (2,0)          mean (1,0)   Var = (1 + 1) / 2 = 1
#   B: (0,4), (0,6)          mean (0,5)   Var = (1 + 1) / 2 = 1
#   C: (10,0), (10,2), (10,4) mean (10,2) Var = (4 + 0 + 4) / 3 = 8/3
# Squared mean distances: AB = 1 + 25 = 26, AC = 81 + 4 = 85, BC = 100 + 9 = 109.
HAND_X = np.array([[0, 0], [2, 0], [0, 4], [0, 6], [10, 0], [10, 2], [10, 4]], float)
HAND_Y = np.array([5, 5, 9, 9, 2, 2, 2])  # A=5, B=9, C=2: labels need not be 0..C-1


def test_within_class_variance_by_hand():
    assert within_class_variance(HAND_X, HAND_Y) == pytest.approx((1 + 1 + 8 / 3) / 3)


def test_mean_class_distance_by_hand():
    assert mean_class_distance(HAND_X, HAND_Y) == pytest.approx((26 + 85 + 109) / 3)


def test_cdnv_by_hand():
    # (Var_i + Var_j) / (2 ||mu_i - mu_j||^2) averaged over the three pairs.
    ab = (1 + 1) / (2 * 26)
    ac = (1 + 8 / 3) / (2 * 85)
    bc = (1 + 8 / 3) / (2 * 109)
    assert cdnv(HAND_X, HAND_Y) == pytest.approx((ab + ac + bc) / 3)


def test_cdnv_of_collapsed_classes_is_infinite():
    x = np.array([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]])  # same mean, spread
    assert cdnv(x, np.array([0, 0, 1, 1])) == np.inf


def _brute_force_geometry(x, y):
    classes = np.unique(y)
    means = np.array([x[y == c].mean(axis=0) for c in classes])
    var = np.array(
        [np.mean(np.sum((x[y == c] - m) ** 2, axis=1)) for c, m in zip(classes, means, strict=True)]
    )
    pairs = list(itertools.combinations(range(len(classes)), 2))
    dist = np.array([np.sum((means[i] - means[j]) ** 2) for i, j in pairs])
    ratio = np.array([(var[i] + var[j]) / (2 * d) for (i, j), d in zip(pairs, dist, strict=True)])
    return ratio.mean(), var.mean(), dist.mean()


@pytest.mark.parametrize("n_classes", [4, 300])  # 300 takes the Gram-matrix path
def test_geometry_matches_brute_force_definition(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, size=n_classes * 3)
    y[:n_classes] = np.arange(n_classes)  # every class present
    x = rng.normal(size=(y.size, 5)) + 4 * rng.normal(size=(n_classes, 5))[y] + 50
    ref_cdnv, ref_var, ref_dist = _brute_force_geometry(x, y)
    assert cdnv(x, y) == pytest.approx(ref_cdnv, rel=1e-9)
    assert within_class_variance(x, y) == pytest.approx(ref_var, rel=1e-9)
    assert mean_class_distance(x, y) == pytest.approx(ref_dist, rel=1e-9)


def test_ncc_accuracy_by_hand():
    # Centres from HAND_X: A (1,0), B (0,5), C (10,2); every training point is nearest
    # its own centre. Test points: (0.4, 2.4) is 6.12 from A but 6.92 from B, so labelled
    # B it is wrong; (6,1) -> C (17 vs 26 to A), (1,1) -> A, (0,4.5) -> B are right.
    test_x = np.array([[0.4, 2.4], [6, 1], [1, 1], [0, 4.5]])
    test_y = np.array([9, 2, 5, 9])
    assert ncc_accuracy(HAND_X, HAND_Y, test_x, test_y) == (1.0, 0.75)


def test_ncc_train_accuracy_can_be_below_one_by_hand():
    # Class 0: (0,0), (0,0), (3,0) -> mean (1,0); class 1: (2,0), (2,0) -> mean (2,0).
    # (3,0) is 4 from its own centre but 1 from class 1's, so 4 of 5 are right.
    x = np.array([[0, 0], [0, 0], [3, 0], [2, 0], [2, 0]], float)
    y = np.array([0, 0, 0, 1, 1])
    train_acc, test_acc = ncc_accuracy(x, y, np.array([[2.9, 0.0]]), np.array([0]))
    assert train_acc == pytest.approx(0.8) and test_acc == 0.0


def test_ncc_accuracy_matches_sklearn_nearest_centroid():
    rng = np.random.default_rng(11)
    y = np.repeat(np.arange(12), 15)
    x = rng.normal(size=(y.size, 7)) + 1.2 * rng.normal(size=(12, 7))[y]
    test_y = rng.integers(0, 12, 200)
    test_x = rng.normal(size=(200, 7)) + 1.2 * rng.normal(size=(12, 7))[test_y]
    model = NearestCentroid().fit(x, y)
    expected = (model.score(x, y), np.mean(model.predict(test_x) == test_y))
    assert ncc_accuracy(x, y, test_x, test_y) == pytest.approx(expected)


def test_geometry_metrics_keys_and_consistency():
    rng = np.random.default_rng(12)
    y = np.repeat(np.arange(5), 20)
    centres = 3 * rng.normal(size=(5, 6))
    x = centres[y] + rng.normal(size=(100, 6))
    test_x = centres[y] + rng.normal(size=(100, 6))
    out = geometry_metrics(x, y, test_x, y, device="cpu")
    assert set(out) == {
        "ncc_train", "ncc_test", "linear_svm", "linear_logistic", "ncc_linear_ratio",
        "cdnv", "within_var", "between_dist",
    }  # fmt: skip
    assert out["ncc_linear_ratio"] == pytest.approx(out["ncc_test"] / out["linear_svm"])
    assert (out["ncc_train"], out["ncc_test"]) == ncc_accuracy(x, y, test_x, y)
    assert out["cdnv"] == pytest.approx(cdnv(x, y))
    assert out["within_var"] == pytest.approx(within_class_variance(x, y))
    assert out["between_dist"] == pytest.approx(mean_class_distance(x, y))
    only_logistic = geometry_metrics(x, y, test_x, y, probes=("logistic",), device="cpu")
    assert "linear_svm" not in only_logistic and "ncc_linear_ratio" not in only_logistic


def test_geometry_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="at least two classes"):
        cdnv(HAND_X, np.zeros(7, dtype=int))
    with pytest.raises(ValueError, match="labels must be an integer array"):
        within_class_variance(HAND_X, HAND_Y[:-1])
    with pytest.raises(ValueError, match="feats"):
        mean_class_distance(HAND_X[:, 0], HAND_Y)
    with pytest.raises(ValueError, match="test_y holds"):
        ncc_accuracy(HAND_X, HAND_Y, HAND_X[:1], np.array([4]))
    with pytest.raises(ValueError, match="train_feats and test_feats"):
        ncc_accuracy(HAND_X, HAND_Y, HAND_X[:, :1], HAND_Y)
    with pytest.raises(ValueError, match="probes"):
        geometry_metrics(HAND_X, HAND_Y, HAND_X, HAND_Y, probes=("knn",))


# --- sample-level sets ---------------------------------------------------------------------


def _flip_and_jitter(images_uint8, generator):
    """A stand-in augmenter with the ssltrace.augment signature: random flip + noise."""
    x = images_uint8.permute(0, 3, 1, 2).float() / 255
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x + 0.01 * torch.randn(x.shape, generator=generator, device=x.device)


def _images(m=12):
    return np.random.default_rng(13).integers(0, 256, size=(m, 32, 32, 3), dtype=np.uint8)


def test_sample_level_sets_shapes_labels_and_reproducibility():
    images = _images()
    sets = sample_level_sets(images, 5, 4, 3, _flip_and_jitter, seed=1, device="cpu", batch_size=7)
    train, train_y, test, test_y = sets
    assert train.shape == (20, 3, 32, 32) and test.shape == (15, 3, 32, 32)
    sources = np.unique(train_y)
    assert sources.size == 5 and np.array_equal(np.unique(test_y), sources)
    np.testing.assert_array_equal(train_y, np.repeat(sources, 4))
    np.testing.assert_array_equal(test_y, np.repeat(sources, 3))
    # Each view is its labelled source image, flipped or not, plus small noise.
    for view, src in zip(train, train_y, strict=True):
        clean = torch.from_numpy(images[src]).permute(2, 0, 1).float() / 255
        err = min((view - clean).abs().max(), (view - clean.flip(-1)).abs().max())
        assert err < 0.1
    # Same seed -> same sets; test views are fresh draws, not copies of training views.
    again = sample_level_sets(images, 5, 4, 3, _flip_and_jitter, seed=1, device="cpu", batch_size=7)
    assert torch.equal(train, again[0]) and torch.equal(test, again[2])
    assert not torch.equal(train[:3], test[:3])
    other = sample_level_sets(images, 5, 4, 3, _flip_and_jitter, seed=2, device="cpu")
    assert not torch.equal(train, other[0])


def test_sample_level_sets_with_the_training_augmenter():
    from ssltrace.augment import Augmenter

    train, train_y, test, test_y = sample_level_sets(
        _images(), 3, 4, 2, Augmenter(None, "cpu"), seed=0, device="cpu"
    )
    assert train.shape == (12, 3, 32, 32) and test.shape == (6, 3, 32, 32)
    assert train.dtype == torch.float32 and torch.isfinite(train).all()
    assert train_y.tolist() == np.repeat(np.unique(train_y), 4).tolist()
    assert not torch.equal(train[0], train[1])  # four different views of one image


def test_sample_level_sets_reject_bad_input():
    images = _images()
    with pytest.raises(ValueError, match="n_images=20 exceeds"):
        sample_level_sets(images, 20, 2, 2, _flip_and_jitter, device="cpu")
    with pytest.raises(ValueError, match="images_uint8"):
        sample_level_sets(images.astype(np.float32), 2, 2, 2, _flip_and_jitter, device="cpu")
    with pytest.raises(ValueError, match="k_test"):
        sample_level_sets(images, 2, 2, 0, _flip_and_jitter, device="cpu")
    with pytest.raises(TypeError, match="augment_fn"):
        sample_level_sets(images, 2, 2, 2, None, device="cpu")
    with pytest.raises(ValueError, match="augment_fn must return"):
        sample_level_sets(images, 2, 2, 2, lambda x, g: x, device="cpu")
