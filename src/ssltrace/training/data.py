"""The pretraining set: training images whose fine class is known (split["known_fine"]).

Labels are the position of each image's fine class in `split["known_fine"]`, 0..K-1, the
targets of the supervised baseline (n_classes = K).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssltrace import io


@dataclass(frozen=True)
class TrainingSet:
    images: np.ndarray  # uint8 [N, 32, 32, 3], HWC as in the dataset file
    labels: np.ndarray  # int64 [N], position of the fine class in known_fine
    known_fine: tuple[int, ...]
    depth: np.ndarray | None = None  # float [N, 32, 32] when the dataset has train_depth

    @property
    def n_classes(self) -> int:
        return len(self.known_fine)

    def digest(self, with_depth: bool = False) -> str:
        """sha256 of the images, labels and class list: names the data in the run fingerprint
        (and of the depth maps for a method that trains on them; other runs' digests are
        those of a dataset without depth)."""
        h = hashlib.sha256()
        h.update(json.dumps(list(self.known_fine)).encode())
        h.update(np.ascontiguousarray(self.labels).data)
        h.update(np.ascontiguousarray(self.images).data)
        if with_depth and self.depth is not None:
            h.update(np.ascontiguousarray(self.depth).data)
        return h.hexdigest()


def load_training_set(dataset_path: str | Path, split_path: str | Path) -> TrainingSet:
    """Read the known-class training images of a dataset .npz (ARCHITECTURE.md format)."""
    known = _known_fine(Path(split_path))
    dataset_path = Path(dataset_path)
    if not dataset_path.is_file():
        raise FileNotFoundError(f"dataset file {dataset_path} does not exist")
    # Only the training arrays are read, not the test images.
    data = io.load_npz(dataset_path, keys=("train_images", "train_fine"))
    depth = io.load_npz(dataset_path, keys=("train_depth",), missing_ok=True).get("train_depth")
    fine = data["train_fine"]
    keep = np.isin(fine, known)
    images = data["train_images"][keep] if keep.any() else data["train_images"][:0]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"{dataset_path}: train_images must be uint8 [N, H, W, 3], got "
            f"{images.dtype} {list(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(
            f"{dataset_path} has no training image of the known fine classes {known} "
            f"from {split_path}"
        )
    position = np.zeros(max(known) + 1, dtype=np.int64)
    position[known] = np.arange(len(known))
    labels = position[fine[keep]]
    if depth is not None:
        depth = depth[keep]
    return TrainingSet(images, labels, tuple(known), depth)


def _known_fine(split_path: Path) -> list[int]:
    if not split_path.is_file():
        raise FileNotFoundError(f"split file {split_path} does not exist")
    split = json.loads(split_path.read_text())
    known = split.get("known_fine") if isinstance(split, dict) else None
    if (
        not isinstance(known, list)
        or not known
        or not all(isinstance(c, int) and c >= 0 for c in known)
        or len(set(known)) != len(known)
    ):
        raise ValueError(
            f"{split_path}: 'known_fine' must be a non-empty list of distinct class indices, "
            f"got {known!r}"
        )
    return known
