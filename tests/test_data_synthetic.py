"""The synthetic datasets: layout, determinism, and that their class structure is real.

The structure tests compare simple hand-made image features, so they say something about the
images themselves rather than about any network: a texture/shape feature must predict the
coarse class well while colour features stay near chance, fine classes of one coarse class
must sit together, and the human set's pairs must be the confusable ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torchvision.ops import roi_align

from ssltrace import io
from ssltrace.data import (
    DATASETS,
    HUMAN_SETS,
    describe,
    prepare_dataset,
    prepare_human,
    synthetic_reference_confusion,
    validate_dataset,
    validate_human,
)
from ssltrace.data.synthetic import human_set, render_fine_class, synthetic_dataset

N_FINE, N_COARSE = 100, 20


@pytest.fixture(scope="module")
def small():
    return synthetic_dataset(seed=0, train_per_class=16, test_per_class=10)


@pytest.fixture(scope="module")
def human():
    return human_set(seed=0, per_class=150)


# ----------------------------------------------------------------------------- features
def _gray(images: np.ndarray) -> np.ndarray:
    g = images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    g -= g.mean(axis=(1, 2), keepdims=True)
    return g / (g.std(axis=(1, 2), keepdims=True) + 1e-6)  # contrast-normalised


_F = np.fft.fftfreq(32)
_RADIUS = np.hypot(*np.meshgrid(_F, _F))
_ANGLE = np.arctan2(*np.meshgrid(_F, _F)[::-1]) % np.pi
_RBIN = np.minimum((_RADIUS / 0.5 * 10).astype(int), 10).ravel()
_ABIN = np.minimum((_ANGLE / np.pi * 8).astype(int), 7).ravel()


def texture_features(images: np.ndarray) -> np.ndarray:
    """Rotation-invariant grayscale features: radial power spectrum, orientation concentration
    (sorted angular power per frequency band) and gradient-magnitude percentiles."""
    g = _gray(images)
    power = (np.abs(np.fft.fft2(g)) ** 2).reshape(len(g), -1)
    feats = [np.log(np.stack([power[:, _RBIN == b].mean(1) for b in range(1, 11)], 1) + 1e-3)]
    for lo, hi in [(1, 3), (3, 5), (5, 8)]:
        band = (_RBIN >= lo) & (_RBIN < hi)
        ang = np.stack([power[:, band & (_ABIN == a)].sum(1) for a in range(8)], 1)
        feats.append(np.sort(ang / (ang.sum(1, keepdims=True) + 1e-9), axis=1))
    grad = np.hypot(np.diff(g, axis=2)[:, :-1], np.diff(g, axis=1)[:, :, :-1])
    feats.append(np.percentile(grad, [10, 25, 50, 75, 90, 99], axis=(1, 2)).T)
    return np.concatenate(feats, axis=1)


def colour_features(images: np.ndarray) -> np.ndarray:
    """Mean and std per channel plus a 4x4x4 joint RGB histogram."""
    x = images.astype(np.float64) / 255
    q = np.minimum(images // 64, 3).astype(int)
    idx = (q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).reshape(len(x), -1)
    hist = np.stack([np.bincount(i, minlength=64) for i in idx]) / idx.shape[1]
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), hist], axis=1)


def _classifier(features, labels):
    """Linear discriminant analysis (closed form, fast) on standardised features."""
    model = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis("lsqr", shrinkage="auto"))
    return model.fit(features, labels)


# ----------------------------------------------------------------------------- layout
def test_layout_matches_the_dataset_contract(small):
    validate_dataset(small)
    assert small["train_images"].shape == (N_FINE * 16, 32, 32, 3)
    assert small["test_images"].shape == (N_FINE * 10, 32, 32, 3)
    assert small["train_images"].dtype == np.uint8
    assert np.array_equal(np.bincount(small["train_fine"]), np.full(N_FINE, 16))
    assert np.array_equal(np.bincount(small["test_coarse"]), np.full(N_COARSE, 50))
    assert np.array_equal(small["fine_to_coarse"], np.arange(N_FINE) // 5)
    assert np.array_equal(small["train_coarse"], small["fine_to_coarse"][small["train_fine"]])
    assert len(set(small["fine_names"])) == N_FINE and len(set(small["coarse_names"])) == 20
    for f, name in enumerate(small["fine_names"]):  # fine names start with their coarse name
        assert name.startswith(small["coarse_names"][small["fine_to_coarse"][f]] + "_")
    for split in ("train", "test"):  # images use the whole range, not a constant
        assert small[f"{split}_images"].std() > 30


def test_deterministic_by_seed_and_independent_of_other_counts():
    a = synthetic_dataset(seed=5, train_per_class=3, test_per_class=2)
    b = synthetic_dataset(seed=5, train_per_class=3, test_per_class=2)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    other = synthetic_dataset(seed=6, train_per_class=3, test_per_class=2)
    assert not np.array_equal(a["train_images"], other["train_images"])
    # test images do not move when the training set grows
    more = synthetic_dataset(seed=5, train_per_class=7, test_per_class=2)
    assert np.array_equal(a["test_images"], more["test_images"])
    # images come in independent chunks of 250: a longer draw starts with the same chunk
    long = render_fine_class(17, 260, seed=1)
    assert np.array_equal(render_fine_class(17, 250, seed=1), long[:250])
    assert not np.array_equal(long[:5], render_fine_class(18, 5, seed=1))


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"train_per_class": 0}, "train_per_class"),
        ({"test_per_class": 2.5}, "test_per_class"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_counts_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match=named):
        synthetic_dataset(**kwargs)


def test_prepare_writes_loadable_files_and_refuses_unknown_options(tmp_path):
    out = tmp_path / "data" / "synthetic.npz"
    prepare_dataset("synthetic", tmp_path / "resources", out, train_per_class=2, test_per_class=1)
    data = io.load_npz(out)  # no pickles needed
    validate_dataset(data)
    assert data["train_images"].shape == (200, 32, 32, 3)
    assert data["fine_names"].dtype.kind == "U"
    with pytest.raises(ValueError, match=r"'bogus'.*accepted: seed, train_per_class"):
        prepare_dataset("synthetic", tmp_path, tmp_path / "x.npz", bogus=1)
    assert not (tmp_path / "x.npz").exists()
    human_out = tmp_path / "human.npz"
    prepare_human("synthetic", tmp_path, human_out, per_class=3)
    validate_human(io.load_npz(human_out))
    with pytest.raises(
        KeyError, match="known: cifar10, cifar100, imagefolder, imagenet, synthetic"
    ):
        prepare_dataset("imagenet21k", tmp_path, tmp_path / "y.npz")


def test_registries_and_describe():
    assert DATASETS.names() == ["cifar10", "cifar100", "imagefolder", "imagenet", "synthetic"]
    assert HUMAN_SETS.names() == ["cifar10h", "synthetic"]
    text = describe()
    assert set(text) == {
        "cifar10",
        "cifar100",
        "imagefolder",
        "imagenet",
        "synthetic",
        "human:cifar10h",
        "human:synthetic",
    }
    assert all(isinstance(v, str) and v and "\n" not in v for v in text.values())


# ----------------------------------------------------------------------------- structure
def test_texture_predicts_coarse_class_and_colour_does_not(small):
    y, yt = small["train_coarse"], small["test_coarse"]
    tex = _classifier(texture_features(small["train_images"]), y)
    col = _classifier(colour_features(small["train_images"]), y)
    tex_acc = tex.score(texture_features(small["test_images"]), yt)
    col_acc = col.score(colour_features(small["test_images"]), yt)
    # chance is 0.05; measured (seeds 0, 1): texture 0.92, colour 0.068-0.074
    assert tex_acc > 0.8, tex_acc
    assert col_acc < 0.15, col_acc
    assert tex_acc > col_acc + 0.6


def test_fine_classes_cluster_within_their_coarse_class(small):
    feats = texture_features(np.concatenate([small["train_images"], small["test_images"]]))
    fine = np.concatenate([small["train_fine"], small["test_fine"]])
    z = StandardScaler().fit_transform(feats)
    means = np.stack([z[fine == f].mean(0) for f in range(N_FINE)])
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    f2c = small["fine_to_coarse"]
    same = (f2c[:, None] == f2c[None]) & ~np.eye(N_FINE, dtype=bool)
    assert dist[same].mean() < 0.5 * dist[f2c[:, None] != f2c[None]].mean()  # measured 0.38
    nearest = np.where(np.eye(N_FINE, dtype=bool), np.inf, dist).argmin(1)
    assert np.mean(f2c[nearest] == f2c) >= 0.8  # measured 0.90; chance 4/99


def test_fine_errors_fall_mostly_within_the_coarse_class(small):
    model = _classifier(texture_features(small["train_images"]), small["train_fine"])
    pred = model.predict(texture_features(small["test_images"]))
    truth = small["test_fine"]
    wrong = pred != truth
    f2c = small["fine_to_coarse"]
    assert 0.2 < 1 - wrong.mean() < 0.9  # measured 0.71: learnable, harder than coarse
    assert np.mean(f2c[pred[wrong]] == f2c[truth[wrong]]) > 0.75  # measured 0.90-0.91; chance 4/99


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def simclr_views(images: np.ndarray, seed: int) -> np.ndarray:
    """SimCLR-style views, batched: random resized crops of 8-12% of the area (aspect 3/4..4/3,
    bilinear), horizontal flips, colour jitter 0.4/0.4/0.4/0.1 (p=0.8), grayscale (p=0.2)."""
    rng = np.random.default_rng(seed)
    n = len(images)
    area = 32 * 32 * rng.uniform(0.08, 0.12, n)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    x0, y0 = rng.uniform(0, 32 - w), rng.uniform(0, 32 - h)
    boxes = torch.tensor(np.stack([np.arange(n), x0, y0, x0 + w, y0 + h], 1), dtype=torch.float32)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = roi_align(x, boxes, output_size=32, aligned=True).permute(0, 2, 3, 1).numpy()
    x = np.where(rng.random((n, 1, 1, 1)) < 0.5, x[:, :, ::-1], x)
    yiq = x @ _YIQ.T
    jitter = rng.random(n) < 0.8
    b, c, s = (np.where(jitter, rng.uniform(0.6, 1.4, n), 1.0) for _ in range(3))
    hue = np.where(jitter, rng.uniform(-0.1, 0.1, n), 0.0) * 2 * np.pi
    luma = yiq[..., 0] * b[:, None, None]
    luma = (luma - luma.mean((1, 2), keepdims=True)) * c[:, None, None] + luma.mean(
        (1, 2), keepdims=True
    )
    cos, sin = np.cos(hue)[:, None, None], np.sin(hue)[:, None, None]
    i = (cos * yiq[..., 1] - sin * yiq[..., 2]) * (s * b)[:, None, None]
    q = (sin * yiq[..., 1] + cos * yiq[..., 2]) * (s * b)[:, None, None]
    gray = rng.random(n) < 0.2
    i, q = np.where(gray[:, None, None], 0, i), np.where(gray[:, None, None], 0, q)
    rgb = np.stack([luma, i, q], -1) @ np.linalg.inv(_YIQ).T
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def test_coarse_structure_survives_small_crops_and_augmentation(small):
    train = simclr_views(small["train_images"], seed=0)
    test = simclr_views(small["test_images"], seed=1)
    assert not np.array_equal(train[:10], small["train_images"][:10])
    model = _classifier(texture_features(train), small["train_coarse"])
    acc = model.score(texture_features(test), small["test_coarse"])
    assert acc > 0.45, acc  # measured 0.60-0.62; chance 0.05


# ----------------------------------------------------------------------------- human set
def test_reference_confusion_is_a_documented_pair_structure():
    ref = synthetic_reference_confusion()
    assert ref.shape == (10, 10)
    assert np.allclose(ref.sum(1), 1) and np.allclose(ref, ref.T)
    partner = np.arange(10) ^ 1
    assert np.allclose(ref[np.arange(10), partner], np.repeat([0.03, 0.06, 0.09, 0.12, 0.15], 2))
    off = ref.copy()
    off[np.arange(10), np.arange(10)] = off[np.arange(10), partner] = 0
    assert np.allclose(off[off > 0], 0.0025) and np.count_nonzero(off) == 80
    assert np.isclose(np.diag(ref).mean(), 0.89)


def test_human_counts_follow_the_reference(human):
    validate_human(human)
    counts, labels = human["human_counts"], human["labels"]
    assert np.array_equal(np.bincount(labels), np.full(10, 150))
    assert counts.min() >= 0 and np.all(counts == np.round(counts))
    people = counts.sum(1)
    assert people.min() >= 50 and 50.5 < people.mean() < 51.5  # 50 + Poisson(1)
    pooled = np.stack([counts[labels == c].sum(0) / counts[labels == c].sum() for c in range(10)])
    # binomial + ambiguity spread of a pooled proportion here is < 0.007; allow ~4 sd
    assert np.abs(pooled - synthetic_reference_confusion()).max() < 0.03
    again = human_set(seed=0, per_class=150)
    assert np.array_equal(again["human_counts"], counts)
    assert np.array_equal(again["images"], human["images"])


def test_human_pairs_are_confusable_in_the_images_and_tied_to_human_answers(human):
    train = human_set(seed=1, per_class=100)
    model = _classifier(texture_features(train["images"]), train["labels"])
    proba = model.predict_proba(texture_features(human["images"]))
    labels = human["labels"]
    pred, wrong = proba.argmax(1), proba.argmax(1) != labels
    assert 0.6 < 1 - wrong.mean() < 0.97
    assert np.mean(pred[wrong] // 2 == labels[wrong] // 2) > 0.8  # measured 0.99-1.0; chance 1/9
    # image level: images people call the partner class more often look more like it
    rows = np.arange(len(labels))
    human_partner = human["human_counts"][rows, labels ^ 1] / human["human_counts"].sum(1)
    rho = spearmanr(proba[rows, labels ^ 1], human_partner).statistic
    assert rho > 0.4, rho  # measured 0.58-0.59
