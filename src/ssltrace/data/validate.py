"""Checks of the dataset and human-comparison files against docs/ARCHITECTURE.md."""

from __future__ import annotations

import numpy as np

IMAGE_SHAPE = (32, 32, 3)


class DataFormatError(ValueError):
    """Data contents do not have the expected form; the message names where and what."""


def check_images(images, where: str) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        kind = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise DataFormatError(f"{where}: expected uint8 images [N, 32, 32, 3], got {kind}")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataFormatError(f"{where}: expected images [N, 32, 32, 3], got {images.shape}")


def check_labels(labels, n: int, n_classes: int, where: str) -> None:
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.shape != (n,):
        shape = getattr(labels, "shape", None)
        dtype = getattr(labels, "dtype", type(labels).__name__)
        raise DataFormatError(f"{where}: expected int64 labels [{n}], got {dtype} {shape}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataFormatError(
            f"{where}: labels must lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}"
        )


def check_names(names, n: int, where: str) -> None:
    if not isinstance(names, np.ndarray) or names.dtype.kind != "U" or names.shape != (n,):
        shape = getattr(names, "shape", None)
        raise DataFormatError(f"{where}: expected {n} class names (str array), got {shape}")
    if len(set(names.tolist())) != n:
        raise DataFormatError(f"{where}: class names are not unique")


def validate_dataset(arrays: dict) -> None:
    """Raise DataFormatError unless `arrays` is a valid dataset file (ARCHITECTURE.md): images
    in memory, or (`kind` = "folder") a list of image files under `root`."""
    keys = ("fine_names", "coarse_names", "fine_to_coarse")
    folder = "kind" in arrays
    per_split = ("files", "fine", "coarse") if folder else ("images", "fine", "coarse")
    extra = ("root", "image_size", "load_size") if folder else ()
    missing = [
        k
        for k in (*keys, *extra, *(f"{s}_{k}" for s in ("train", "test") for k in per_split))
        if k not in arrays
    ]
    if missing:
        raise DataFormatError(f"dataset: missing arrays {missing}")
    n_fine, n_coarse = len(arrays["fine_names"]), len(arrays["coarse_names"])
    check_names(arrays["fine_names"], n_fine, "fine_names")
    check_names(arrays["coarse_names"], n_coarse, "coarse_names")
    fine_to_coarse = arrays["fine_to_coarse"]
    check_labels(fine_to_coarse, n_fine, n_coarse, "fine_to_coarse")
    if folder:
        check_folder_keys(arrays)
    for split in ("train", "test"):
        if folder:
            images = arrays[f"{split}_files"]
        else:
            images = arrays[f"{split}_images"]
            check_images(images, f"{split}_images")
        check_labels(arrays[f"{split}_fine"], len(images), n_fine, f"{split}_fine")
        check_labels(arrays[f"{split}_coarse"], len(images), n_coarse, f"{split}_coarse")
        if not np.array_equal(fine_to_coarse[arrays[f"{split}_fine"]], arrays[f"{split}_coarse"]):
            raise DataFormatError(f"{split}_coarse disagrees with fine_to_coarse[{split}_fine]")
        if f"{split}_depth" in arrays:
            check_depth(arrays[f"{split}_depth"], images, f"{split}_depth")


def check_depth(depth, images: np.ndarray, name: str) -> None:
    """Optional per-pixel depth: float [N, H, W] matching the images, finite."""
    expected = tuple(images.shape[:3])
    if not isinstance(depth, np.ndarray) or not np.issubdtype(depth.dtype, np.floating):
        raise DataFormatError(f"{name}: expected a float array [N, H, W], got {type(depth)}")
    if depth.shape != expected:
        raise DataFormatError(f"{name}: expected shape {list(expected)}, got {list(depth.shape)}")
    if not np.isfinite(depth).all():
        raise DataFormatError(f"{name}: holds non-finite values")


def validate_human(arrays: dict) -> None:
    """Raise DataFormatError unless `arrays` is a valid human-comparison file."""
    missing = [k for k in ("images", "labels", "class_names", "human_counts") if k not in arrays]
    if missing:
        raise DataFormatError(f"human set: missing arrays {missing}")
    images, counts = arrays["images"], arrays["human_counts"]
    n_classes = len(arrays["class_names"])
    check_images(images, "images")
    check_names(arrays["class_names"], n_classes, "class_names")
    check_labels(arrays["labels"], len(images), n_classes, "labels")
    if not isinstance(counts, np.ndarray) or counts.dtype != np.float64:
        raise DataFormatError("human_counts: expected a float64 array")
    if counts.shape != (len(images), n_classes):
        raise DataFormatError(
            f"human_counts: expected shape ({len(images)}, {n_classes}), got {counts.shape}"
        )
    if not np.all(np.isfinite(counts)) or counts.min(initial=0) < 0:
        raise DataFormatError("human_counts: counts must be finite and non-negative")
    if len(counts) and counts.sum(axis=1).min() <= 0:
        raise DataFormatError("human_counts: every image needs at least one human answer")


def check_folder_keys(arrays: dict) -> None:
    """The keys of a folder dataset file (`kind` = "folder", ssltrace.data.folder)."""
    if str(np.asarray(arrays["kind"])) != "folder":
        raise DataFormatError(f"kind: expected 'folder', got {arrays['kind']!r}")
    for key in ("image_size", "load_size"):
        value = np.asarray(arrays[key])
        if value.shape != () or value.dtype.kind not in "iu" or int(value) < 1:
            raise DataFormatError(f"{key}: expected a positive integer, got {value!r}")
    if int(arrays["load_size"]) < int(arrays["image_size"]):
        raise DataFormatError("load_size is smaller than image_size")
    for split in ("train", "test"):
        files = arrays[f"{split}_files"]
        if not isinstance(files, np.ndarray) or files.dtype.kind != "U" or files.ndim != 1:
            raise DataFormatError(f"{split}_files: expected a 1-d str array of relative paths")
        bad = [f for f in files.tolist() if f.startswith("/") or ".." in f.split("/")]
        if bad:
            raise DataFormatError(f"{split}_files: paths must be relative to root, got {bad[0]!r}")
        if len(files) == 0:
            raise DataFormatError(f"{split}_files: no images")
