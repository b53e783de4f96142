"""The dataset registries and the data stage's entry points.

A registry entry says which files it needs (none for the synthetic sets) and how to build the
arrays from their verified paths, so every checksum is checked in one place, before any
archive is opened.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ssltrace import io
from ssltrace.data import download as dl
from ssltrace.data import folder, imagenet, synthetic
from ssltrace.data.cifar import CIFAR10_NAMES, CIFAR100_COARSE_NAMES, read_cifar10, read_cifar100
from ssltrace.data.cifar10h import cifar10h_human
from ssltrace.data.download import (
    CIFAR10_ARCHIVE,
    CIFAR10H_COUNTS,
    CIFAR100_ARCHIVE,
    Opener,
    RemoteFile,
)
from ssltrace.data.validate import validate_dataset, validate_human
from ssltrace.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """A dataset: how to build its arrays, and the facts config checks need without the data.

    `per_class[part]` is the number of images per class of a part ('train', 'test'; 'all'
    for a human-comparison set), or the name of the `build` option that sets it.
    """

    description: str  # one line, for `ssltrace list`
    build: Callable[..., dict[str, np.ndarray]]  # build(paths, **options)
    files: tuple[RemoteFile, ...] = ()
    coarse_names: tuple[str, ...] = ()
    n_classes: int = 0  # fine classes (the classes of a human-comparison set)
    colour: bool = True  # RGB images that carry colour (False: grey copied into 3 channels)
    depth: bool = False  # the arrays include train_depth / test_depth (depth prediction)
    per_class: Mapping[str, int | str] = field(default_factory=dict)
    downloadable: bool = True  # False: files are only verified, never fetched (ImageNet)
    # Every training image, where classes differ in size (ImageNet: 732..1300): estimates
    # (`ssltrace plan`) scale it, while checks keep per_class["train"], the smallest class.
    # 0: per_class["train"] x n_classes is exact.
    train_total: int = 0
    # options -> this source with the facts of that data (a folder dataset's classes and
    # counts depend on its folder); None: the facts above hold for any options.
    facts: Callable[[Mapping[str, object]], DataSource] | None = None

    def resolved(self, options: Mapping[str, object] | None = None) -> DataSource:
        """This source with facts for `options` (reads a folder's listing, not its pixels)."""
        return self if self.facts is None else self.facts(dict(options or {}))

    def options(self) -> list[str]:
        return list(self.option_defaults())

    def option_defaults(self) -> dict[str, object]:
        params = list(inspect.signature(self.build).parameters.values())[1:]
        return {p.name: p.default for p in params}

    @property
    def n_coarse(self) -> int:
        return len(self.coarse_names)

    @property
    def fine_per_coarse(self) -> int:
        return self.n_classes // max(self.n_coarse, 1)

    def images_per_class(self, part: str, options: Mapping[str, object] | None = None) -> int:
        """Images per class of `part`, with `options` (the config's dataset options) applied."""
        count = self.per_class[part]
        if isinstance(count, str):
            count = {**self.option_defaults(), **(options or {})}[count]
        return int(count)


DATASETS: Registry[DataSource] = Registry("dataset")
HUMAN_SETS: Registry[DataSource] = Registry("human-comparison set")

DATASETS.register("cifar100")(
    DataSource(
        "CIFAR-100: 50k train / 10k test 32x32 images, 100 fine classes in 20 coarse ones",
        lambda paths: read_cifar100(paths[CIFAR100_ARCHIVE.filename]),
        (CIFAR100_ARCHIVE,),
        CIFAR100_COARSE_NAMES,
        n_classes=100,
        per_class={"train": 500, "test": 100},
    )
)

DATASETS.register("cifar10")(
    DataSource(
        "CIFAR-10: 50k train / 10k test 32x32 images, 10 classes (each its own coarse class)",
        lambda paths: read_cifar10(paths[CIFAR10_ARCHIVE.filename]),
        (CIFAR10_ARCHIVE,),
        CIFAR10_NAMES,
        n_classes=10,
        per_class={"train": 5000, "test": 1000},
    )
)


def _synthetic(paths, seed: int = 0, train_per_class: int = 500, test_per_class: int = 100):
    return synthetic.synthetic_dataset(seed, train_per_class, test_per_class)


DATASETS.register("synthetic")(
    DataSource(
        "offline textures in CIFAR-100's shape: 20 texture families x 5 parameter values",
        _synthetic,
        coarse_names=tuple(synthetic.class_names()[1]),
        n_classes=len(synthetic.class_names()[0]),
        depth=True,
        per_class={"train": "train_per_class", "test": "test_per_class"},
    )
)
HUMAN_SETS.register("cifar10h")(
    DataSource(
        "CIFAR-10 test images with CIFAR-10H human answer counts (~50 people per image)",
        lambda paths: cifar10h_human(
            paths[CIFAR10_ARCHIVE.filename], paths[CIFAR10H_COUNTS.filename]
        ),
        (CIFAR10_ARCHIVE, CIFAR10H_COUNTS),
        n_classes=10,
        per_class={"all": 1000},
    )
)


def _synthetic_human(paths, seed: int = 0, per_class: int = 1000, annotators: int = 50):
    return synthetic.human_set(seed, per_class, annotators)


HUMAN_SETS.register("synthetic")(
    DataSource(
        "offline 10 textures in 5 confusable pairs, simulated counts from a known confusion",
        _synthetic_human,
        n_classes=len(synthetic.HUMAN_CLASSES),
        per_class={"all": "per_class"},
    )
)


def _folder_facts(source: DataSource, listing) -> DataSource:
    return replace(
        source,
        coarse_names=tuple(listing.coarse_names),
        n_classes=len(listing.fine_names),
        per_class={"train": listing.per_class("train"), "test": listing.per_class("test")},
        facts=None,
    )


def _imagefolder_facts(options: Mapping[str, object]) -> DataSource:
    listing = folder.cached_listing(folder.settings(options))
    return _folder_facts(DATASETS.get("imagefolder"), listing)


def _imagenet_facts(options: Mapping[str, object]) -> DataSource:
    """ImageNet's fixed facts (1000 classes, >= 732 train and 50 val images each); coarse
    classes from the coarse_map's second column (checked against the wnids when built)."""
    allowed = DATASETS.get("imagenet").options()
    s = folder.settings(options, root_required=False, allowed=allowed)
    coarse = [f"n{i}" for i in range(imagenet.N_CLASSES)]
    if s.coarse_map is not None:
        if not s.coarse_map.is_file():
            raise folder.DataFormatError(
                f"dataset.options.coarse_map: {s.coarse_map} does not exist"
            )
        lines = [ln.split("\t") for ln in s.coarse_map.read_text().splitlines() if ln.strip()]
        coarse = list(dict.fromkeys(p[1].strip() for p in lines if len(p) == 2))
    return replace(
        DATASETS.get("imagenet"),
        coarse_names=tuple(coarse),
        per_class={"train": imagenet.TRAIN_MIN_PER_CLASS, "test": imagenet.VAL_PER_CLASS},
        train_total=imagenet.TRAIN_IMAGES,
        facts=None,
    )


DATASETS.register("imagefolder")(
    DataSource(
        "your images: <root>/<train_dir>/<class>/<image> and <root>/<test_dir>/<class>/<image>"
        " (torchvision ImageFolder layout), decoded from disk at image_size",
        folder.build_imagefolder,
        colour=True,
        facts=_imagefolder_facts,
    )
)
DATASETS.register("imagenet")(
    DataSource(
        "ImageNet (ILSVRC 2012) from your archives in data_dir (md5-checked, never downloaded)",
        imagenet.build_imagenet,
        imagenet.ARCHIVES,
        n_classes=imagenet.N_CLASSES,
        downloadable=False,
        facts=_imagenet_facts,
    )
)


def describe() -> dict[str, str]:
    """Dataset names (human-comparison sets prefixed `human:`) with one line each."""
    out = {name: DATASETS.get(name).description for name in DATASETS}
    out.update({f"human:{name}": HUMAN_SETS.get(name).description for name in HUMAN_SETS})
    return out


def _resolve(files, sources: Mapping[str, RemoteFile] | None) -> list[RemoteFile]:
    """`files` with entries of `sources` (e.g. a test's own checksums) replacing by filename."""
    return [(sources or {}).get(f.filename, f) for f in files]


def _files(name: str, sources: Mapping[str, RemoteFile] | None) -> list[RemoteFile]:
    """The files `name` needs, looked up in both registries."""
    if name not in DATASETS and name not in HUMAN_SETS:
        known = sorted(set(DATASETS.names()) | set(HUMAN_SETS.names()))
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(known)}")
    specs = [reg.get(name) for reg in (DATASETS, HUMAN_SETS) if name in reg]
    return _resolve(list({f.filename: f for s in specs for f in s.files}.values()), sources)


def check_available(
    name: str, data_dir: Path, *, sources: Mapping[str, RemoteFile] | None = None
) -> None:
    """Raise DataUnavailableError unless every file of `name` is in data_dir, checksum-verified.

    Downloads nothing; the message names each file, its URL and md5, and how to place it.
    """
    _obtain(_files(name, sources), Path(data_dir), dl.verify)


def fetch(
    name: str,
    data_dir: Path,
    *,
    sources: Mapping[str, RemoteFile] | None = None,
    opener: Opener | None = None,
) -> dict[str, Path]:
    """Download (or reuse, when the checksum matches) every file of `name` into data_dir
    (files with a `how`, such as ImageNet's, are only verified: they need a login)."""
    return _obtain(
        _files(name, sources),
        Path(data_dir),
        lambda r, d: dl.verify(r, d) if r.how else dl.ensure(r, d, opener),
    )


def _obtain(files, data_dir: Path, get) -> dict[str, Path]:
    """`get(remote, data_dir)` for every file, raising one error that names all that failed."""
    paths, problems = {}, []
    for remote in files:
        try:
            paths[remote.filename] = get(remote, data_dir)
        except dl.DataUnavailableError as exc:
            problems.append(str(exc))
    if problems:
        raise dl.DataUnavailableError("\n".join(problems))
    return paths


def prepare_dataset(
    name: str,
    data_dir: Path,
    out: Path,
    *,
    sources: Mapping[str, RemoteFile] | None = None,
    opener: Opener | None = None,
    download: bool = True,
    **options,
) -> None:
    """Write the dataset file (ARCHITECTURE.md) of DATASETS[name] to `out`, atomically.

    Real archives are taken from data_dir when their md5 matches, else downloaded there
    (unless download=False). `options` go to the dataset (see `ssltrace list`).
    """
    _prepare(DATASETS, validate_dataset, name, data_dir, out, sources, opener, download, options)


def prepare_human(
    name: str,
    data_dir: Path,
    out: Path,
    *,
    sources: Mapping[str, RemoteFile] | None = None,
    opener: Opener | None = None,
    download: bool = True,
    **options,
) -> None:
    """Write the human-comparison file of HUMAN_SETS[name] to `out`, atomically."""
    _prepare(HUMAN_SETS, validate_human, name, data_dir, out, sources, opener, download, options)


def _prepare(registry, validate, name, data_dir, out, sources, opener, download, options):
    spec = registry.get(name)
    unknown = sorted(set(options) - set(spec.options()))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for {registry.kind} {name!r}; "
            f"accepted: {', '.join(spec.options()) or 'none'}"
        )
    fetching = download and getattr(spec, "downloadable", True)
    get = (lambda r, d: dl.ensure(r, d, opener)) if fetching else dl.verify
    paths = _obtain(_resolve(spec.files, sources), Path(data_dir), get)
    arrays = spec.build(paths, **options)  # archives are opened only after their md5 matched
    validate(arrays)
    io.save_npz(out, arrays)
    log.info("wrote %s (%s %r)", out, registry.kind, name)
