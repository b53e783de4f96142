"""Neighbour structure (seed 003 Fig. 1b-c) against scikit-learn and brute-force definitions."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.neighbours import (
    Neighbours,
    neighbour_measures,
    neighbour_profile,
    neighbour_quality,
    rank_grid,
    ranked_similarities,
    weighted_knn_accuracy,
    weighted_knn_predict,
)
from ssltrace.io import load_npz, save_npz
from ssltrace.tables import read


def _clustered(n_classes, per_class, dim, rng, spread=1.0):
    labels = np.repeat(np.arange(n_classes), per_class)
    x = 1.5 * rng.normal(size=(n_classes, dim))[labels] + spread * rng.normal(
        size=(labels.size, dim)
    )
    return x, labels


def _sklearn_knn(bank, bank_y, queries, k, tau):
    # cosine distance d = 1 - s, so Wu et al.'s weight exp(s / tau) is exp((1 - d) / tau)
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1 - d) / tau)
    )
    return clf.fit(bank, bank_y).predict(queries)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("k", "tau"), [(100, 0.07), (7, 0.5), (1, 0.07)])
def test_weighted_knn_matches_sklearn(k, tau, dtype):
    rng = np.random.default_rng(k)
    x, y = _clustered(6, 60, 12, rng, spread=2.0)
    y = y * 3 + 2  # labels need not be 0..C-1
    test = rng.random(y.size) < 0.3
    ours = weighted_knn_predict(
        x[~test], y[~test], x[test], k=k, temperature=tau, dtype=dtype, chunk_size=17
    )
    ref = _sklearn_knn(x[~test], y[~test], x[test], k, tau)
    assert 0.3 < np.mean(ref == y[test]) < 1.0  # neither trivial nor hopeless
    np.testing.assert_array_equal(ours, ref)


def test_weighted_knn_vote_by_hand():
    # Bank on the unit circle at angles 0, 10, 20 (class 0) and 90, 100 (class 1) degrees.
    # Query at 50 degrees, k = 4: neighbours 20, 10 (class 0, cos 30°, cos 40°) and 90, 100
    # (class 1, cos 40°, cos 50°). With tau = 1 the class-0 weight e^.866 + e^.766 = 4.53
    # beats e^.766 + e^.643 = 4.05; with tau = 0.07 the vote is nearly "nearest wins" and
    # still class 0 (its 30° neighbour).
    angles = np.deg2rad([0, 10, 20, 90, 100])
    bank = np.stack([np.cos(angles), np.sin(angles)], 1)
    y = np.array([0, 0, 0, 1, 1])
    q = np.array([[np.cos(np.deg2rad(50)), np.sin(np.deg2rad(50))]])
    assert weighted_knn_predict(bank, y, q, k=4, temperature=1.0)[0] == 0
    # Query at 60 degrees: class 1 has 90 and 100 (cos 30°, 40°), class 0 has 20 and 10
    # (cos 40°, 50°): symmetric to the above, class 1.
    q60 = np.array([[np.cos(np.deg2rad(60)), np.sin(np.deg2rad(60))]])
    assert weighted_knn_predict(bank, y, q60, k=4, temperature=1.0)[0] == 1
    # Scaling the features changes nothing (cosine similarity).
    assert weighted_knn_accuracy(5 * bank, y, 0.1 * q60, np.array([1]), k=4) == 1.0


def test_weighted_knn_rejects_bad_arguments():
    x, y = np.ones((5, 3)), np.arange(5)
    with pytest.raises(ValueError, match="k must be an integer from 1 to 5"):
        weighted_knn_predict(x, y, x, k=6)
    with pytest.raises(ValueError, match="temperature"):
        weighted_knn_predict(x, y, x, k=2, temperature=0)
    with pytest.raises(ValueError, match="same number of features"):
        weighted_knn_predict(x, y, np.ones((2, 4)), k=2)
    with pytest.raises(ValueError, match="dtype"):
        weighted_knn_predict(x, y, x, k=2, dtype="float16")


@pytest.mark.parametrize("n_neighbours", [1, 10])
def test_neighbour_quality_matches_sklearn_neighbours(n_neighbours):
    rng = np.random.default_rng(n_neighbours)
    x, y = _clustered(5, 40, 8, rng, spread=2.0)
    nn = NearestNeighbors(n_neighbors=n_neighbours + 1, metric="cosine", algorithm="brute")
    idx = nn.fit(x).kneighbors(x, return_distance=False)
    # sklearn returns each point as its own nearest neighbour first
    assert (idx[:, 0] == np.arange(len(x))).all()
    expected = np.mean(y[idx[:, 1:]] == y[:, None])
    for dtype in ("float64", "float32"):
        found = neighbour_quality(x, y, n_neighbours, chunk_size=33, dtype=dtype)
        assert found == pytest.approx(expected, abs=1e-12)


def test_neighbour_quality_by_hand():
    # Directions (angle in radians from the x axis): images 0, 1, 4 at 0, .01, .025 (classes
    # 0, 0, 2), images 2, 3 near 90 degrees (class 1). Nearest other: 0 -> 1, 1 -> 0 (.01 <
    # .015), 2 <-> 3, 4 -> 1 (another class): 4 of 5 share their neighbour's label.
    x = np.array([[1, 0.0], [1, 0.01], [0, 1.0], [0.01, 1], [1, 0.025]])
    y = np.array([0, 0, 1, 1, 2])
    assert neighbour_quality(x, y, 1) == pytest.approx(4 / 5)


def test_ranked_similarities_match_brute_force():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 6))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    expected = np.mean([np.sort(np.delete(sims[i], i))[::-1] for i in range(len(x))], axis=0)
    np.testing.assert_allclose(ranked_similarities(x, chunk_size=8, dtype="float64"), expected)
    ranks = np.array([1, 5, 36])
    np.testing.assert_allclose(ranked_similarities(x, ranks), expected[ranks - 1], atol=1e-6)


def test_ranked_similarities_of_identical_images_are_one():
    curve = ranked_similarities(np.tile([[1.0, 2.0]], (4, 1)))
    np.testing.assert_allclose(curve, 1.0, atol=1e-6)


def test_rank_grid():
    np.testing.assert_array_equal(rank_grid(5, 10), [1, 2, 3, 4, 5])
    grid = rank_grid(10_000, 50)
    assert grid[0] == 1 and grid[-1] == 10_000 and np.all(np.diff(grid) > 0) and grid.size <= 50


SETTINGS = {
    "k": 5,
    "temperature": 0.07,
    "quality_neighbours": 3,
    "ranked_points": 8,
    "dtype": "float64",
}


def _activation_file(folder, epoch, rng):
    x, y = _clustered(3, 10, 4, rng)
    part = np.tile(np.arange(10) >= 7, 3).astype(np.int64)
    arrays = {
        "layers": np.array(["a", "b"]),
        "a": x.astype(np.float32),
        "b": np.abs(x).astype(np.float32),
        "labels": y,
        "part": part,
        "epoch": np.int64(epoch),
        "cache_key": np.array(f"key{epoch}"),
    }
    save_npz(folder / f"epoch_{epoch:03d}.npz", arrays)
    return arrays


def test_neighbours_analysis_rows_and_array(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "known"
    folder.mkdir()
    acts = [_activation_file(folder, e, rng) for e in (0, 2)]
    job = Job(
        "simclr", 1, [0, 2], {"known": folder}, cache_dir=tmp_path / "cache", log=lambda m: None
    )
    table, ranked = tmp_path / "t.tsv", tmp_path / "ranked.npz"
    run_job(Neighbours(SETTINGS), job, table, {"ranked": ranked})
    frame = read(table)
    assert set(frame["metric"]) == {"knn_accuracy", "neighbour_quality"}
    assert set(frame["probe"]) == {"fine"} and len(frame) == 2 * 2 * 2
    train = acts[1]["part"] == 0
    row = frame[(frame["epoch"] == 2) & (frame["layer"] == "b")].set_index("metric")["value"]
    x, y = acts[1]["b"], acts[1]["labels"]
    expected = np.mean(_sklearn_knn(x[train], y[train], x[~train], 5, 0.07) == y[~train])
    assert row["knn_accuracy"] == pytest.approx(expected)
    assert row["neighbour_quality"] == pytest.approx(neighbour_quality(x, y, 3))
    out = load_npz(ranked)
    assert out["ranked"].shape == (2, 2, 8)
    np.testing.assert_array_equal(out["epochs"], [0, 2])
    np.testing.assert_array_equal(out["layers"], ["a", "b"])
    np.testing.assert_allclose(out["ranked"][1, 1], ranked_similarities(x, out["ranks"]))
    # a rerun hits the per-epoch cache and gives the same table
    run_job(Neighbours(SETTINGS), job, tmp_path / "t2.tsv", {"ranked": tmp_path / "r2.npz"})
    assert read(tmp_path / "t2.tsv").equals(frame)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"neighbours": {"k": 161}}, "neighbours.k"),  # ci: 4 x 5 classes x 8 train images
        ({"neighbours": {"quality_neighbours": 240}}, "neighbours.quality_neighbours"),
        ({"neighbours": {"temperature": 0}}, "neighbours"),
    ],
)
def test_bad_neighbour_settings_name_the_key(override, key):
    from ssltrace import study
    from ssltrace.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        root = Path(__file__).resolve().parents[1]
        study.load(root / "config.yaml", root / "presets/ci.yaml", overrides=override)


def test_neighbour_profile_is_quality_and_ranked_curve_in_one_pass():
    rng = np.random.default_rng(5)
    x, y = _clustered(4, 15, 6, rng, spread=2.0)
    ranks = rank_grid(59, 12)
    quality, curve = neighbour_profile(x, y, 10, ranks, chunk_size=7, dtype="float64")
    assert quality == pytest.approx(neighbour_quality(x, y, 10, dtype="float64"), abs=1e-12)
    np.testing.assert_allclose(curve, ranked_similarities(x, ranks, dtype="float64"))


@pytest.mark.parametrize("with_ranks", [False, True])
@pytest.mark.parametrize("chunk_size", [7, 64, 4096])
def test_neighbour_measures_one_pass_match_sklearn(with_ranks, chunk_size):
    # One similarity pass (upper triangle without ranks, whole rows with them) gives the
    # weighted kNN of scikit-learn's KNeighborsClassifier, the 10-neighbour quality of its
    # NearestNeighbors and the brute-force ranked curve; images in neither the bank nor the
    # queries count for the quality only; labels are not 0..C-1; parts are interleaved.
    rng = np.random.default_rng(chunk_size)
    x, y = _clustered(6, 50, 10, rng, spread=2.0)
    y = 3 * y + 1
    part = rng.integers(0, 3, size=y.size)  # 0 bank, 1 queries, 2 neither
    bank, queries = part == 0, part == 1
    ref_knn = np.mean(_sklearn_knn(x[bank], y[bank], x[queries], 20, 0.1) == y[queries])
    nn = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(x)
    ref_quality = np.mean(y[nn.kneighbors(x, return_distance=False)[:, 1:]] == y[:, None])
    ranks = rank_grid(y.size - 1, 9) if with_ranks else None
    for dtype in ("float64", "float32"):
        found = neighbour_measures(
            x, y, bank, queries, 20, 0.1, 10, ranks, chunk_size=chunk_size, dtype=dtype
        )
        assert 0.3 < ref_knn < 1.0
        assert found.knn_accuracy == pytest.approx(ref_knn, abs=1e-12)
        assert found.quality == pytest.approx(ref_quality, abs=1e-12)
        if with_ranks:
            expected = ranked_similarities(x, ranks, dtype="float64")
            np.testing.assert_allclose(found.ranked, expected, atol=1e-5)
        else:
            assert found.ranked is None


def test_neighbour_measures_reject_bad_masks():
    x, y = np.ones((6, 3)), np.arange(6)
    with pytest.raises(ValueError, match="boolean masks of the 6 images"):
        neighbour_measures(x, y, np.ones(5, bool), np.zeros(5, bool), k=1)
    with pytest.raises(ValueError, match="disjoint"):
        neighbour_measures(x, y, np.ones(6, bool), np.ones(6, bool), k=1)
    with pytest.raises(ValueError, match="k must be an integer from 1 to 3"):
        neighbour_measures(x, y, np.arange(6) < 3, np.arange(6) >= 3, k=4)
