"""Linear probes: separable data, shuffled labels, and the torch solver against sklearn."""

import numpy as np
import pytest
import torch

from ssltrace.analysis.probes import (
    _fit_predict_sklearn,
    _fit_predict_torch,
    _standardise,
    linear_probe,
)

BACKENDS = ["sklearn", "torch"]
KINDS = ["svm", "logistic"]


def _blobs(n_per_class, n_classes, dim, spread, seed, labels=None):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(n_classes, dim)) * 3
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(y.size, dim))
    return x, (y if labels is None else np.asarray(labels)[y])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_linearly_separable_data_is_fully_decoded(kind, backend):
    # Arbitrary, non-contiguous label values must be handled.
    labels = [7, 3, 42, 11]
    train_x, train_y = _blobs(30, 4, 8, 0.3, seed=0, labels=labels)
    test_x, test_y = _blobs(30, 4, 8, 0.3, seed=1, labels=labels)
    acc = linear_probe(train_x, train_y, test_x, test_y, kind=kind, backend=backend)
    assert acc == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_shuffled_labels_give_chance_accuracy(kind, backend):
    rng = np.random.default_rng(2)
    train_x, test_x = rng.normal(size=(400, 16)), rng.normal(size=(2000, 16))
    train_y, test_y = rng.integers(0, 5, 400), rng.integers(0, 5, 2000)
    acc = linear_probe(train_x, train_y, test_x, test_y, kind=kind, backend=backend)
    # Chance is 0.2; the binomial sd over 2000 test samples is ~0.009.
    assert abs(acc - 0.2) < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_torch_solver_matches_sklearn_accuracy(kind):
    train_x, train_y = _blobs(60, 10, 32, 6.0, seed=3)
    test_x, test_y = _blobs(60, 10, 32, 6.0, seed=4)
    accs = {
        backend: linear_probe(train_x, train_y, test_x, test_y, kind=kind, backend=backend)
        for backend in BACKENDS
    }
    assert 0.5 < accs["sklearn"] < 0.98  # a problem hard enough for solvers to differ
    assert abs(accs["torch"] - accs["sklearn"]) <= 0.03, accs


def test_svm_solvers_agree_when_the_margin_is_small():
    # n of the order of d with classes made of several clusters: the regime of layer
    # features, where liblinear's penalised intercept (intercept_scaling=1) moved ~8% of
    # predictions away from the unpenalised-intercept optimum.
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(20), 50)
    x = np.maximum(0.5 * rng.normal(size=(20, 256))[fine] + rng.normal(size=(1000, 256)), 0)
    train = np.tile(np.arange(50) < 20, 20)
    train_x, test_x = _standardise(x[train].astype(np.float32), x[~train].astype(np.float32))
    y = fine // 5
    args = (train_x, y[train], test_x, "svm", 1.0, 1000, 1e-4)
    ours = _fit_predict_sklearn(*args, 0)
    torch_pred = _fit_predict_torch(*args[:3], 4, *args[3:], torch.device("cpu"))
    assert np.mean(ours == torch_pred) >= 0.98


def test_standardisation_uses_train_statistics():
    train_x, train_y = _blobs(40, 3, 5, 1.5, seed=5)
    test_x, test_y = _blobs(40, 3, 5, 1.5, seed=6)
    scale = np.array([1e4, 1.0, 1e-3, 50.0, 1.0])
    shift = np.array([3.0, -100.0, 0.0, 7.0, 1e3])
    for kind in KINDS:
        plain = linear_probe(train_x, train_y, test_x, test_y, kind=kind)
        rescaled = linear_probe(
            train_x * scale + shift, train_y, test_x * scale + shift, test_y, kind=kind
        )
        assert rescaled == pytest.approx(plain, abs=0.01)


def test_constant_feature_is_tolerated():
    train_x, train_y = _blobs(20, 2, 3, 0.2, seed=7)
    test_x, test_y = _blobs(20, 2, 3, 0.2, seed=8)
    train_x[:, 1] = 5.0
    for backend in BACKENDS:
        assert linear_probe(train_x, train_y, test_x, test_y, backend=backend) == 1.0


def test_bad_inputs_name_the_argument():
    x, y = _blobs(5, 2, 3, 0.1, seed=9)
    with pytest.raises(ValueError, match="kind"):
        linear_probe(x, y, x, y, kind="knn")
    with pytest.raises(ValueError, match="backend"):
        linear_probe(x, y, x, y, backend="cuml")
    with pytest.raises(ValueError, match="C must"):
        linear_probe(x, y, x, y, C=0)
    with pytest.raises(ValueError, match="train_x and test_x"):
        linear_probe(x, y, x[:, :2], y)
    with pytest.raises(ValueError, match="test_y holds 1 classes absent"):
        linear_probe(x, y, x, np.where(y == 1, 9, y))
    with pytest.raises(ValueError, match="train_y must be an integer array"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="train_x must be finite"):
        linear_probe(np.where(x > 0, np.nan, x), y, x, y)
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe(x, np.zeros_like(y), x, np.zeros_like(y))
