"""Clustering geometry of a representation at several label levels (seed paper 004).

Seed 004 (Ben-Shaul et al. 2023, "Reverse engineering self-supervised learning") asks how
well a layer's features cluster by three kinds of label: fine classes, coarse classes, and
the *sample level* — each of N source images is its own class, with K augmentations of it for
training and K' fresh augmentations for testing (their §3: N=500, K=100, K'=20). Per feature
matrix it reports:

- nearest-class-centre (NCC) accuracy on train and test samples, with centres from train;
- linear-probe accuracy (`ssltrace.analysis.probes`);
- the class-distance normalised variance (CDNV) of Galanti et al. 2022,
  CDNV = mean over class pairs i < j of (Var_i + Var_j) / (2 ||μ_i − μ_j||²), where
  Var_c = mean over class-c samples of ||x − μ_c||² (the total variance: trace of the class
  covariance with 1/n_c normalisation). Small CDNV = tight, well-separated clusters;
- its two ingredients: the within-class variance (mean over classes of Var_c) and the mean
  squared distance between class means (mean over pairs i < j of ||μ_i − μ_j||²).

Statistics are accumulated in float64 with torch on `device` ('auto' = CUDA when present).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ssltrace.analysis import ANALYSES
from ssltrace.analysis.base import Activations, PerEpochAnalysis, layer_names
from ssltrace.analysis.probes import (
    PROBE_KINDS,
    check_features,
    check_labels,
    encode_labels,
    linear_probe,
    resolve_device,
)

AugmentFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def sample_level_sets(
    images_uint8: np.ndarray | torch.Tensor,
    n_images: int = 500,
    k_train: int = 100,
    k_test: int = 20,
    augment_fn: AugmentFn | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    batch_size: int = 4096,
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, np.ndarray]:
    """Augmented train and test sets for the sample-level classification task.

    Args:
        images_uint8: uint8 [M, 32, 32, 3] candidate source images (HWC, as stored).
        augment_fn: required; callable (uint8 [B, 32, 32, 3] tensor on `device`, torch.Generator on
            `device`) -> float [B, 3, H, W], e.g. an `ssltrace.augment.Augmenter`; it must
            draw all its randomness from the generator so the sets are reproducible.
        n_images: N source images, drawn without replacement (seeded).
        k_train, k_test: augmentations per source image for training (K) and testing (K').
            The test augmentations are fresh draws from the same generator stream.
        seed: seeds both the choice of source images and the augmentation generator.
        device: where images are augmented ('auto' = CUDA when present); the returned image
            tensors stay there, ready for feature extraction.
        batch_size: images per `augment_fn` call. The draws depend on it (the generator is
            consumed batch by batch), so keep it fixed within a study.

    Returns:
        (train_images float [N*K, 3, 32, 32], train_labels int64 [N*K],
         test_images float [N*K', 3, 32, 32], test_labels int64 [N*K']) — images as torch
        tensors on `device`, labels as numpy arrays holding each sample's source-image index
        into `images_uint8`, image-major (all K views of one image are adjacent).
    """
    images = _check_images(images_uint8)
    for name, value in (("n_images", n_images), ("k_train", k_train), ("k_test", k_test)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if n_images > images.shape[0]:
        raise ValueError(f"n_images={n_images} exceeds the {images.shape[0]} images given")
    if not callable(augment_fn):
        raise TypeError(f"augment_fn must be callable, got {type(augment_fn).__name__}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    dev = resolve_device(device)
    sources = np.sort(np.random.default_rng(seed).choice(images.shape[0], n_images, False))
    source_images = images[torch.from_numpy(sources)].to(dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    train = _augment_repeated(source_images, k_train, augment_fn, generator, batch_size)
    test = _augment_repeated(source_images, k_test, augment_fn, generator, batch_size)
    return train, np.repeat(sources, k_train), test, np.repeat(sources, k_test)


def ncc_accuracy(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    device: str | torch.device = "auto",
) -> tuple[float, float]:
    """Nearest-class-centre accuracy (train, test), centres = class means of the train set.

    Train accuracy classifies the training samples themselves by the same centres. Every
    test label must be a training class. Distances are Euclidean; ties go to the class
    with the smaller label.
    """
    train_x = check_features(train_feats, "train_feats", np.float64)
    test_x = check_features(test_feats, "test_feats", np.float64)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_feats and test_feats must have the same number of features: "
            f"{train_x.shape[1]} vs {test_x.shape[1]}"
        )
    train_t, test_t, n_classes = encode_labels(train_labels, test_labels, train_x, test_x)
    dev = resolve_device(device)
    x = torch.from_numpy(train_x).to(dev, torch.float64)
    means, _ = _class_moments(x, torch.from_numpy(train_t).to(dev), n_classes)
    train_acc = _ncc_hits(x, train_t, means)
    test_acc = _ncc_hits(torch.from_numpy(test_x).to(dev, torch.float64), test_t, means)
    return train_acc, test_acc


def within_class_variance(
    feats: np.ndarray, labels: np.ndarray, device: str | torch.device = "auto"
) -> float:
    """Mean over classes of Var_c = mean_{x in c} ||x − μ_c||²."""
    _, variances = _moments(feats, labels, device)
    return float(variances.mean())


def mean_class_distance(
    feats: np.ndarray, labels: np.ndarray, device: str | torch.device = "auto"
) -> float:
    """Mean over class pairs i < j of ||μ_i − μ_j||²."""
    means, _ = _moments(feats, labels, device)
    return float(_pair_values(_squared_distances(means)).mean())


def cdnv(feats: np.ndarray, labels: np.ndarray, device: str | torch.device = "auto") -> float:
    """Class-distance normalised variance (Galanti et al. 2022), averaged over class pairs.

    Returns inf when two classes share a mean but vary (a collapsed representation), and
    NaN when two classes are the same single point.
    """
    means, variances = _moments(feats, labels, device)
    return _cdnv_from_moments(means, variances)


def geometry_metrics(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    probes: Sequence[str] = ("svm", "logistic"),
    device: str | torch.device = "auto",
    **probe_kwargs,
) -> dict[str, float]:
    """All clustering-geometry measures of one feature matrix at one label level.

    Keys: `ncc_train`, `ncc_test`, `linear_<kind>` per requested probe (`linear_svm`,
    `linear_logistic`), `ncc_linear_ratio` = ncc_test / linear_svm (present when 'svm' is
    requested: the share of the linearly decodable accuracy that plain class centres already
    achieve — 1 means the classes are as separable by centres as by any linear read-out),
    and `cdnv`, `within_var`, `between_dist` computed on the training set.
    `probe_kwargs` go to `probes.linear_probe` (C, max_iter, backend, standardise, seed).
    """
    unknown = [p for p in probes if p not in PROBE_KINDS]
    if unknown or isinstance(probes, str):
        raise ValueError(f"probes must be a sequence drawn from {PROBE_KINDS}, got {probes!r}")
    train_x = check_features(train_x, "train_x", np.float64)
    test_x = check_features(test_x, "test_x", np.float64)
    train_y = check_labels(train_y, "train_y", train_x.shape[0])
    test_y = check_labels(test_y, "test_y", test_x.shape[0])
    dev = resolve_device(device)

    out: dict[str, float] = {}
    out["ncc_train"], out["ncc_test"] = ncc_accuracy(train_x, train_y, test_x, test_y, dev)
    for kind in probes:
        out[f"linear_{kind}"] = linear_probe(
            train_x, train_y, test_x, test_y, kind=kind, device=dev, **probe_kwargs
        )
    if "svm" in probes:
        svm = out["linear_svm"]
        out["ncc_linear_ratio"] = out["ncc_test"] / svm if svm > 0 else float("nan")
    means, variances = _moments(train_x, train_y, dev)
    out["cdnv"] = _cdnv_from_moments(means, variances)
    out["within_var"] = float(variances.mean())
    out["between_dist"] = float(_pair_values(_squared_distances(means)).mean())
    return out


def _moments(feats, labels, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means [C, d] and total variances [C] (float64), checking there are >= 2 classes."""
    x = check_features(feats, "feats", np.float64)
    labels = check_labels(labels, "labels", x.shape[0])
    _, codes = np.unique(labels, return_inverse=True)
    n_classes = int(codes.max()) + 1
    if n_classes < 2:
        raise ValueError("labels must contain at least two classes")
    dev = resolve_device(device)
    x64 = torch.from_numpy(x).to(dev, torch.float64)
    return _class_moments(x64, torch.from_numpy(codes.astype(np.int64)).to(dev), n_classes)


def _class_moments(
    x: torch.Tensor, codes: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.bincount(codes, minlength=n_classes).to(x.dtype)
    means = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, device=x.device)
    means.index_add_(0, codes, x)
    means /= counts[:, None]
    # Deviation from the class mean, not E||x||² − ||μ||², which cancels badly for
    # tight clusters far from the origin.
    sq_dev = (x - means[codes]).pow(2).sum(dim=1)
    variances = torch.zeros(n_classes, dtype=x.dtype, device=x.device)
    variances.index_add_(0, codes, sq_dev)
    return means, variances / counts


def _squared_distances(means: torch.Tensor) -> torch.Tensor:
    if means.shape[0] <= 256:
        return (means[:, None, :] - means[None, :, :]).pow(2).sum(dim=-1)
    # Many classes (sample level): the Gram form avoids a [C, C, d] intermediate; in float64
    # its cancellation error is far below any distance between distinct class means.
    sq = means.pow(2).sum(dim=1)
    return torch.clamp(sq[:, None] + sq[None, :] - 2.0 * means @ means.T, min=0.0)


def _pair_values(matrix: torch.Tensor) -> torch.Tensor:
    i, j = torch.triu_indices(matrix.shape[0], matrix.shape[0], offset=1, device=matrix.device)
    return matrix[i, j]


def _cdnv_from_moments(means: torch.Tensor, variances: torch.Tensor) -> float:
    spread = _pair_values(variances[:, None] + variances[None, :])
    return float((spread / (2.0 * _pair_values(_squared_distances(means)))).mean())


def _ncc_hits(x: torch.Tensor, targets: np.ndarray, means: torch.Tensor) -> float:
    # argmin_c ||x − μ_c||² = argmin_c (||μ_c||² − 2 x·μ_c); ||x||² is the same for all c.
    bias = means.pow(2).sum(dim=1)
    pred = torch.cat([(bias - 2.0 * chunk @ means.T).argmin(dim=1) for chunk in x.split(8192)])
    return float(np.mean(pred.cpu().numpy() == targets))


def _check_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(
            f"images_uint8 must be uint8 [M, H, W, 3] (HWC), got {tensor.dtype} "
            f"{tuple(tensor.shape)}"
        )
    return tensor


def _augment_repeated(
    images: torch.Tensor, k: int, augment_fn: AugmentFn, generator: torch.Generator, batch: int
) -> torch.Tensor:
    views = []
    for chunk in images.repeat_interleave(k, dim=0).split(batch):
        view = augment_fn(chunk, generator)
        expected = (chunk.shape[0], 3)
        if not isinstance(view, torch.Tensor) or view.ndim != 4 or view.shape[:2] != expected:
            raise ValueError(
                f"augment_fn must return a tensor of shape ({chunk.shape[0]}, 3, H, W), got "
                f"{getattr(view, 'shape', type(view).__name__)}"
            )
        if not view.is_floating_point():
            raise ValueError(f"augment_fn must return a float tensor, got {view.dtype}")
        views.append(view)
    return torch.cat(views)


# Label levels of each activation role: the known-class probe carries fine and coarse labels,
# the sample probe's labels are its source images.
LEVELS = {"known": ("fine", "coarse"), "sample": ("sample",)}


@ANALYSES.register("geometry")
class Geometry(PerEpochAnalysis):
    """Clustering geometry (seed 004) per epoch, layer and label level (probe column = level).

    Fine and coarse levels use the known-class probe set's train/test parts (`part` 0/1);
    the sample level uses N source images x K training and K' test augmentations.
    """

    name = "geometry"
    summary = (
        "NCC and linear-probe accuracy, CDNV, within/between class spread at fine, coarse and "
        "sample level (seed 004)"
    )
    inputs = {"known": Activations("known"), "sample": Activations("sample")}
    sections = ("geometry",)
    resources = {"mem_mb": 16000, "runtime": 120, "gpu": 1}

    def roles(self):
        return [role for role, levels in LEVELS.items() if self._levels(role)]

    def _levels(self, role: str) -> list[str]:
        return [level for level in self.settings["levels"] if level in LEVELS[role]]

    def cache_settings(self):
        return {"levels": self.settings["levels"], "probes": self.settings["probes"]}

    def epoch(self, role, acts):
        train, test = acts["part"] == 0, acts["part"] == 1
        rows = []
        for level in self._levels(role):
            labels = acts["coarse"] if level == "coarse" else acts["labels"]
            for layer in layer_names(acts):
                x = acts[layer]
                found = geometry_metrics(
                    x[train],
                    labels[train],
                    x[test],
                    labels[test],
                    probes=self.settings["probes"],
                    device=self.settings.get("device", "auto"),
                )
                rows += [(layer, level, metric, value) for metric, value in found.items()]
        return rows, {}
