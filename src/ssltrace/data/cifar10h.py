"""CIFAR-10H (Peterson et al., 2019): human answer counts for the CIFAR-10 test images.

`cifar10h-counts.npy` is a plain [10000, 10] integer array (no pickle): row i counts how many
of ~50 annotators chose each class for CIFAR-10 test image i, in the original test order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace.data.cifar import read_cifar10_test
from ssltrace.data.validate import DataFormatError

# Humans agree with the CIFAR-10 label on ~95% of images (majority vote); rows in another
# order would agree on ~10%. Anything below this means the files do not belong together.
MIN_MAJORITY_AGREEMENT = 0.5


def read_counts(path: Path, n_images: int, n_classes: int = 10) -> np.ndarray:
    """The counts as float64 [n_images, n_classes]; raises DataFormatError naming the file."""
    try:
        counts = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc
    if counts.shape != (n_images, n_classes):
        raise DataFormatError(
            f"{path}: expected counts of shape ({n_images}, {n_classes}) (one row per CIFAR-10 "
            f"test image), got {counts.shape}"
        )
    if counts.dtype.kind not in "iuf":
        raise DataFormatError(f"{path}: expected numeric counts, got dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if not np.all(np.isfinite(counts)) or counts.min() < 0 or np.any(counts != np.round(counts)):
        raise DataFormatError(f"{path}: counts must be non-negative whole numbers")
    if counts.sum(axis=1).min() <= 0:
        raise DataFormatError(f"{path}: some image has no human answers")
    return counts


def cifar10h_human(archive: Path, counts_path: Path) -> dict[str, np.ndarray]:
    """The human-comparison arrays from a verified CIFAR-10 archive and CIFAR-10H counts."""
    images, labels, class_names = read_cifar10_test(archive)
    counts = read_counts(counts_path, len(images), len(class_names))
    agreement = float(np.mean(counts.argmax(axis=1) == labels))
    if agreement < MIN_MAJORITY_AGREEMENT:
        raise DataFormatError(
            f"{counts_path}: the human majority agrees with the CIFAR-10 test labels of "
            f"{archive} on only {agreement:.0%} of images; the rows must be in CIFAR-10 "
            "test-set order"
        )
    return {"images": images, "labels": labels, "class_names": class_names, "human_counts": counts}
