"""Known/novel class split and the probe sets that activations are extracted for.

Pretraining sees only training images of the known coarse classes; few-shot evaluation and
clustering use the fine classes of the novel coarse classes, which the network never saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace import io


def make_split(fine_to_coarse: np.ndarray, coarse_names, n_known: int, n_novel: int, seed: int):
    """Seeded split of the coarse classes into known and novel ones (disjoint)."""
    n_coarse = len(coarse_names)
    if n_known + n_novel > n_coarse:
        raise ValueError(f"n_known + n_novel = {n_known + n_novel} > {n_coarse} coarse classes")
    order = np.random.default_rng(seed).permutation(n_coarse)
    known = sorted(int(c) for c in order[:n_known])
    novel = sorted(int(c) for c in order[n_known : n_known + n_novel])
    fine_of = {c: [int(f) for f in np.flatnonzero(fine_to_coarse == c)] for c in range(n_coarse)}
    return {
        "seed": int(seed),
        "known_coarse": known,
        "novel_coarse": novel,
        "known_fine": sorted(f for c in known for f in fine_of[c]),
        "novel_fine": sorted(f for c in novel for f in fine_of[c]),
        "known_coarse_names": [str(coarse_names[c]) for c in known],
        "novel_coarse_names": [str(coarse_names[c]) for c in novel],
    }


def write_split(dataset_path: Path, out: Path, n_known: int, n_novel: int, seed: int) -> dict:
    data = io.load_npz(dataset_path)
    split = make_split(data["fine_to_coarse"], data["coarse_names"], n_known, n_novel, seed)
    io.write_json(out, split)
    return split


def _balanced_subset(labels: np.ndarray, classes, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than {per_class} requested")
        picked.append(np.sort(rng.choice(idx, per_class, replace=False)))
    return np.concatenate(picked)


def novel_probe(dataset: dict, split: dict, per_class: int, source: str, seed: int) -> dict:
    """Images of the novel fine classes; labels index `novel_fine`, coarse index `novel_coarse`."""
    fine, coarse = dataset[f"{source}_fine"], dataset[f"{source}_coarse"]
    idx = _balanced_subset(fine, split["novel_fine"], per_class, seed)
    fine_pos = {f: i for i, f in enumerate(split["novel_fine"])}
    coarse_pos = {c: i for i, c in enumerate(split["novel_coarse"])}
    return {
        "images": dataset[f"{source}_images"][idx],
        "labels": np.array([fine_pos[int(f)] for f in fine[idx]], dtype=np.int64),
        "coarse": np.array([coarse_pos[int(c)] for c in coarse[idx]], dtype=np.int64),
        "class_names": dataset["fine_names"][split["novel_fine"]],
        "coarse_names": np.asarray(split["novel_coarse_names"]),
        "source_index": idx.astype(np.int64),
    }


def human_probe(human: dict, per_class: int, seed: int) -> dict:
    """CIFAR-10 test images (or their stand-in) with the human counts of each image."""
    labels = human["labels"]
    idx = _balanced_subset(labels, range(len(human["class_names"])), per_class, seed)
    return {
        "images": human["images"][idx],
        "labels": labels[idx].astype(np.int64),
        "coarse": labels[idx].astype(np.int64),
        "class_names": human["class_names"],
        "coarse_names": human["class_names"],
        "human_counts": human["human_counts"][idx],
        "source_index": idx.astype(np.int64),
    }


def write_probe(
    kind: str, dataset_path: Path, split_path: Path | None, out: Path, **options
) -> None:
    import json

    data = io.load_npz(dataset_path)
    if kind == "novel":
        split = json.loads(Path(split_path).read_text())
        probe = novel_probe(
            data, split, options["images_per_class"], options["source"], options["seed"]
        )
    elif kind == "human":
        probe = human_probe(data, options["images_per_class"], options["seed"])
    else:
        raise ValueError(f"unknown probe set {kind!r}; expected 'novel' or 'human'")
    io.save_npz(out, probe)
