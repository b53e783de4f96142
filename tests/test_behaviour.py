"""Behavioural consistency (ssltrace.analysis.behaviour): the I2n metric by hand, annotator
split-halves, the linear classifier's held-out probabilities, and recovery of a planted
consistency from simulated annotator counts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from threadpoolctl import threadpool_limits

from ssltrace.analysis.behaviour import (
    behavioural_consistency,
    compare_i2n,
    human_reliability,
    i2n,
    model_probabilities,
    split_choices,
)
from ssltrace.analysis.predictivity import ttest_matrix


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def softmax(theta):
    e = np.exp(theta - theta.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def image_logits(rng, labels, k):
    """Per-image logits: the true class ahead by an image-specific margin (difficulty)."""
    theta = rng.normal(0, 1.0, (len(labels), k))
    theta[np.arange(len(labels)), labels] += 2.5 + rng.normal(0, 0.8, len(labels))
    return theta


def test_i2n_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.5, 0.4],
            [0.3, 0.1, 0.6],
            [0.1, 0.1, 0.8],
        ]
    )
    z = scipy.stats.norm.ppf
    hit = lambda i, j: p[i, labels[i]] / (p[i, labels[i]] + p[i, j])  # noqa: E731
    # image 0 (class 0) against distractor 1: FAR = mean over class-1 images of 1 - HR[k, 0]
    far = np.mean([1 - hit(2, 0), 1 - hit(3, 0)])
    d0 = z(hit(0, 1)) - z(far)
    d1 = z(hit(1, 1)) - z(far)  # image 1 shares class and distractor, so the same FAR
    out = i2n(p, labels)
    assert out[0, 1] == pytest.approx(d0 - (d0 + d1) / 2)
    assert out[1, 1] == pytest.approx(d1 - (d0 + d1) / 2)
    assert np.isnan(out[np.arange(6), labels]).all()
    np.testing.assert_allclose(np.nansum(out[labels == 2], axis=0), 0, atol=1e-12)


def test_i2n_caps_certain_answers():
    labels = np.array([0, 1])
    out = i2n(np.array([[1.0, 0.0], [0.0, 1.0]]), labels, cap=5.0)
    assert np.isfinite(out[0, 1]) and out[0, 1] == 0.0  # both images saturate identically


def test_split_choices_halves_each_image_without_replacement():
    rng = np.random.default_rng(0)
    counts = rng.multinomial(51, np.full(10, 0.1), size=2000)
    a, b = split_choices(counts, rng)
    np.testing.assert_array_equal(a + b, counts)
    assert (a >= 0).all() and (b >= 0).all() and (a.sum(1) == 25).all()
    # hypergeometric mean: 25/51 of each class's count
    np.testing.assert_allclose(a.sum(0) / counts.sum(0), 25 / 51, atol=0.01)


def test_model_probabilities_held_out():
    rng = np.random.default_rng(1)
    labels = np.arange(300) % 3
    features = np.eye(3)[labels] * 3 + rng.normal(size=(300, 3))
    probs = model_probabilities(features, labels, n_folds=5)
    assert probs.shape == (300, 3) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == labels).mean() > 0.9
    train = np.arange(300) < 200
    split = model_probabilities(features, labels, n_classes=4, train=train)
    assert np.isnan(split[:200]).all() and (split[200:, 3] == 0).all()


@pytest.mark.parametrize("rho", [1.0, 0.6, 0.0])
def test_consistency_recovers_a_planted_consistency(rho):
    """Humans: 50 annotators per image drawn from probabilities P; the model's probabilities
    share a fraction rho of the image-level logits. Planted answer: the correlation of the
    model's I2n with the noise-free human I2n, which the ceiling-corrected measure estimates."""
    rng = np.random.default_rng(3)
    labels = np.arange(1000) % 10
    human_theta = image_logits(rng, labels, 10)
    truth = softmax(human_theta)
    counts = rng.multinomial(50, truth)
    mixed = rho * human_theta + np.sqrt(1 - rho**2) * image_logits(rng, labels, 10)
    model = truth if rho == 1 else softmax(mixed)
    planted = compare_i2n(i2n(model, labels), i2n(truth, labels))
    result = behavioural_consistency(model, counts, labels, n_splits=20)
    assert result.consistency == pytest.approx(planted, abs=0.07)
    assert result.consistency_both == pytest.approx(planted, abs=0.08)
    assert 0.6 < result.human_reliability < 1 and 0.6 < result.model_reliability < 1
    assert result.n_images == 1000 and len(result.rows()) == 7


def test_cifar10h_style_counts_from_the_human_probe():
    from ssltrace.data.synthetic import human_set

    data = human_set(seed=0, per_class=40)
    counts, labels = data["human_counts"], data["labels"]
    assert counts.shape == (400, 10)
    rho = human_reliability(counts, labels, n_splits=10)
    rng = np.random.default_rng(0)
    model = softmax(np.log(counts + 1) + rng.normal(0, 0.5, counts.shape))
    result = behavioural_consistency(model, counts, labels, n_splits=10)
    assert 0 < rho <= 1 and result.human_reliability == pytest.approx(rho)
    again = behavioural_consistency(model, counts, labels, n_splits=10, human_rel=rho)
    assert again == result
    assert np.isfinite(result.consistency) and result.consistency > 0.3


def test_bad_inputs_are_named():
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="human_counts"):
        behavioural_consistency(np.ones((4, 2)), np.ones((4, 3)), labels)
    with pytest.raises(ValueError, match="classes \\[1\\]"):
        probs = np.array([[0.5, 0.5], [np.nan, np.nan], [0.5, 0.5], [np.nan, np.nan]])
        behavioural_consistency(probs, np.ones((4, 2)), labels)


def test_unpaired_ttests_over_seeds():
    by_method = {"supervised": [0.61, 0.63, 0.60], "simclr": [0.41, 0.45, 0.43]}
    names, t, p = ttest_matrix(by_method, paired=False)
    expected = scipy.stats.ttest_ind(by_method["supervised"], by_method["simclr"])
    assert p[0, 1] == pytest.approx(expected.pvalue) and t[0, 1] > 0 > t[1, 0]
