"""Study-level t-test matrices between methods (seed 003 ED Figs. 1, 8) against scipy.stats
on small planted cases, and the `ssltrace ttests` command that writes them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from ssltrace import io, tables
from ssltrace.analysis.ttests import behaviour_ttests, best_layer_scores, neural_ttests
from ssltrace.cli import main

LAYERS = ["layer1", "layer2", "pool"]
REGIONS = np.array(["d:V1"] * 6 + ["d:IT"] * 5)


def _scores_file(path, rng, gain, best, epochs=(0, 3)):
    """A predictivity scores file: [epoch, kind, readout, layer, neuroid]; layer `best` of
    each region is the highest at the last epoch; kind 0 raw, 1 ceiled (raw / 0.8); the
    second readout has no ceiling (NaN)."""
    n = len(REGIONS)
    scores = np.full((len(epochs), 2, 2, len(LAYERS), n), np.nan)
    for e in range(len(epochs)):
        for li in range(len(LAYERS)):
            for region, peak in best.items():
                member = REGIONS == region
                level = gain - 0.2 * abs(li - peak) + 0.05 * rng.standard_normal(member.sum())
                scores[e, 0, :, li, member] = level[:, None]
                scores[e, 1, 0, li, member] = level / 0.8
    scores[-1, :, :, 0, 2] = np.nan  # a neuroid without a score at one layer
    io.save_npz(
        path,
        {
            "scores": scores,
            "epochs": np.array(epochs),
            "readouts": np.array(["ridge_pca", "pls_pca"]),
            "kinds": np.array(["raw", "ceiled"]),
            "layers": np.array(LAYERS),
            "region": REGIONS,
            "neuroid": np.array([f"n{i}" for i in range(len(REGIONS))]),
            "ceiling": np.full(len(REGIONS), 0.64),
        },
    )
    return path


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(1)
    plan = {"simclr": (0.6, {"d:V1": 0, "d:IT": 2}), "barlow": (0.5, {"d:V1": 1, "d:IT": 2})}
    return {
        (method, seed): _scores_file(tmp_path / f"{method}_{seed}.npz", rng, gain, best)
        for method, (gain, best) in plan.items()
        for seed in (0, 1)
    }


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the planted NaN neuroid
def test_neural_ttests_equal_scipy_paired_over_neuroids_at_the_best_layers(runs):
    found = neural_ttests(runs)
    assert found["methods"].tolist() == ["barlow", "simclr"]
    assert found["regions"].tolist() == ["d:IT", "d:V1"]  # sorted
    assert found["t"].shape == (2, 2, 2, 2, 2)
    for r, k, g in np.ndindex(1, 2, 2):  # readout ridge_pca, raw and ceiled, both regions
        member = REGIONS == found["regions"][g]
        vectors = {}
        for method in ("barlow", "simclr"):
            # by hand: last epoch, mean over the seeds, best layer by median over neuroids
            mean = np.nanmean(
                [io.load_npz(runs[(method, s)])["scores"][-1, k, r] for s in (0, 1)], 0
            )
            medians = np.nanmedian(mean[:, member], axis=1)
            vectors[method] = mean[int(np.nanargmax(medians)), member]
        keep = np.isfinite(vectors["barlow"]) & np.isfinite(vectors["simclr"])
        expected = scipy.stats.ttest_rel(vectors["barlow"][keep], vectors["simclr"][keep])
        assert found["t"][r, k, g, 0, 1] == pytest.approx(expected.statistic, rel=1e-12)
        assert found["p"][r, k, g, 0, 1] == pytest.approx(expected.pvalue, rel=1e-12)
        assert found["t"][r, k, g, 1, 0] == pytest.approx(-expected.statistic, rel=1e-12)
        assert found["neuroids"][r, k, g, 0, 1] == keep.sum()
        assert np.isnan(found["p"][r, k, g].diagonal()).all()
    # the planted best layers: V1 at layer2 for barlow, layer1 for simclr; IT at pool for both
    v1, it = found["regions"].tolist().index("d:V1"), found["regions"].tolist().index("d:IT")
    assert found["best_layer"][0, 0, v1].tolist() == ["layer2", "layer1"]
    assert found["best_layer"][0, 0, it].tolist() == ["pool", "pool"]
    assert found["seeds"].tolist() == [2, 2] and found["epoch"].tolist() == [3, 3]
    # without a ceiling (pls_pca, ceiled) there is no layer and no test, only NaN
    assert (found["best_layer"][1, 1] == "").all() and np.isnan(found["p"][1, 1]).all()


def test_best_layer_scores_ties_go_to_the_earlier_layer():
    scores = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.0, 0.0, 0.0]])
    layer, values = best_layer_scores(scores)
    assert layer == 0 and values.tolist() == [0.1, 0.2, 0.3]


def test_neural_ttests_refuse_runs_of_different_neuroids(runs, tmp_path):
    other = io.load_npz(next(iter(runs.values())))
    other = {**other, "neuroid": np.array([f"x{i}" for i in range(len(REGIONS))])}
    io.save_npz(tmp_path / "other.npz", other)
    with pytest.raises(ValueError, match="other.npz: its neuroid differ"):
        neural_ttests({**runs, ("vicreg", 0): tmp_path / "other.npz"})


def _behaviour_table():
    rng = np.random.default_rng(2)
    rows = []
    for method, gain, seeds in (("simclr", 0.5, 4), ("supervised", 0.6, 3), ("untrained", 0.1, 1)):
        for seed in range(seeds):
            for epoch in (0, 5) if method != "untrained" else (0,):
                for probe in ("human", "user"):
                    for layer in ("head_fc1", "pool"):
                        value = gain * (epoch > 0 or method == "untrained") + 0.05 * rng.random()
                        rows.append(
                            (method, seed, epoch, layer, probe, "behaviour_consistency", value)
                        )
                        rows.append((method, seed, epoch, layer, probe, "behaviour_model_r", 0.9))
    frame = pd.DataFrame(rows, columns=tables.COLUMNS)
    return frame


def test_behaviour_ttests_equal_scipy_unpaired_over_seeds():
    table = _behaviour_table()
    found = behaviour_ttests(table)
    assert found["methods"].tolist() == ["simclr", "supervised", "untrained"]
    assert found["probes"].tolist() == ["human", "user"]
    final = table[(table.metric == "behaviour_consistency")]
    final = final[final.epoch == final.groupby(["method", "seed"]).epoch.transform("max")]
    for a, probe in enumerate(found["probes"]):
        for b, layer in enumerate(found["layers"]):
            rows = final[(final.probe == probe) & (final.layer == layer)]
            x, y = (rows[rows.method == m].value for m in ("simclr", "supervised"))
            expected = scipy.stats.ttest_ind(x, y)
            assert found["t"][a, b, 0, 1] == pytest.approx(expected.statistic, rel=1e-12)
            assert found["p"][a, b, 0, 1] == pytest.approx(expected.pvalue, rel=1e-12)
            assert found["seeds"][a, b].tolist() == [4, 3, 1]
    # a method against itself has no test
    assert np.isnan(found["p"][0, 0].diagonal()).all()
    with pytest.raises(ValueError, match="no rows for metric 'other'"):
        behaviour_ttests(table, "other")


def test_ttests_command_writes_the_study_matrix_files(runs, tmp_path):
    args = [f"--input={m}:{s}={p}" for (m, s), p in runs.items()]
    assert main(["ttests", "neural", *args, "--out", str(tmp_path / "n.npz")]) == 0
    written = io.load_npz(tmp_path / "n.npz")
    np.testing.assert_array_equal(written["p"], neural_ttests(runs)["p"])
    table_path = tmp_path / "behaviour.tsv"
    io.save_table(table_path, tables.frame(_behaviour_table().to_dict("records")))
    out = tmp_path / "b.npz"
    assert main(["ttests", "behaviour", "--input", str(table_path), "--out", str(out)]) == 0
    assert io.load_npz(out)["p"].shape == (2, 2, 3, 3)
