"""A user's stimulus set for the RDM probe (seed 001's 96 images), read from an image folder.

Seed 001 computes its RDMs on the 96 object images of Kriegeskorte et al. (2008), which may
not be redistributed: the offline default is a CIFAR stand-in drawn from the dataset
(`ssltrace.probesets`), and `probes.rdm.images_dir` points at the real set (or any other)
laid out as

    <images_dir>/<group>/<image>               label = group
    <images_dir>/<group>/<category>/<image>    label = category within the group

e.g. `animate/faces/01.png`, `inanimate/objects/17.png`. Groups are the blocks of the RDM
figures and of the within/between-group analysis (`coarse`); categories, where given, are the
`labels`. Every image file (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp; any case) is used;
names starting with "." are ignored. Order: groups, categories and files sorted by name, so the
RDM shows each group as a diagonal block. Each image becomes RGB (alpha composited on white,
the background of the Kriegeskorte set), is centre-cropped to a square and resized to the
dataset's side (Pillow's bicubic `ImageOps.fit`), so it enters the network like a test image.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
KEY = "probes.rdm.images_dir"


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and _visible(p) and p.suffix.lower() in EXTENSIONS
    )


def stimulus_files(folder: str | Path) -> list[tuple[str, str, Path]]:
    """(group, category, file) of every image, in probe order; ValueError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{KEY}: {str(folder)!r} is not a folder")
    groups = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    if not groups:
        raise ValueError(
            f"{KEY}: {str(folder)!r} holds no group folders; expected <group>/<image> or "
            "<group>/<category>/<image>"
        )
    out = []
    for group in groups:
        images = _images_in(group)
        categories = sorted(p for p in group.iterdir() if p.is_dir() and _visible(p))
        if images and categories:
            raise ValueError(
                f"{KEY}: group folder {str(group)!r} mixes images and category folders; put "
                "every image one level down (<group>/<image> or <group>/<category>/<image>)"
            )
        if not images and not categories:
            raise ValueError(f"{KEY}: group folder {str(group)!r} holds no images")
        for image in images:
            out.append((group.name, group.name, image))
        for category in categories:
            found = _images_in(category)
            if not found:
                raise ValueError(f"{KEY}: category folder {str(category)!r} holds no images")
            out.extend((group.name, f"{group.name}/{category.name}", image) for image in found)
    return out


def folder_digest(folder: str | Path) -> str:
    """sha256 of every image's relative path and bytes: changes when the stimulus set does."""
    digest = hashlib.sha256()
    root = Path(folder)
    for _, _, path in stimulus_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def load_image(path: Path, side: int) -> np.ndarray:
    """uint8 [side, side, 3]: RGB (alpha on white), centre square crop, bicubic resize."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, rgba)
            rgb = image.convert("RGB")
    except OSError as error:
        raise ValueError(f"{KEY}: cannot read image {str(path)!r}: {error}") from None
    fitted = ImageOps.fit(rgb, (side, side), method=Image.Resampling.BICUBIC)
    return np.asarray(fitted, dtype=np.uint8)


def stimulus_probe(folder: str | Path, side: int) -> dict:
    """The RDM probe set (ARCHITECTURE's probe format) of the images in `folder`.

    `labels` index `class_names` (categories, or groups where a group has none), `coarse`
    indexes `coarse_names` (groups); `source_files` are the paths relative to `folder`.
    """
    root = Path(folder)
    files = stimulus_files(root)
    groups = list(dict.fromkeys(group for group, _, _ in files))
    classes = list(dict.fromkeys(category for _, category, _ in files))
    return {
        "images": np.stack([load_image(path, side) for _, _, path in files]),
        "labels": np.array([classes.index(c) for _, c, _ in files], dtype=np.int64),
        "coarse": np.array([groups.index(g) for g, _, _ in files], dtype=np.int64),
        "class_names": np.array(classes),
        "coarse_names": np.array(groups),
        "source_files": np.array([str(path.relative_to(root)) for _, _, path in files]),
        "source_index": np.arange(len(files), dtype=np.int64),
    }
