"""UMAP analysis (seed 004 Fig. 1) on planted clusters: separated after, mixed before."""

import numpy as np
import pandas as pd
import pytest
from sklearn.manifold import trustworthiness
from sklearn.metrics import silhouette_score

from ssltrace import io, layout
from ssltrace.analysis import analysis
from ssltrace.analysis.base import Job, run_job
from ssltrace.analysis.umap import pick_groups, umap_embedding

SETTINGS = {
    "levels": ["sample", "fine", "coarse"],
    "groups": 3,
    "layer": None,
    "n_neighbors": 10,
    "min_dist": 0.1,
    "seed": 0,
}


def _features(rng, labels, spread):
    """Points around one centre per label; spread 0 = no structure at all."""
    centres = rng.normal(size=(labels.max() + 1, 16)) * spread
    return (centres[labels] + rng.normal(size=(labels.size, 16))).astype(np.float32)


def _write(folder, epoch, arrays):
    io.save_npz(folder / layout.epoch_file(epoch), {**arrays, "epoch": np.int64(epoch)})


def _study(tmp_path):
    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(6), 40)  # 6 fine classes, 2 per coarse class
    coarse = fine // 2
    part = np.tile(np.r_[np.zeros(30), np.ones(10)].astype(np.int64), 6)
    source = np.repeat(np.arange(8), 30)
    sample_part = np.tile(np.r_[np.zeros(25), np.ones(5)].astype(np.int64), 8)
    for epoch, spread in ((0, 0.0), (3, 8.0)):
        x = _features(rng, fine, spread) + _features(rng, coarse, spread)
        known = {
            "layers": np.array(["block", "pool", "head_fc1"]),
            "block": x,
            "pool": x,
            "head_fc1": rng.normal(size=x.shape).astype(np.float32),
            "labels": fine,
            "coarse": coarse,
            "part": part,
            "class_names": np.array([f"f{i}" for i in range(6)]),
            "coarse_names": np.array(["c0", "c1", "c2"]),
        }
        _write(tmp_path / "known", epoch, known)
        s = _features(rng, source, spread)
        sample = {**known, "block": s, "pool": s, "head_fc1": s, "labels": source}
        sample.update(coarse=source, part=sample_part)
        _write(tmp_path / "sample", epoch, sample)
    inputs = {"known": tmp_path / "known", "sample": tmp_path / "sample"}
    # Epochs 1 and 2 have no files: only the first and last analysed epochs are read.
    return Job("m", 0, [0, 1, 2, 3], inputs, log=print)


def test_umap_embedding_separates_blobs_and_keeps_neighbourhoods():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 50)
    x = _features(rng, labels, 10.0)
    coords = umap_embedding(x, n_neighbors=10, seed=0)
    assert coords.shape == (150, 2)
    assert silhouette_score(coords, labels) > 0.7
    assert trustworthiness(x, coords, n_neighbors=5) > 0.9
    assert np.array_equal(coords, umap_embedding(x, n_neighbors=10, seed=0))  # seeded


def test_pick_groups_is_seeded_and_takes_all_when_few():
    labels = np.arange(20).repeat(2)
    assert np.array_equal(pick_groups(labels, 5, 3), pick_groups(labels, 5, 3))
    assert pick_groups(labels, 5, 3).size == 5
    assert np.array_equal(pick_groups(np.array([4, 2, 4]), 5, 0), [2, 4])


def test_umap_analysis_before_and_after(tmp_path):
    job = _study(tmp_path)
    out = tmp_path / "emb.npz"
    run_job(analysis("umap")(SETTINGS), job, tmp_path / "t.tsv", {"embeddings": out})
    table = pd.read_csv(tmp_path / "t.tsv", sep="\t")
    assert set(table.epoch) == {0, 3} and set(table.layer) == {"pool"}  # before head_fc1
    sil = table[table.metric == "umap_silhouette"].set_index(["epoch", "probe"])["value"]
    for level in ("sample", "fine", "coarse"):
        assert sil[(3, level)] > 0.5 > 0.1 > sil[(0, level)]
    emb = io.load_npz(out)
    assert emb["coords"].shape == (emb["group"].size, 2)
    # The stored coordinates are the ones scored: recompute the silhouette from the file.
    pick = (emb["point_epoch"] == 3) & (emb["level"] == "fine")
    assert silhouette_score(emb["coords"][pick], emb["group"][pick]) == pytest.approx(
        sil[(3, "fine")]
    )
    # 3 training points per group: 25 augmentations of 3 images, 30 images of 3 fine / coarse
    # classes (coarse: 2 fine classes each, 60).
    counts = pd.Series(emb["level"][emb["point_epoch"] == 0]).value_counts()
    assert counts.to_dict() == {"sample": 75, "fine": 90, "coarse": 180}
    assert set(emb["group_name"][emb["level"] == "coarse"]) == {"c0", "c1", "c2"}


def test_umap_layer_must_be_extracted(tmp_path):
    job = _study(tmp_path)
    with pytest.raises(ValueError, match="umap.layer"):
        analysis("umap")({**SETTINGS, "layer": "layer9"}).run(job)
