"""Training images streamed from disk, for folder datasets (ImageNet does not fit in memory).

`FolderTrainingSet` is the folder counterpart of `TrainingSet` (ssltrace.training.data): the
engine asks for `device_images(device)` (what the methods' whole-set passes index:
DeepCluster's features, colorization's colour bins; decoded at image_size) and for
`batches(order, batch_size, device)`, the (index, uint8 images [B, S, S, 3] on the device)
of each full batch of `order`.

Here a batch is decoded by a torch DataLoader worker process (`train.loader_workers`; 0 =
in the trainer's process): each worker reads and decodes a whole batch of files with
torchvision.io (centre square resized to load_size), so the main process only
copies finished uint8 batches to the device (from pinned memory on CUDA). The random resized
crop, flips and colour augmentation stay batched on the device (ssltrace.augment), as for
CIFAR. Workers decode only; every random draw still comes from the engine's seeded
generators, so a run's numbers do not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ssltrace.data.folder import FolderArray, decode_many, decode_square


def _torch_threads(_worker: int) -> None:
    torch.set_num_threads(1)  # one decoding thread per worker process; workers add up


def _start_worker(trainer: int, worker: int) -> None:
    """DataLoader worker_init_fn: one decoding thread, and an end with the trainer."""
    _torch_threads(worker)
    threading.Thread(target=_exit_with, args=(trainer,), daemon=True).start()


def _exit_with(trainer: int) -> None:
    """End this worker process once process `trainer` has ended.

    The workers are forked by a fork server, not by the trainer, so torch's own check (is my
    parent alive?) watches the fork server, and the fork server waits for its children to let
    go of its pipe: a trainer killed hard (SIGKILL, or the SIGTERM of its parent-death
    signal when torchrun is killed) left worker, fork server and resource tracker alive as
    orphans for good. Once the workers end, the other two see their pipes close and end."""
    try:
        select.select([os.pidfd_open(trainer)], [], [])  # a pidfd turns readable at the end
    except (AttributeError, OSError):  # no pidfd (not Linux, Linux < 5.3): poll
        while _alive(trainer):
            time.sleep(1.0)
    os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Batches(torch.utils.data.Dataset):
    """Item i: (index int64 [B], uint8 [B, S, S, 3]) of the i-th full batch of `order`."""

    def __init__(self, root: Path, files: np.ndarray, side: int, order: torch.Tensor, batch: int):
        self.root, self.files, self.side = root, files, side
        self.order, self.batch = order, batch

    def __len__(self) -> int:
        return len(self.order) // self.batch

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.order[step * self.batch : (step + 1) * self.batch]
        images = [decode_square(self.root / str(self.files[i]), self.side) for i in index.tolist()]
        return index, torch.stack(images)


class FolderImages:
    """A folder dataset's training images at load_size, decoded on demand: `len`, and
    indexing (a slice or an int64 tensor) -> uint8 [B, S, S, 3] on `device`, decoded in
    threads (synchronous: for whole-set passes; training batches come from `batches`)."""

    def __init__(self, root: Path, files: np.ndarray, side: int, device: torch.device):
        self.root, self.files, self.side = Path(root), files, side
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.side, self.side, 3)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            picked = self.files[index]
        else:
            picked = self.files[torch.as_tensor(index).cpu().numpy()]
        return torch.from_numpy(decode_many(self.root, picked, self.side)).to(self.device)


@dataclass
class FolderTrainingSet:
    """The known-class training images of a folder dataset file, streamed from `root`."""

    root: Path
    files: np.ndarray  # str [N], relative to root
    file_bytes: np.ndarray  # int64 [N]
    labels: np.ndarray  # int64 [N], position of the fine class in known_fine
    known_fine: tuple[int, ...]
    image_size: int
    load_size: int
    workers: int = 0  # DataLoader worker processes (train.loader_workers)
    depth: None = None  # folder datasets carry no depth maps
    _device_images: dict = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.known_fine)

    @property
    def images(self) -> FolderArray:
        """The images at load_size, lazily (len and indexing as an array's)."""
        return FolderArray(self.root, self.files, self.load_size)

    def digest(self, with_depth: bool = False) -> str:
        """sha256 of the file list, file sizes in bytes, labels, class list, image_size and
        load_size. Pixel contents are not hashed (reading 140 GB for a fingerprint would take
        longer than an epoch): a file replaced by another of the same name and size is not
        noticed."""
        h = hashlib.sha256()
        h.update(json.dumps([list(self.known_fine), self.image_size, self.load_size]).encode())
        h.update("\n".join(self.files.tolist()).encode())
        h.update(np.ascontiguousarray(self.file_bytes, dtype=np.int64).data)
        h.update(np.ascontiguousarray(self.labels).data)
        return h.hexdigest()

    def device_images(self, device: torch.device) -> FolderImages:
        """The set for whole-set passes (DeepCluster, colorization), at image_size: they feed
        images unaugmented (`Augmenter.plain`, no resize), so at the network's input side."""
        return FolderImages(self.root, self.files, self.image_size, device)

    def batches(
        self, order: torch.Tensor, batch_size: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(index on `device`, uint8 [B, S, S, 3] on `device`) of each full batch of `order`,
        in order, decoded by `workers` DataLoader processes a few batches ahead."""
        device = torch.device(device)
        source = _Batches(self.root, self.files, self.load_size, order.cpu(), batch_size)
        loader = torch.utils.data.DataLoader(
            source,
            batch_size=None,  # an item is already a batch
            shuffle=False,
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            worker_init_fn=partial(_start_worker, os.getpid()) if self.workers else None,
            prefetch_factor=2 if self.workers else None,
            # Workers forked from a trainer with running threads (gloo, the previous epoch's
            # queue feeders) deadlocked in the child's fork handler (seen under torchrun):
            # a fork server forks them from a clean single-threaded process instead.
            multiprocessing_context="forkserver" if self.workers else None,
        )
        for index, images in loader:
            yield (
                index.to(device, non_blocking=True),
                images.to(device, non_blocking=True),
            )


def load_folder_training_set(
    data: dict, known: list[int], keep: np.ndarray, labels: np.ndarray, workers: int
) -> FolderTrainingSet:
    return FolderTrainingSet(
        root=Path(str(data["root"])),
        files=data["train_files"][keep],
        file_bytes=data["train_bytes"][keep],
        labels=labels,
        known_fine=tuple(known),
        image_size=int(data["image_size"]),
        load_size=int(data["load_size"]),
        workers=workers,
    )
