"""The pretraining set: training images whose fine class is known (split["known_fine"]).

Labels are the position of each image's fine class in `split["known_fine"]`, 0..K-1, the
targets of the supervised baseline (n_classes = K).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ssltrace import io
from ssltrace.training.streaming import FolderTrainingSet, load_folder_training_set


@dataclass(frozen=True)
class TrainingSet:
    images: np.ndarray  # uint8 [N, 32, 32, 3], HWC as in the dataset file
    labels: np.ndarray  # int64 [N], position of the fine class in known_fine
    known_fine: tuple[int, ...]
    depth: np.ndarray | None = None  # float [N, 32, 32] when the dataset has train_depth
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_classes(self) -> int:
        return len(self.known_fine)

    def device_images(self, device: torch.device) -> torch.Tensor:
        """The whole set as uint8 [N, H, W, 3] on `device` (copied once per device)."""
        key = str(device)
        if key not in self._on_device:
            self._on_device.clear()
            self._on_device[key] = torch.from_numpy(self.images).to(device)  # speed: on device
        return self._on_device[key]

    def batches(
        self, order: torch.Tensor, batch_size: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(index, images[index]) of each full batch of `order` (on `device`): index gathers
        from the set on the device, no DataLoader."""
        images = self.device_images(device)
        for step in range(len(order) // batch_size):
            index = order[step * batch_size : (step + 1) * batch_size]
            yield index, images[index]

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


def load_training_set(
    dataset_path: str | Path, split_path: str | Path, loader_workers: int = 0
) -> TrainingSet | FolderTrainingSet:
    """Read the known-class training images of a dataset .npz (ARCHITECTURE.md format); a
    folder dataset's are streamed from disk by `loader_workers` processes (streaming.py)."""
    known = _known_fine(Path(split_path))
    dataset_path = Path(dataset_path)
    if not dataset_path.is_file():
        raise FileNotFoundError(f"dataset file {dataset_path} does not exist")
    if io.load_npz(dataset_path, keys=("kind",), missing_ok=True):  # a folder dataset
        return _folder_set(dataset_path, split_path, known, loader_workers)
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


def _folder_set(dataset_path: Path, split_path, known: list[int], workers: int):
    keys = ("kind", "root", "train_files", "train_bytes", "train_fine", "image_size", "load_size")
    data = io.load_npz(dataset_path, keys=keys)
    fine = data["train_fine"]
    keep = np.isin(fine, known)
    if not keep.any():
        raise ValueError(
            f"{dataset_path} has no training image of the known fine classes {known} "
            f"from {split_path}"
        )
    position = np.zeros(max(known) + 1, dtype=np.int64)
    position[known] = np.arange(len(known))
    return load_folder_training_set(data, known, keep, position[fine[keep]], workers)
