"""A tiny generated image folder and a study config that runs the whole DAG on it at 224 px.

Shared by tests/test_data_folder.py (datasets, loader, probes) and test_folder_workflow.py
(the DAG); a multi-process (DDP) variant can reuse `folder_config` with its own train keys.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("apple", "bike", "cloud", "dune")
COARSE = {"apple": "natural", "bike": "artificial", "cloud": "natural", "dune": "sky"}
# The DAG's folder: four coarse classes of two fine ones, so the two known coarse classes have
# four fine classes (the geometry probes need two of each) and the two novel ones four.
DAG_CLASSES = ("apple", "bike", "car", "cloud", "dune", "lake", "rain", "tree")
DAG_COARSE = {
    "apple": "natural",
    "tree": "natural",
    "bike": "artificial",
    "car": "artificial",
    "dune": "scene",
    "lake": "scene",
    "cloud": "weather",
    "rain": "weather",
}
SIDES = (64, 96, 128, 160, 224)  # sizes 64..224 px, non-square in the second variant


def _image(
    rng: np.random.Generator, label: int, height: int, width: int, n_classes: int
) -> np.ndarray:
    """A class-coloured gradient with stripes whose orientation depends on the class, so a
    network can learn the classes (RGB uint8 [height, width, 3])."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    angle = np.pi * label / n_classes
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 6 * (x * np.cos(angle) + y * np.sin(angle)))
    base = np.array([(label * 70) % 256, 255 - label * 50, 60 + label * 40], np.float64)
    image = base * (0.4 + 0.6 * stripes[..., None]) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folder(
    root: Path,
    train_per_class: int = 6,
    test_per_class: int = 3,
    seed: int = 0,
    corrupt: bool = False,
    fmt: str = "JPEG",
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """<root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg of CLASSES, sides 64..224 px;
    with `corrupt`, one training JPEG of the first class is truncated (undecodable)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for split, n in (("train", train_per_class), ("val", test_per_class)):
        for label, name in enumerate(classes):
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h = int(SIDES[(i + label) % len(SIDES)])
                w = int(SIDES[(i + 2 * label + 1) % len(SIDES)])
                image = _image(rng, label, h, w, len(classes))
                Image.fromarray(image).save(folder / f"{name}_{i:03d}.{ext}")
    if corrupt:
        bad = Path(root) / "train" / classes[0] / f"{classes[0]}_000.{ext}"
        bad.write_bytes(bad.read_bytes()[:200])
    return Path(root)


def write_coarse_map(path: Path, mapping: dict[str, str] | None = None) -> Path:
    mapping = COARSE if mapping is None else mapping
    Path(path).write_text("".join(f"{k}\t{v}\n" for k, v in mapping.items()))
    return Path(path)


def folder_config(root: Path, coarse_map: Path | None = None, **top_level) -> dict:
    """The tiny study (tests/tiny_study.py: config.yaml + presets/ci.yaml + TINY) on the image
    folder at 224-px input: ImageNet-stem ResNet-18 (width 0.25), SimCLR as 2 processes, one
    seed, 2 epochs, tiny probes, on the CPU; `top_level` overrides merge last."""
    from ssltrace import config as sslconfig
    from tests.tiny_study import tiny_config

    options = {"root": str(root), "image_size": 224, "load_size": 240}
    if coarse_map is not None:
        options["coarse_map"] = str(coarse_map)
    folder = {
        "dataset": {"name": "imagefolder", "options": options},
        # width 0.25: the 224-px DAG at about 1/16 of a full ResNet-18's FLOPs on a CPU (at 0.125,
        # torch 2.14's CPU channels_last backward aborts: "double free or corruption")
        "architecture": {"name": "resnet18_imagenet", "width": 0.25},
        # one run, trained as 2 processes (torchrun, gloo on the CPU: training/ddp.py); the
        # one-process folder path is tested in test_streaming.py (each run here costs minutes)
        "methods": ["simclr"],
        "method_settings": {"simclr": {"train": {"processes": 2}}},
        "split": {"seed": 0, "n_known": 2, "n_novel": 2},
        "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "loader_workers": 1},
        "augment": {"size": 224},
        "fewshot": {"shots": 2, "trials": 5},
        "neighbours": {"k": 2, "ranked_points": 4, "quality_neighbours": 3},
        "random_targets": {
            "network_settings": {  # at the 224-px input (the ci preset's are 32-px networks)
                "resnet18": {"architecture": {"name": "resnet18_imagenet", "width": 0.25}},
                "vit": {
                    "architecture": {
                        "name": "vit",
                        "depth": 2,
                        "hidden": 32,
                        "heads": 4,
                        "patch_size": 32,
                        "image_size": 224,
                    }
                },
            }
        },
        "probes": {
            "novel": {"images_per_class": 3, "source": "test"},
            "rdm": {"n_images": 8},  # two images of each of four groups
            "known": {"train_per_class": 4, "test_per_class": 2},
            "sample": {"n_images": 4, "k_train": 2, "k_test": 1},
        },
    }
    cfg = sslconfig.deep_merge(tiny_config(), folder)
    cfg["dataset"] = folder["dataset"]  # the synthetic set's options do not apply
    return sslconfig.deep_merge(cfg, top_level)
