"""Image-folder datasets: torchvision's ImageFolder layout, and ImageNet from its archives.

A folder dataset is too big to hold as pixels, so its dataset file (docs/ARCHITECTURE.md,
"Dataset file") lists the images instead: `kind = "folder"`, the `root` folder, the files of
each split relative to it, their labels, and the two sides images are decoded to:

- `image_size`: the side of the probe images (splits / probesets decode the chosen files at
  it: the centre square, resized to it, bicubic with antialiasing) and of the network
  input (the augmentation's `size`).
- `load_size` (>= image_size): the side of the square that the training loader decodes each
  image to (centre square, resized) before the random resized crop on the device
  cuts a crop of it and resizes that to `augment.size`. A larger load_size keeps more of the
  image for the crop to sample from (ImageNet practice resizes to 256 and evaluates the
  central 224); a smaller one means less to decode and move per image.

Building the file decodes every image once (in threads), so a corrupt file is found before
any training: `on_corrupt: stop` (default) names it and stops; `skip` leaves it out, with a
warning that gives the count and lists every skipped file in the log. Nothing is skipped
silently.

Coarse classes come from `coarse_map`, a TSV file of `fine_class<TAB>coarse_class` lines (e.g.
WordNet superclasses of ImageNet's synsets); without it each class is its own coarse class,
as in CIFAR-10.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssltrace.data.validate import DataFormatError

log = logging.getLogger(__name__)

KIND = "folder"
# What torchvision.io.decode_image reads (lower-cased suffixes).
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
ON_CORRUPT = ("stop", "skip")


@dataclass(frozen=True)
class FolderSettings:
    """The options of a folder dataset, checked (each error names its dataset.options key)."""

    root: Path
    train_dir: str = "train"
    test_dir: str = "val"
    image_size: int = 224
    load_size: int = 256
    coarse_map: Path | None = None
    on_corrupt: str = "stop"

    def __post_init__(self) -> None:
        for key in ("image_size", "load_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 8:
                raise ValueError(f"dataset.options.{key} must be an integer >= 8, got {value!r}")
        if self.load_size < self.image_size:
            raise ValueError(
                f"dataset.options.load_size ({self.load_size}) must be >= "
                f"dataset.options.image_size ({self.image_size}): the loader decodes to "
                "load_size and the crop is taken from that"
            )
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(
                f"dataset.options.on_corrupt must be one of {', '.join(ON_CORRUPT)}, "
                f"got {self.on_corrupt!r}"
            )


def settings(
    options: Mapping[str, object], root_required: bool = True, allowed: Iterable[str] | None = None
) -> FolderSettings:
    """The checked settings of `options` (dataset.options); `allowed`: the keys the source
    takes (default: all of FolderSettings')."""
    opts = dict(options)
    allowed = set(FolderSettings.__dataclass_fields__ if allowed is None else allowed)
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ValueError(
            f"dataset.options: unknown option(s) {', '.join(unknown)} for a folder dataset; "
            f"accepted: {', '.join(sorted(allowed))}"
        )
    root = opts.pop("root", None)
    if root is None and root_required:
        raise ValueError("dataset.options.root: the image folder is not set")
    cmap = opts.pop("coarse_map", None)
    return FolderSettings(
        Path(root) if root is not None else Path("."),
        coarse_map=Path(cmap) if cmap else None,
        **opts,
    )


# ----------------------------------------------------------------------------- scanning
def is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def scan_split(root: Path, subdir: str, key: str) -> dict[str, list[str]]:
    """{class folder: sorted image paths relative to root} of root/subdir (ImageFolder order:
    classes sorted by name). Raises naming `key` for a missing folder or one without images."""
    top = root / subdir
    if not top.is_dir():
        raise DataFormatError(f"dataset.options.{key}: {top} is not a folder")
    classes = sorted(e.name for e in os.scandir(top) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataFormatError(
            f"dataset.options.{key}: {top} has no class folders (expected {top}/<class>/<image>)"
        )
    out = {}
    for name in classes:
        files = []
        for dirpath, _, names in os.walk(top / name):
            rel = Path(dirpath).relative_to(root)
            files += [str(rel / n) for n in names if is_image(n)]
        if not files:
            raise DataFormatError(
                f"dataset.options.{key}: class folder {top / name} has no images "
                f"({', '.join(EXTENSIONS)})"
            )
        out[name] = sorted(files)
    return out


def read_coarse_map(path: Path, classes: Iterable[str]) -> tuple[list[str], np.ndarray]:
    """(coarse names in order of first appearance in the file, coarse index of each class).

    Every class must be mapped exactly once and every mapped class must exist."""
    classes = list(classes)
    if not Path(path).is_file():
        raise DataFormatError(f"dataset.options.coarse_map: {path} does not exist")
    mapping: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise DataFormatError(
                f"dataset.options.coarse_map: {path} line {number}: expected "
                f"'fine_class<TAB>coarse_class', got {line!r}"
            )
        fine, coarse = (p.strip() for p in parts)
        if fine in mapping:
            raise DataFormatError(
                f"dataset.options.coarse_map: {path} line {number}: class {fine!r} mapped twice"
            )
        mapping[fine] = coarse
    unknown = sorted(set(mapping) - set(classes))
    if unknown:
        raise DataFormatError(
            f"dataset.options.coarse_map: {path} names {len(unknown)} class(es) that are not "
            f"class folders: {', '.join(unknown[:10])}"
        )
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise DataFormatError(
            f"dataset.options.coarse_map: {path} does not map {len(missing)} class(es): "
            f"{', '.join(missing[:10])}"
        )
    coarse_names = list(dict.fromkeys(mapping[c] for c in classes))
    position = {name: i for i, name in enumerate(coarse_names)}
    return coarse_names, np.array([position[mapping[c]] for c in classes], dtype=np.int64)


@dataclass(frozen=True)
class Listing:
    """The classes and files of a folder dataset (no pixels read)."""

    fine_names: list[str]
    coarse_names: list[str]
    fine_to_coarse: np.ndarray
    files: dict[str, dict[str, list[str]]]  # split -> class -> relative paths

    def per_class(self, split: str) -> int:
        """The fewest images of any class in `split` (what a balanced probe can draw)."""
        return min(len(v) for v in self.files[split].values())


def list_folder(s: FolderSettings) -> Listing:
    """Scan both splits and the coarse map; raise DataFormatError naming the option."""
    if not s.root.is_dir():
        raise DataFormatError(f"dataset.options.root: {s.root} is not a folder")
    train = scan_split(s.root, s.train_dir, "train_dir")
    test = scan_split(s.root, s.test_dir, "test_dir")
    for split_key, have, other in (("test_dir", test, train), ("train_dir", train, test)):
        absent = [c for c in other if c not in have]
        if absent:
            raise DataFormatError(
                f"dataset.options.{split_key}: {s.root / getattr(s, split_key)} lacks class "
                f"folder(s) {', '.join(absent[:10])} (present in the other split)"
            )
    fine = list(train)
    if s.coarse_map is None:
        coarse, f2c = list(fine), np.arange(len(fine), dtype=np.int64)
    else:
        coarse, f2c = read_coarse_map(s.coarse_map, fine)
    return Listing(fine, coarse, f2c, {"train": train, "test": test})


@functools.lru_cache(maxsize=8)
def _cached_listing(s: FolderSettings, mtimes: tuple) -> Listing:
    return list_folder(s)


def cached_listing(s: FolderSettings) -> Listing:
    """`list_folder`, scanned once per process while the folders are unchanged (config checks
    ask for the facts many times)."""
    paths = [s.root, s.root / s.train_dir, s.root / s.test_dir, s.coarse_map]
    mtimes = tuple(p.stat().st_mtime_ns if p and p.exists() else None for p in paths)
    return _cached_listing(s, mtimes)


# ----------------------------------------------------------------------------- decoding
def decode_square(path: str | Path, side: int):
    """uint8 tensor [side, side, 3]: the image decoded as RGB (torchvision.io), its centre
    square cut out and resized to `side` (bicubic, antialiased): the geometry and filter of the
    neural stimulus images (ssltrace.data.stimuli.load_image), so a probe image of a folder
    dataset is made as a stimulus image is. Equivalent to resizing the short side and then
    cropping the centre."""
    import torch
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 points to TorchCodec; still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        image = decode_image(data, mode=ImageReadMode.RGB)  # [3, H, W]
    short = min(image.shape[-2:])
    image = F.center_crop(image, [short, short])
    image = F.resize(image, [side, side], InterpolationMode.BICUBIC, antialias=True)
    return image.permute(1, 2, 0).contiguous()


def decode_many(root: Path, files, side: int, threads: int | None = None) -> np.ndarray:
    """uint8 [n, side, side, 3] of root/files (decode_square each), decoded in threads."""
    out = np.empty((len(files), side, side, 3), np.uint8)

    def one(i):
        out[i] = decode_square(Path(root) / str(files[i]), side).numpy()

    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(files))))
    return out


def _readable(path: Path) -> str | None:
    """None if the image decodes, else why not."""
    try:
        decode_square(path, 8)
    except Exception as exc:  # any decoder failure means the file cannot be trained on
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def check_files(root: Path, files: list[str], on_corrupt: str, threads: int | None = None):
    """The files that decode (all of them, unless on_corrupt='skip' drops the corrupt ones,
    with a warning and every skipped file logged). 'stop' raises naming the first bad file."""
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        problems = list(pool.map(lambda f: _readable(root / f), files))
    bad = [(f, p) for f, p in zip(files, problems, strict=True) if p is not None]
    if bad and on_corrupt == "stop":
        listing = "; ".join(f"{root / f} ({p})" for f, p in bad[:5])
        raise DataFormatError(
            f"{len(bad)} image(s) cannot be decoded: {listing}. Remove or replace them, or set "
            "dataset.options.on_corrupt: skip to leave them out (with a warning)"
        )
    if bad:
        log.warning(
            "dataset.options.on_corrupt=skip: skipping %d corrupt image(s) of %d",
            len(bad),
            len(files),
        )
        for f, p in bad:
            log.warning("skipped corrupt image %s (%s)", root / f, p)
    dropped = {f for f, _ in bad}
    return [f for f in files if f not in dropped]


# ----------------------------------------------------------------------------- dataset file
def folder_arrays(s: FolderSettings, threads: int | None = None) -> dict[str, np.ndarray]:
    """The dataset-file arrays of a folder dataset (ARCHITECTURE.md, folder variant)."""
    listing = list_folder(s)
    out = {
        "kind": np.array(KIND),
        "root": np.array(str(s.root.absolute())),
        "fine_names": np.array(listing.fine_names),
        "coarse_names": np.array(listing.coarse_names),
        "fine_to_coarse": listing.fine_to_coarse,
        "image_size": np.array(s.image_size, dtype=np.int64),
        "load_size": np.array(s.load_size, dtype=np.int64),
    }
    for split in ("train", "test"):
        files, fine = [], []
        for c, name in enumerate(listing.fine_names):
            files += listing.files[split][name]
            fine += [c] * len(listing.files[split][name])
        keep = set(check_files(s.root, files, s.on_corrupt, threads))
        fine = np.array([c for f, c in zip(files, fine, strict=True) if f in keep], np.int64)
        files = [f for f in files if f in keep]
        out[f"{split}_files"] = np.array(files, dtype=str)
        out[f"{split}_bytes"] = np.array([(s.root / f).stat().st_size for f in files], np.int64)
        out[f"{split}_fine"] = fine
        out[f"{split}_coarse"] = listing.fine_to_coarse[fine]
    return out


def build_imagefolder(
    paths,
    root: str | None = None,
    train_dir: str = "train",
    test_dir: str = "val",
    image_size: int = 224,
    load_size: int = 256,
    coarse_map: str | None = None,
    on_corrupt: str = "stop",
) -> dict[str, np.ndarray]:
    """`imagefolder`: <root>/<train_dir>/<class>/<image> and <root>/<test_dir>/<class>/<image>."""
    options = dict(locals())
    options.pop("paths")
    return folder_arrays(settings(options))


def is_folder_dataset(arrays: Mapping) -> bool:
    return "kind" in arrays and str(np.asarray(arrays["kind"])) == KIND


class FolderArray:
    """A lazy uint8 [N, S, S, 3] image array of listed files: indexing selects (no decoding),
    `np.asarray` decodes (decode_square at S). Splits and probe sets index a folder dataset's
    `train_images` / `test_images` as they index the in-memory arrays of CIFAR."""

    def __init__(self, root: Path, files: np.ndarray, side: int):
        self.root, self.files, self.side = Path(root), np.asarray(files), int(side)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), self.side, self.side, 3)

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> FolderArray:
        files = self.files[index]
        if files.ndim == 0:
            return decode_square(self.root / str(files), self.side).numpy()
        return FolderArray(self.root, files, self.side)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = decode_many(self.root, self.files, self.side)
        return images if dtype is None else images.astype(dtype)


def with_lazy_images(arrays: dict) -> dict:
    """A loaded dataset file with `train_images` / `test_images` as FolderArrays at
    image_size when it is a folder dataset (else unchanged)."""
    if not is_folder_dataset(arrays):
        return arrays
    root, side = Path(str(arrays["root"])), int(arrays["image_size"])
    out = dict(arrays)
    for split in ("train", "test"):
        out[f"{split}_images"] = FolderArray(root, arrays[f"{split}_files"], side)
    return out
