"""Learning-trajectory measures, seed aggregation and the RDM probe set."""

import numpy as np
import pandas as pd
import pytest

from ssltrace.analysis.rdm import compare, upper
from ssltrace.analysis.trajectory import category_dissimilarity, epoch_stability
from ssltrace.figures.style import summarise
from ssltrace.probesets import CIFAR100_GROUPS, rdm_probe_indices

CIFAR100_COARSE = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]  # fmt: skip


def _symmetric(vector, n):
    rdm = np.zeros((n, n))
    rdm[np.triu_indices(n, k=1)] = vector
    return rdm + rdm.T


# --- epoch stability ---------------------------------------------------------------------


def test_identical_rdms_are_perfectly_stable():
    rdm = _symmetric(np.random.default_rng(0).random(45), 10)
    for method in ("pearson", "spearman", "kendall_tau_a"):
        np.testing.assert_allclose(epoch_stability(np.stack([rdm] * 4), method), np.ones(3))


def test_converging_sequence_has_rising_stability():
    rng = np.random.default_rng(1)
    target = rng.random(4560)  # a 96-image RDM's upper triangle
    noise_scale = [4.0, 2.0, 1.0, 0.5, 0.25, 0.1]
    rdms = np.stack([target + s * rng.normal(size=target.size) for s in noise_scale])
    for method in ("pearson", "spearman", "kendall_tau_a"):
        stability = epoch_stability(rdms, method)
        assert stability.shape == (5,)
        assert np.all(np.diff(stability) > 0), (method, stability)


def test_stability_is_consecutive_comparison_and_dict_is_sorted_by_epoch():
    rng = np.random.default_rng(2)
    rdms = [_symmetric(rng.random(28), 8) for _ in range(3)]
    expected = [compare(rdms[0], rdms[1], "pearson"), compare(rdms[1], rdms[2], "pearson")]
    by_epoch = {20: rdms[2], 0: rdms[0], 5: rdms[1]}  # insertion order is not epoch order
    np.testing.assert_allclose(epoch_stability(by_epoch, "pearson"), expected)
    np.testing.assert_allclose(epoch_stability(np.stack(rdms), "pearson"), expected)
    np.testing.assert_allclose(
        epoch_stability(np.stack([upper(r) for r in rdms]), "pearson"), expected
    )


def test_epoch_stability_rejects_bad_input():
    with pytest.raises(ValueError, match="at least two"):
        epoch_stability(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="method"):
        epoch_stability(np.zeros((3, 4, 4)), "cosine")
    with pytest.raises(ValueError, match="same probe images"):
        epoch_stability({0: np.eye(4), 1: np.eye(5)})


# --- category dissimilarity ----------------------------------------------------------------


def test_category_dissimilarity_by_hand():
    # d(i, j) = i + j for six images in groups {0,1}, {2,3}, {4,5}.
    idx = np.arange(6)
    rdm = (idx[:, None] + idx[None, :]).astype(float)
    np.fill_diagonal(rdm, 0)
    result = category_dissimilarity(rdm, np.array([0, 0, 1, 1, 2, 2]), ["a", "b", "c"])
    # a: within d01 = 1; between (0,{2..5}) = 2+3+4+5, (1,{2..5}) = 3+4+5+6 -> 32/8.
    # b: within d23 = 5; between (2,{0,1,4,5}) = 2+3+6+7, (3,...) = 3+4+7+8 -> 40/8.
    # c: within d45 = 9; between (4,{0..3}) = 4+5+6+7, (5,{0..3}) = 5+6+7+8 -> 48/8.
    assert result == {"a": (1.0, 4.0), "b": (5.0, 5.0), "c": (9.0, 6.0)}


def test_category_dissimilarity_within_uses_distinct_pairs_only():
    # Group 0 has three members: within = mean(d01, d02, d12), the zero diagonal excluded.
    rdm = _symmetric([1.0, 2.0, 7.0, 3.0, 7.0, 7.0], 4)  # d01 d02 d03 d12 d13 d23
    result = category_dissimilarity(rdm, np.array([0, 0, 0, -1]), ["g"])  # -1: no group
    assert result == {"g": pytest.approx((2.0, 7.0))}


def test_category_dissimilarity_rejects_bad_input():
    rdm = _symmetric(np.arange(6.0), 4)
    with pytest.raises(ValueError, match="at least 2 members"):
        category_dissimilarity(rdm, np.array([0, 1, 1, 1]), ["x", "y"])
    with pytest.raises(ValueError, match="groups_of_each"):
        category_dissimilarity(rdm, np.array([0, 0, 1]), ["x", "y"])
    with pytest.raises(ValueError, match="group_names"):
        category_dissimilarity(rdm, np.array([0, 0, 2, 2]), ["x", "y"])
    with pytest.raises(ValueError, match="group_names"):
        category_dissimilarity(rdm, np.array([0, 0, -2, 1]), ["x", "y"])
    asymmetric = rdm.copy()
    asymmetric[0, 1] += 1
    with pytest.raises(ValueError, match="symmetric"):
        category_dissimilarity(asymmetric, np.array([0, 0, 1, 1]), ["x", "y"])


# --- seed aggregation (what the figures draw: figures.style.summarise) ----------------------


def _table():
    rows = []
    for seed, value in zip([1, 2, 3], [0.2, 0.5, 1.1], strict=True):
        rows.append(("simclr", seed, 4, "layer1", "rdm96", "stability", value))
    rows.append(("simclr", 1, 4, "layer2", "rdm96", "stability", 0.7))
    rows.append(("byol", 1, 4, "layer1", "rdm96", "stability", 0.3))
    rows.append(("byol", 2, 4, "layer1", "rdm96", "stability", np.nan))
    rows.append(("byol", 3, 4, "layer1", "rdm96", "stability", 0.9))
    return pd.DataFrame(
        rows, columns=["method", "seed", "epoch", "layer", "probe", "metric", "value"]
    )


def test_seed_summary_mean_and_sd_by_hand():
    out = summarise(_table(), ["method", "layer"]).set_index(["method", "layer"])
    simclr = out.loc[("simclr", "layer1")]
    assert simclr["mean"] == pytest.approx(0.6)  # (0.2 + 0.5 + 1.1) / 3
    # sample sd: deviations -0.4, -0.1, 0.5 -> (0.16 + 0.01 + 0.25) / 2 = 0.21
    assert simclr["std"] == pytest.approx(np.sqrt(0.21))
    assert simclr["count"] == 3
    single = out.loc[("simclr", "layer2")]
    assert single["mean"] == pytest.approx(0.7) and np.isnan(single["std"])
    assert single["count"] == 1
    byol = out.loc[("byol", "layer1")]  # the NaN seed is skipped
    assert byol["mean"] == pytest.approx(0.6) and byol["count"] == 2
    assert byol["std"] == pytest.approx(np.std([0.3, 0.9], ddof=1))


# --- RDM probe set -------------------------------------------------------------------------


def _coarse_labels(per_class=50, seed=0):
    labels = np.repeat(np.arange(20), per_class)
    return np.random.default_rng(seed).permutation(labels)


def test_default_groups_use_real_cifar100_coarse_names():
    named = [name for names in CIFAR100_GROUPS.values() for name in names]
    assert set(named) <= set(CIFAR100_COARSE) and len(named) == len(set(named))


def test_probe_set_is_balanced_stratified_and_seeded():
    labels = _coarse_labels()
    idx, group = rdm_probe_indices(labels, CIFAR100_COARSE, CIFAR100_GROUPS, 96, seed=3)
    assert idx.shape == group.shape == (96,) and len(np.unique(idx)) == 96
    np.testing.assert_array_equal(np.bincount(group), [24, 24, 24, 24])
    names = list(CIFAR100_GROUPS)
    for g, name in enumerate(names):
        chosen = [CIFAR100_COARSE[c] for c in labels[idx[group == g]]]
        assert set(chosen) == set(CIFAR100_GROUPS[name])  # no image outside the group
        counts = np.unique(chosen, return_counts=True)[1]
        assert counts.max() - counts.min() <= 1  # 24 animals over 9 classes: 2 or 3 each
    assert np.all(np.diff(group) >= 0)  # grouped, so the RDM shows diagonal blocks
    again = rdm_probe_indices(labels, CIFAR100_COARSE, CIFAR100_GROUPS, 96, seed=3)
    np.testing.assert_array_equal(idx, again[0])
    other = rdm_probe_indices(labels, CIFAR100_COARSE, CIFAR100_GROUPS, 96, seed=4)
    assert not np.array_equal(idx, other[0])


def test_probe_set_uneven_total_and_small_class_fill():
    labels = np.array([0] * 3 + [1] * 40 + [2] * 40)
    groups = {"small_and_big": ["a", "b"], "other": ["c"]}
    idx, group = rdm_probe_indices(labels, ["a", "b", "c"], groups, n_images=21, seed=0)
    np.testing.assert_array_equal(np.bincount(group), [11, 10])
    # Class "a" has only 3 images; the rest of the group's 11 come from "b".
    assert np.sum(labels[idx] == 0) == 3 and np.sum(labels[idx] == 1) == 8


def test_probe_set_errors_name_the_problem():
    labels = _coarse_labels(per_class=5)
    with pytest.raises(ValueError, match="'dogs'"):
        rdm_probe_indices(labels, CIFAR100_COARSE, {"animals": ["dogs"]}, 10)
    with pytest.raises(ValueError, match="group 'people' has 5 images"):
        rdm_probe_indices(labels, CIFAR100_COARSE, CIFAR100_GROUPS, 96)
    with pytest.raises(ValueError, match="in both group"):
        rdm_probe_indices(labels, CIFAR100_COARSE, {"x": ["fish"], "y": ["fish", "trees"]}, 4)
    with pytest.raises(ValueError, match="coarse_labels"):
        rdm_probe_indices(labels.astype(float), CIFAR100_COARSE, CIFAR100_GROUPS, 8)
    with pytest.raises(ValueError, match="n_images"):
        rdm_probe_indices(labels, CIFAR100_COARSE, CIFAR100_GROUPS, 2)
