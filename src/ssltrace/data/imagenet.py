"""ImageNet (ILSVRC 2012) from the user's own archives, into torchvision.datasets.ImageNet's
layout (<data_dir>/imagenet/train/<wnid>/*.JPEG, <data_dir>/imagenet/val/<wnid>/*.JPEG), then
read as an image folder (`ssltrace.data.folder`).

The three archives are never downloaded (ImageNet needs a login at image-net.org): they are
checked against torchvision's md5s (`torchvision.datasets.imagenet.ARCHIVE_META`) by
`download.verify`, whose error says where to place them.

torchvision stores the devkit's class metadata in `meta.bin` with torch.save and reads it with
torch.load with weights_only=True. We neither write nor read meta.bin: the devkit's
`data/meta.mat` (a MATLAB file, read by scipy.io.loadmat: no pickles) and the validation
ground truth are parsed here, and the archives are extracted with tarfile's "data" filter
(no absolute paths, links out of the folder or device files).
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np

from ssltrace.data.download import RemoteFile
from ssltrace.data.folder import folder_arrays, settings
from ssltrace.data.validate import DataFormatError

log = logging.getLogger(__name__)

_PLACE = (
    "ImageNet cannot be downloaded automatically: log in at "
    "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php, download the file, and "
    "copy it into data_dir"
)
TRAIN_ARCHIVE = RemoteFile(
    "ILSVRC2012_img_train.tar",
    "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php",
    "1d675b47d978889d74fa0da5fadfb00e",
    how=_PLACE,
)
VAL_ARCHIVE = RemoteFile(
    "ILSVRC2012_img_val.tar",
    "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php",
    "29b22e2961454d5413ddabcf34fc5622",
    how=_PLACE,
)
DEVKIT_ARCHIVE = RemoteFile(
    "ILSVRC2012_devkit_t12.tar.gz",
    "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php",
    "fa75699e90414af021442c21a62c3abf",
    how=_PLACE,
)
ARCHIVES = (TRAIN_ARCHIVE, VAL_ARCHIVE, DEVKIT_ARCHIVE)
N_CLASSES = 1000
TRAIN_MIN_PER_CLASS = 732  # the smallest ILSVRC 2012 training class
TRAIN_IMAGES = 1_281_167  # every ILSVRC 2012 training image (732..1300 per class)
VAL_PER_CLASS = 50
FOLDER = "imagenet"
DONE = ".ssltrace_extracted"  # + _train / _val: that split is completely extracted


def read_devkit(archive: Path) -> tuple[list[str], list[int]]:
    """(wnids ordered by ILSVRC2012_ID 1..1000, validation ground truth as those IDs)."""
    import scipy.io

    prefix = "ILSVRC2012_devkit_t12/data/"
    with tarfile.open(archive, "r:gz") as tar:
        meta = scipy.io.loadmat(
            io.BytesIO(_member(tar, prefix + "meta.mat", archive)), squeeze_me=True
        )["synsets"]
        truth = _member(tar, prefix + "ILSVRC2012_validation_ground_truth.txt", archive)
    leaves = sorted(
        (int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in meta if int(s["num_children"]) == 0
    )
    if [i for i, _ in leaves] != list(range(1, len(leaves) + 1)):
        raise DataFormatError(f"{archive}: meta.mat leaf synset IDs are not 1..{len(leaves)}")
    return [w for _, w in leaves], [int(x) for x in truth.decode().split()]


def _member(tar: tarfile.TarFile, name: str, archive: Path) -> bytes:
    try:
        fh = tar.extractfile(name)
    except KeyError:
        fh = None
    if fh is None:
        raise DataFormatError(f"{archive}: member {name} is missing")
    return fh.read()


def extract_train(archive: Path, target: Path) -> None:
    """The training tar holds one tar per class (<wnid>.tar): each into target/<wnid>/."""
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile() or not member.name.endswith(".tar"):
                continue
            wnid = Path(member.name).stem
            with tarfile.open(fileobj=outer.extractfile(member)) as inner:
                inner.extractall(target / wnid, filter="data")


def extract_val(archive: Path, target: Path, wnids: list[str], truth: list[int]) -> None:
    """The validation tar is flat (ILSVRC2012_val_00000001.JPEG, ...); the i-th image (sorted)
    has ground-truth ID truth[i]: moved into target/<wnid>/ as torchvision does."""
    staging = target.with_name(target.name + ".staging")
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    images = sorted(p for p in staging.iterdir() if p.is_file())
    if len(images) != len(truth):
        raise DataFormatError(
            f"{archive}: {len(images)} validation images, the devkit's ground truth has "
            f"{len(truth)}"
        )
    for path, label in zip(images, truth, strict=True):
        folder = target / wnids[label - 1]
        folder.mkdir(parents=True, exist_ok=True)
        path.replace(folder / path.name)
    shutil.rmtree(staging)


def extract(paths: dict[str, Path], root: Path) -> None:
    """Extract the verified archives into root/train and root/val (each once: a marker file
    is written after a split is complete, so an interrupted extraction starts again)."""
    wnids, truth = read_devkit(paths[DEVKIT_ARCHIVE.filename])  # 1000 in the md5-checked one
    for split, archive in (("train", TRAIN_ARCHIVE), ("val", VAL_ARCHIVE)):
        target, done = root / split, root / f"{DONE}_{split}"
        if done.is_file():
            continue
        shutil.rmtree(target, ignore_errors=True)
        log.info("extracting %s into %s", archive.filename, target)
        if split == "train":
            extract_train(paths[archive.filename], target)
        else:
            extract_val(paths[archive.filename], target, wnids, truth)
        done.write_text("complete\n")


def build_imagenet(
    paths,
    image_size: int = 224,
    load_size: int = 256,
    coarse_map: str | None = None,
    on_corrupt: str = "stop",
) -> dict[str, np.ndarray]:
    """`imagenet`: the archives extracted next to them (data_dir/imagenet), read as an
    image folder with train_dir 'train' and test_dir 'val'; fine classes are the WordNet IDs."""
    root = Path(paths[DEVKIT_ARCHIVE.filename]).parent / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    extract(paths, root)
    options = {
        "root": str(root),
        "train_dir": "train",
        "test_dir": "val",
        "image_size": image_size,
        "load_size": load_size,
        "coarse_map": coarse_map,
        "on_corrupt": on_corrupt,
    }
    return folder_arrays(settings(options))
