"""Position/pose transfer (seed 003 Fig. 1e): the object set's recorded geometry, ridge
scores against a closed-form fit, and planted layers that encode position or pose."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.transfer import (
    Transfer,
    object_probe,
    pearson_columns,
    split_parts,
    targets,
    transfer_scores,
)
from ssltrace.data.synthetic import _ellipse_mask, object_set
from ssltrace.io import save_npz
from ssltrace.tables import read

ALPHAS = [0.01, 1.0, 100.0]


def test_object_set_records_the_geometry_it_draws():
    found = object_set(40, seed=1)
    assert found["images"].shape == (40, 32, 32, 3) and found["images"].dtype == np.uint8
    np.testing.assert_array_equal(object_set(40, seed=1)["images"], found["images"])
    assert (0 <= found["rotation"]).all() and (found["rotation"] < np.pi).all()
    # the mask of an ellipse at (16, 16), semi-axes 8 and 4, major axis at 30 degrees
    pos, a, theta = np.array([[15.5, 15.5]]), np.array([8.0]), np.array([np.pi / 6])
    mask = _ellipse_mask(pos, a, theta)[0]
    x, y = np.meshgrid(np.arange(32) + 0.5, np.arange(32) + 0.5)
    assert mask[15, 15] == 1.0
    along = (15.5 + 6 * np.cos(theta[0]), 15.5 + 6 * np.sin(theta[0]))  # 0.75 a on the major axis
    across = (15.5 - 6 * np.sin(theta[0]), 15.5 + 6 * np.cos(theta[0]))  # 1.5 b on the minor
    assert mask[int(along[1]), int(along[0])] == 1.0
    assert mask[int(across[1]), int(across[0])] == 0.0
    assert mask.sum() == pytest.approx(np.pi * 8 * 4, rel=0.05)  # the ellipse's area


def test_split_parts_and_user_file(tmp_path):
    parts = split_parts(100, [0.5, 0.25, 0.25], seed=0)
    np.testing.assert_array_equal(np.bincount(parts), [50, 25, 25])
    with pytest.raises(ValueError, match="< 4 images"):
        split_parts(10, [0.8, 0.1, 0.1], 0)
    save_npz(
        tmp_path / "mine.npz",
        {
            "images": np.zeros((16, 8, 8, 3), np.uint8),
            "position": np.zeros((16, 2)),
            "rotation": np.full(16, 4.0),
            "scale": np.ones(16),
        },
    )
    probe = object_probe(file=str(tmp_path / "mine.npz"))
    np.testing.assert_allclose(probe["rotation"], 4.0 - np.pi)
    save_npz(
        tmp_path / "bad.npz",
        {"images": np.zeros((16, 8, 8, 3), np.uint8), "position": np.zeros(16)},
    )
    with pytest.raises(ValueError, match="probes.objects.file"):
        object_probe(file=str(tmp_path / "bad.npz"))


def test_pearson_columns_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    b[:, 1] += a[:, 1]
    expected = [pearsonr(a[:, k], b[:, k])[0] for k in range(2)]
    np.testing.assert_allclose(pearson_columns(a, b), expected)


def test_transfer_scores_match_a_closed_form_ridge():
    rng = np.random.default_rng(1)
    n = 60
    parts = split_parts(n, [0.5, 0.25, 0.25], 0)
    x = rng.normal(size=(n, 5))
    y = x @ rng.normal(size=(5, 2)) + 0.5 * rng.normal(size=(n, 2))
    found = transfer_scores(x, parts, y, [3.0])
    fit = parts == 0
    mean, sd = x[fit].mean(0), x[fit].std(0)
    z = (x - mean) / sd
    zc, yc = z[fit] - z[fit].mean(0), y[fit] - y[fit].mean(0)
    w = np.linalg.solve(zc.T @ zc + 3.0 * np.eye(5), zc.T @ yc)
    pred = (z - z[fit].mean(0)) @ w + y[fit].mean(0)
    for name, part in (("heldout", 1), ("select", 2)):
        rows = parts == part
        r = np.mean([pearsonr(pred[rows, k], y[rows, k])[0] for k in range(2)])
        assert found[name] == pytest.approx(r, rel=1e-9)


def test_planted_layers_are_found(tmp_path):
    probe = object_probe(n_images=200, seed=2)
    save_npz(tmp_path / "objects.npz", probe)
    rng = np.random.default_rng(3)
    t = targets(probe)
    mix = rng.normal(size=(2, 6))
    layers = {
        "where": t["position"] @ mix + 0.3 * rng.normal(size=(200, 6)),
        "pose": t["pose"] @ mix + 0.05 * rng.normal(size=(200, 6)),
        "noise": rng.normal(size=(200, 6)),
    }
    folder = tmp_path / "acts"
    folder.mkdir()
    arrays = {
        "layers": np.array(list(layers)),
        **layers,
        "labels": probe["labels"],
        "coarse": probe["coarse"],
        "part": probe["part"],
        "epoch": np.int64(0),
        "cache_key": np.array("k"),
    }
    save_npz(folder / "epoch_000.npz", arrays)
    job = Job(
        "simclr",
        0,
        [0],
        {"objects": folder, "stimuli": tmp_path / "objects.npz"},
        tmp_path / "cache",
        lambda m: None,
    )
    run_job(Transfer({"alphas": ALPHAS}), job, tmp_path / "t.tsv", {})
    table = read(tmp_path / "t.tsv")
    value = table.set_index(["layer", "probe", "metric"])["value"]
    assert value[("where", "heldout", "position_r")] > 0.95
    assert value[("pose", "heldout", "pose_r")] > 0.95
    assert abs(value[("noise", "heldout", "position_r")]) < 0.3
    best = table[table["metric"].str.endswith("_best")].set_index("metric")
    assert best.loc["position_r_best", "layer"] == "where"
    assert best.loc["pose_r_best", "layer"] == "pose"
    assert best.loc["position_r_best", "value"] == value[("where", "heldout", "position_r")]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"probes": {"objects": {"n_images": 16, "fractions": [8, 1, 1]}}}, "fractions"),
        ({"probes": {"objects": {"file": "/nonexistent/objects.npz"}}}, "probes.objects.file"),
    ],
)
def test_bad_object_settings_name_the_key(override, key):
    from pathlib import Path

    from ssltrace import study
    from ssltrace.config import ConfigError

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=key):
        study.load(root / "config.yaml", root / "presets/ci.yaml", overrides=override)
