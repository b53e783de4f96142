"""MDS of the embedding (seed 003 Fig. 1d) against a planted planar configuration."""

import numpy as np
import pytest
from scipy.spatial import procrustes

from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.mds import (
    Mds,
    backbone_output,
    balanced_subset,
    dissimilarities,
    kruskal_stress,
    mds_embedding,
)
from ssltrace.io import load_npz, save_npz
from ssltrace.tables import read


def test_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(40, 2))
    # embed the plane in 6-D by a random rotation: distances are exactly planar
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    x = np.c_[plane, np.zeros((40, 4))] @ q
    coords, stress, kruskal = mds_embedding(dissimilarities(x, "euclidean"))
    assert kruskal < 1e-3 and stress >= 0
    _, _, disparity = procrustes(plane, coords)
    assert disparity < 1e-6


def test_kruskal_stress_by_hand():
    # three points on a line at 0, 1, 3: δ = (1, 3, 2); a layout at 0, 1, 2 has d = (1, 2, 1):
    # Σ(δ − d)² = 0 + 1 + 1 = 2, Σ δ² = 1 + 9 + 4 = 14
    delta = dissimilarities(np.array([[0.0], [1], [3]]), "euclidean")
    assert kruskal_stress(delta, np.array([[0.0], [1], [2]])) == pytest.approx(np.sqrt(2 / 14))


def test_cosine_dissimilarity_is_the_chord_of_the_angle():
    x = np.array([[1.0, 0], [0, 3], [2, 2]])
    d = dissimilarities(x)
    assert d[0, 1] == pytest.approx(np.sqrt(2))  # orthogonal
    assert d[0, 2] == pytest.approx(np.sqrt(2 - 2 * np.cos(np.pi / 4)))
    with pytest.raises(ValueError, match="dissimilarity"):
        dissimilarities(x, "manhattan")


def test_balanced_subset_spreads_over_classes():
    labels = np.repeat([0, 1, 2], [50, 5, 20])
    picked = balanced_subset(labels, 12, seed=1)
    assert picked.size == 12 and np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(np.bincount(labels[picked]), [4, 4, 4])
    np.testing.assert_array_equal(np.bincount(labels[balanced_subset(labels, 21, 1)]), [8, 5, 8])
    assert balanced_subset(labels, None, 0).size == 75
    assert backbone_output(["stem", "layer4", "pool", "head_fc1"]) == "pool"


def test_mds_analysis_at_chosen_epochs(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "known"
    folder.mkdir()
    labels = np.repeat(np.arange(3), 8)
    for epoch in (0, 1, 2):
        x = rng.normal(size=(24, 5)) + 3 * np.eye(5)[labels]
        arrays = {
            "layers": np.array(["pool", "head_fc1"]),
            "pool": x,
            "head_fc1": x[:, :2],
            "labels": labels,
            "coarse": labels // 2,
            "class_names": np.array(list("abc")),
            "coarse_names": np.array(["x", "y"]),
            "epoch": np.int64(epoch),
            "cache_key": np.array(f"k{epoch}"),
        }
        save_npz(folder / f"epoch_{epoch:03d}.npz", arrays)
    settings = {
        "epochs": None,
        "layers": None,
        "n_images": 12,
        "dissimilarity": "cosine",
        "max_iter": 300,
        "seed": 0,
    }
    job = Job("simclr", 0, [0, 1, 2], {"known": folder}, tmp_path / "cache", lambda m: None)
    run_job(Mds(settings), job, tmp_path / "t.tsv", {"embedding": tmp_path / "e.npz"})
    out = load_npz(tmp_path / "e.npz")
    assert out["embedding"].shape == (2, 1, 12, 2)  # first and last epoch, the backbone output
    np.testing.assert_array_equal(out["epochs"], [0, 2])
    np.testing.assert_array_equal(np.bincount(out["labels"]), [4, 4, 4])
    table = read(tmp_path / "t.tsv")
    assert set(table["metric"]) == {"stress", "kruskal_stress"} and set(table["layer"]) == {"pool"}
    with pytest.raises(ValueError, match="mds.layers"):
        run_job(
            Mds({**settings, "layers": ["layer9"]}),
            job,
            tmp_path / "u.tsv",
            {"embedding": tmp_path / "u.npz"},
        )


@pytest.mark.parametrize("section", ["mds", "filters", "stimuli"])
def test_unanalysed_snapshot_epochs_name_the_key(section):
    from pathlib import Path

    from ssltrace import study
    from ssltrace.config import ConfigError

    root = Path(__file__).resolve().parents[1]
    with pytest.raises(ConfigError, match=f"{section}.epochs"):
        study.load(
            root / "config.yaml", root / "presets/ci.yaml", overrides={section: {"epochs": [9]}}
        )
