import numpy as np
import pytest
import scipy.stats
from conftest import SHARED_DATA

from ssltrace.analysis.human import compare_confusions, human_confusion, permutation_pvalue


def test_human_confusion_averages_the_choice_histograms_per_class():
    # Seed 000 §2.5.2: row k = mean of the histograms of the images of true class k.
    counts = np.array([[3, 1, 0], [1, 1, 0], [0, 2, 2], [0, 0, 5]])
    labels = np.array([0, 0, 1, 2])
    expected = [[2.0, 1.0, 0.0], [0.0, 2.0, 2.0], [0.0, 0.0, 5.0]]
    np.testing.assert_allclose(human_confusion(counts, labels), expected, rtol=0, atol=1e-15)


def test_per_image_option_normalises_each_image_first():
    counts = np.array([[3, 1, 0], [1, 1, 0], [0, 2, 2], [0, 0, 5]])
    labels = np.array([0, 0, 1, 2])
    # Rows normalised: [.75 .25 0], [.5 .5 0] (class 0), [0 .5 .5] (class 1), [0 0 1].
    expected = [[0.625, 0.375, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    found = human_confusion(counts, labels, per_image=True)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-15)


def test_real_cifar10h():
    path = SHARED_DATA / "cifar10h-counts.npy"
    if not path.exists():
        pytest.skip(f"{path} not present")
    counts = np.load(path)
    # The CIFAR-10 test labels are not available offline: for this sanity check each image's
    # true class is taken as the class most people chose, which inflates the diagonal a bit.
    labels = counts.argmax(axis=1)
    confusion = human_confusion(counts, labels, per_image=True)
    assert confusion.shape == (10, 10)
    np.testing.assert_allclose(confusion.sum(axis=1), 1.0, atol=1e-12)
    # The paper's raw average: rows sum to the mean number of annotators (~50 per image).
    raw = human_confusion(counts, labels)
    assert 45 < raw.sum(axis=1).min() <= raw.sum(axis=1).max() < 60
    assert np.all(np.diag(confusion) > 0.8)
    # People confuse cat (3) with dog (5) more than cat with ship (8).
    assert confusion[3, 5] > 10 * confusion[3, 8]


def _offdiagonal_by_loop(m):
    return np.array([m[i, j] for i in range(len(m)) for j in range(len(m)) if i != j])


def test_compare_confusions_is_spearman_of_the_selected_entries():
    rng = np.random.default_rng(0)
    model, human = rng.random((6, 6)), rng.random((6, 6))
    human[0, 1] = human[2, 3]  # a tie, ranked by average as scipy does
    expected_off = scipy.stats.spearmanr(_offdiagonal_by_loop(model), _offdiagonal_by_loop(human))
    expected_all = scipy.stats.spearmanr(model.ravel(), human.ravel())
    assert compare_confusions(model, human) == pytest.approx(expected_off.statistic, abs=1e-12)
    assert compare_confusions(model, human, offdiagonal=False) == pytest.approx(
        expected_all.statistic, abs=1e-12
    )


def test_offdiagonal_ignores_the_diagonal():
    # Off-diagonal patterns are exact opposites; huge diagonals agree.
    rng = np.random.default_rng(1)
    model = rng.random((5, 5))
    human = 1.0 - model
    np.fill_diagonal(model, 10.0)
    np.fill_diagonal(human, 10.0)
    assert compare_confusions(model, human) == pytest.approx(-1.0)
    assert compare_confusions(model, human, offdiagonal=False) > -0.7


def test_permutation_pvalue_small_for_identical_matrices():
    rng = np.random.default_rng(2)
    m = rng.random((8, 8))
    assert permutation_pvalue(m, m, n_perm=999, seed=0) <= 0.002
    assert permutation_pvalue(m, m, offdiagonal=False, n_perm=999, seed=0) <= 0.002


def test_permutation_null_matches_scipy_on_jointly_permuted_matrices():
    rng = np.random.default_rng(3)
    model, human = rng.random((5, 5)), rng.random((5, 5))
    model[1, 2] = model[3, 0]  # ties
    n_perm, seed = 200, 7
    # The same permutations the function draws (one row per permutation).
    perms = np.random.default_rng(seed).permuted(np.tile(np.arange(5), (n_perm, 1)), axis=1)
    for offdiagonal in (True, False):
        observed = compare_confusions(model, human, offdiagonal)
        null = [compare_confusions(model[p][:, p], human, offdiagonal) for p in perms]
        expected = (1 + np.sum(np.array(null) >= observed - 1e-12)) / (1 + n_perm)
        got = permutation_pvalue(model, human, offdiagonal, n_perm=n_perm, seed=seed)
        assert got == pytest.approx(expected)


def test_permutation_pvalue_roughly_uniform_for_unrelated_matrices():
    rng = np.random.default_rng(4)
    p = np.array(
        [
            permutation_pvalue(rng.random((7, 7)), rng.random((7, 7)), n_perm=199, seed=s)
            for s in range(300)
        ]
    )
    assert 0.02 <= np.mean(p <= 0.05) <= 0.09
    assert 0.44 <= p.mean() <= 0.56


@pytest.mark.parametrize(
    ("counts", "labels", "message"),
    [
        (np.ones((3, 4)), np.array([0, 1]), r"labels must be an int array \[3\]"),
        (np.ones((3, 4)), np.array([0, 1, 4]), r"labels must lie in 0..3"),
        (np.array([[1, 0], [0, 0]]), np.array([0, 1]), "rows summing to 0"),
        (np.array([[1, -1], [0, 2]]), np.array([0, 1]), "non-negative"),
        (np.ones((2, 3)), np.array([0, 1]), r"no image of classes \[2\]"),
        (np.ones(3), np.array([0, 1, 2]), r"counts must be \[M, K\]"),
    ],
)
def test_human_confusion_refuses_bad_input(counts, labels, message):
    with pytest.raises(ValueError, match=message):
        human_confusion(counts, labels)


def test_compare_refuses_mismatched_matrices():
    with pytest.raises(ValueError, match="same shape"):
        compare_confusions(np.ones((4, 4)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="model must be a square"):
        compare_confusions(np.ones((4, 3)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="n_perm"):
        permutation_pvalue(np.ones((4, 4)), np.ones((4, 4)), n_perm=0)
