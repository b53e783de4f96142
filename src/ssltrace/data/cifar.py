"""Readers for the official CIFAR-100 and CIFAR-10 python archives.

SECURITY: these archives hold Python pickles (the official distribution format), and unpickling
can run code. Callers must pass only archives whose md5 has been verified against the official
checksum (`ssltrace.data.datasets` does, through `download.ensure`). As a second guard, the
unpickler below resolves only the few numpy names that the official pickles reference.
"""

from __future__ import annotations

import codecs
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ssltrace.data.validate import DataFormatError

# The archive's meta file lists these in this order; configs are checked against them offline.
CIFAR100_COARSE_NAMES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's array-unpickling helper
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def read_members(archive: Path, members: list[str]) -> dict[str, dict]:
    """Unpickle the named members of a (checksum-verified) CIFAR .tar.gz into dicts."""
    out = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = set(tar.getnames())
            for member in members:
                if member not in names:
                    raise DataFormatError(f"{archive}: member {member} is missing")
                fh = tar.extractfile(member)
                if fh is None:
                    raise DataFormatError(f"{archive}: member {member} is not a regular file")
                # encoding='latin1': the pickles were written by Python 2 (str keys and numpy
                # buffers as byte strings); latin1 maps those bytes one-to-one.
                obj = _CifarUnpickler(fh, encoding="latin1").load()
                out[member] = _str_keys(obj, archive, member)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataFormatError(
            f"{archive}: cannot read the archive (truncated or not a CIFAR .tar.gz): {exc}"
        ) from exc
    except pickle.UnpicklingError as exc:
        raise DataFormatError(f"{archive}: a member is not a CIFAR pickle: {exc}") from exc
    return out


def _str_keys(obj, archive: Path, member: str) -> dict:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{archive}: {member} holds a {type(obj).__name__}, not a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(batch: dict, key: str, archive: Path, member: str):
    if key not in batch:
        raise DataFormatError(f"{archive}: {member} has no '{key}' entry (has {sorted(batch)})")
    return batch[key]


def images_hwc(batch: dict, archive: Path, member: str) -> np.ndarray:
    """The 'data' rows (3072 bytes: 1024 red, 1024 green, 1024 blue, row-major) as [N,32,32,3]."""
    data = _field(batch, "data", archive, member)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataFormatError(f"{archive}: {member} 'data' is not a 2-d uint8 array")
    if data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(
            f"{archive}: {member} 'data' rows have {data.shape[1]} values, expected 3072"
        )
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def labels(batch: dict, key: str, n: int, n_classes: int, archive: Path, member: str):
    values = _field(batch, key, archive, member)
    try:
        out = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{archive}: {member} '{key}' is not a list of integers") from exc
    if out.shape != (n,):
        raise DataFormatError(f"{archive}: {member} '{key}' has shape {out.shape}, expected ({n},)")
    if n and (out.min() < 0 or out.max() >= n_classes):
        raise DataFormatError(
            f"{archive}: {member} '{key}' has labels {out.min()}..{out.max()}, "
            f"expected 0..{n_classes - 1}"
        )
    return out


def names(batch: dict, key: str, n: int, archive: Path, member: str) -> np.ndarray:
    values = _field(batch, key, archive, member)
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise DataFormatError(f"{archive}: {member} '{key}' must list {n} names")
    return np.array([v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values])


def read_cifar100(archive: Path) -> dict[str, np.ndarray]:
    """CIFAR-100 in the dataset-file layout of docs/ARCHITECTURE.md (fine and coarse labels)."""
    root = "cifar-100-python"
    members = read_members(archive, [f"{root}/train", f"{root}/test", f"{root}/meta"])
    meta = members[f"{root}/meta"]
    fine_names = names(meta, "fine_label_names", 100, archive, f"{root}/meta")
    coarse_names = names(meta, "coarse_label_names", 20, archive, f"{root}/meta")
    out = {"fine_names": fine_names, "coarse_names": coarse_names}
    for split in ("train", "test"):
        member = f"{root}/{split}"
        batch = members[member]
        images = images_hwc(batch, archive, member)
        out[f"{split}_images"] = images
        out[f"{split}_fine"] = labels(batch, "fine_labels", len(images), 100, archive, member)
        out[f"{split}_coarse"] = labels(batch, "coarse_labels", len(images), 20, archive, member)
    out["fine_to_coarse"] = _fine_to_coarse(out, archive)
    return out


def _fine_to_coarse(out: dict, archive: Path) -> np.ndarray:
    """Each fine class's coarse class, from the (fine, coarse) label pairs of both splits."""
    fine = np.concatenate([out["train_fine"], out["test_fine"]])
    coarse = np.concatenate([out["train_coarse"], out["test_coarse"]])
    mapping = np.full(len(out["fine_names"]), -1, np.int64)
    for f in range(len(mapping)):
        found = np.unique(coarse[fine == f])
        if len(found) != 1:
            what = "never appears" if len(found) == 0 else f"has coarse labels {found.tolist()}"
            raise DataFormatError(
                f"{archive}: fine class {f} ({out['fine_names'][f]}) {what}; "
                "expected exactly one coarse class"
            )
        mapping[f] = found[0]
    return mapping


def read_cifar10_test(archive: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 test images [10000,32,32,3] in the original order, labels and class names."""
    root = "cifar-10-batches-py"
    members = read_members(archive, [f"{root}/test_batch", f"{root}/batches.meta"])
    class_names = names(
        members[f"{root}/batches.meta"], "label_names", 10, archive, f"{root}/batches.meta"
    )
    batch = members[f"{root}/test_batch"]
    images = images_hwc(batch, archive, f"{root}/test_batch")
    return (
        images,
        labels(batch, "labels", len(images), 10, archive, f"{root}/test_batch"),
        class_names,
    )


# CIFAR-10's classes in the order of its batches.meta (checked against the archive on reading).
CIFAR10_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def read_cifar10(archive: Path) -> dict[str, np.ndarray]:
    """CIFAR-10 as a pretraining dataset (seed 004, Appendix B.2) in the dataset-file layout.

    CIFAR-10 has no superclasses: each class is its own coarse class (`fine_to_coarse` is the
    identity), so the coarse level of an analysis repeats the fine one.
    """
    root = "cifar-10-batches-py"
    train = [f"{root}/data_batch_{i}" for i in range(1, 6)]
    members = read_members(archive, [*train, f"{root}/test_batch", f"{root}/batches.meta"])
    meta = f"{root}/batches.meta"
    class_names = names(members[meta], "label_names", 10, archive, meta)
    if tuple(class_names.tolist()) != CIFAR10_NAMES:
        raise DataFormatError(f"{archive}: class names {class_names.tolist()} are not CIFAR-10's")
    out = {"fine_names": class_names, "coarse_names": class_names.copy()}
    for split, batches in (("train", train), ("test", [f"{root}/test_batch"])):
        images, fine = [], []
        for member in batches:
            batch = members[member]
            images.append(images_hwc(batch, archive, member))
            fine.append(labels(batch, "labels", len(images[-1]), 10, archive, member))
        out[f"{split}_images"] = np.concatenate(images)
        out[f"{split}_fine"] = np.concatenate(fine)
        out[f"{split}_coarse"] = out[f"{split}_fine"].copy()
    out["fine_to_coarse"] = np.arange(10, dtype=np.int64)
    return out
