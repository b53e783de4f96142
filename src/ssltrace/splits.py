"""Known/novel class split and the probe sets that activations are extracted for.

Pretraining sees only training images of the known coarse classes; few-shot evaluation and
clustering use the fine classes of the novel coarse classes, which the network never saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssltrace import io
from ssltrace.data.folder import FolderArray, with_lazy_images
from ssltrace.layout import PROBES

SPLIT_MODES = ("held_out", "all")


def make_split(
    fine_to_coarse: np.ndarray,
    coarse_names,
    n_known: int,
    n_novel: int,
    seed: int,
    mode: str = "held_out",
):
    """Seeded split of the coarse classes into known and novel ones (disjoint).

    mode "held_out" (seed 000): n_known known and n_novel novel coarse classes. "all" (seed
    004, §3): every class is known and none novel: pretraining and the geometry probes see
    all classes (CIFAR-100: 100 classes in 20 superclasses); n_known and n_novel do not
    apply, and the analyses of novel classes are not run (`ssltrace.study.skipped`).
    """
    n_coarse = len(coarse_names)
    if mode not in SPLIT_MODES:
        raise ValueError(f"split.mode must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
    if mode == "all":
        n_known, n_novel = n_coarse, 0
    if n_known + n_novel > n_coarse:
        raise ValueError(f"n_known + n_novel = {n_known + n_novel} > {n_coarse} coarse classes")
    order = np.random.default_rng(seed).permutation(n_coarse)
    known = sorted(int(c) for c in order[:n_known])
    novel = sorted(int(c) for c in order[n_known : n_known + n_novel])
    fine_of = {c: [int(f) for f in np.flatnonzero(fine_to_coarse == c)] for c in range(n_coarse)}
    return {
        "seed": int(seed),
        # only when not the default, so a held-out study's split.json stays byte-identical
        **({"mode": mode} if mode != "held_out" else {}),
        "known_coarse": known,
        "novel_coarse": novel,
        "known_fine": sorted(f for c in known for f in fine_of[c]),
        "novel_fine": sorted(f for c in novel for f in fine_of[c]),
        "known_coarse_names": [str(coarse_names[c]) for c in known],
        "novel_coarse_names": [str(coarse_names[c]) for c in novel],
    }


def write_split(
    dataset_path: Path, out: Path, n_known: int, n_novel: int, seed: int, mode: str = "held_out"
) -> dict:
    data = io.load_npz(dataset_path)
    split = make_split(data["fine_to_coarse"], data["coarse_names"], n_known, n_novel, seed, mode)
    io.write_json(out, split)
    return split


def _balanced_subset(labels: np.ndarray, classes, per_class: int | None, seed: int) -> np.ndarray:
    """`per_class` images of each class, drawn with `seed`; None: every image of each class."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if per_class is None:
            picked.append(idx)
            continue
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


def default_groups(dataset_name: str, coarse_names) -> dict[str, list[str]]:
    """Category groups of the RDM probe set when the config names none.

    CIFAR-100 uses the people / animals / vehicles / plants-scenes grouping of
    `ssltrace.probesets.CIFAR100_GROUPS`; any other dataset's coarse classes are dealt into
    four groups in order (as many as there are coarse classes, when fewer), which keeps the
    analysis path identical on the synthetic data.
    """
    from ssltrace.probesets import CIFAR100_GROUPS

    if dataset_name == "cifar100":
        return CIFAR100_GROUPS
    names = [str(n) for n in coarse_names]
    groups = min(4, len(names))  # an image folder may have fewer than four coarse classes
    return {f"group{g + 1}": names[g::groups] for g in range(groups)}


def rdm_probe(dataset: dict, groups: dict, n_images: int, seed: int) -> dict:
    """The RDM probe set of seed 001: images balanced over named groups of coarse classes.

    `labels` are coarse classes, `coarse` the group of each image (`coarse_names` = groups).
    """
    from ssltrace.probesets import rdm_probe_indices

    idx, group_of = rdm_probe_indices(
        dataset["test_coarse"], dataset["coarse_names"], groups, n_images, seed
    )
    return {
        "images": dataset["test_images"][idx],
        "labels": dataset["test_coarse"][idx].astype(np.int64),
        "coarse": group_of,
        "class_names": dataset["coarse_names"],
        "coarse_names": np.array(list(groups)),
        "source_index": idx.astype(np.int64),
    }


def known_probe(
    dataset: dict, split: dict, train_per_class: int, test_per_class: int, seed: int
) -> dict:
    """Train and test images of the known (pretraining) classes for the geometry analyses.

    `part` is 0 for the probes' training samples, 1 for their test samples.
    """
    parts = []
    for part, source, per_class in ((0, "train", train_per_class), (1, "test", test_per_class)):
        fine, coarse = dataset[f"{source}_fine"], dataset[f"{source}_coarse"]
        idx = _balanced_subset(fine, split["known_fine"], per_class, seed + part)
        fine_pos = {f: i for i, f in enumerate(split["known_fine"])}
        coarse_pos = {c: i for i, c in enumerate(split["known_coarse"])}
        parts.append(
            {
                "images": dataset[f"{source}_images"][idx],
                "labels": np.array([fine_pos[int(f)] for f in fine[idx]], dtype=np.int64),
                "coarse": np.array([coarse_pos[int(c)] for c in coarse[idx]], dtype=np.int64),
                "part": np.full(len(idx), part, dtype=np.int64),
            }
        )
    probe = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    probe["class_names"] = dataset["fine_names"][split["known_fine"]]
    probe["coarse_names"] = np.asarray(split["known_coarse_names"])
    return probe


def sample_probe(
    dataset: dict, split: dict, n_images: int, k_train: int, k_test: int, seed: int, augment: dict
) -> dict:
    """Sample-level task of seed 004 §3: N known-class training images x K (train) and K'
    (test) augmentations, labelled by source image.

    The augmented views are stored as uint8 images (de-normalised and rounded) so every
    checkpoint sees exactly the same views and extraction treats them like any probe set.
    """
    import torch

    from ssltrace.analysis.geometry import sample_level_sets
    from ssltrace.augment import Augmenter

    known = np.flatnonzero(np.isin(dataset["train_fine"], split["known_fine"]))
    pool = dataset["train_images"][known]
    if isinstance(pool, FolderArray):
        # Decode only the n_images sources that sample_level_sets would draw (its choice,
        # made here): given exactly those, it draws all of them in order, and its seeded
        # augmentations are the same, so the views equal those of the fully decoded pool.
        chosen = np.sort(np.random.default_rng(seed).choice(len(pool), n_images, False))
        pool, known = np.asarray(pool[chosen]), known[chosen]
    augmenter = Augmenter(augment, "cpu")
    train, train_y, test, test_y = sample_level_sets(
        pool,
        augment_fn=augmenter,
        n_images=n_images,
        k_train=k_train,
        k_test=k_test,
        seed=seed,
        device="cpu",
    )
    mean = torch.tensor(augmenter.config.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(augmenter.config.std).reshape(1, 3, 1, 1)

    def to_uint8(x):
        pixels = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).numpy()

    # Labels are renumbered 0..N-1 in source order; `source_index` keeps the dataset index.
    sources, labels = np.unique(np.concatenate([train_y, test_y]), return_inverse=True)
    return {
        "images": np.concatenate([to_uint8(train), to_uint8(test)]),
        "labels": labels.astype(np.int64),
        "coarse": labels.astype(np.int64),
        "part": np.repeat([0, 1], [len(train_y), len(test_y)]).astype(np.int64),
        "class_names": np.array([f"image{i}" for i in known[sources]]),
        "coarse_names": np.array([f"image{i}" for i in known[sources]]),
        "source_index": known[sources].astype(np.int64),
    }


# Probe kinds (ssltrace.layout.PROBES) drawn with the known/novel split; `human` is drawn from
# the human-comparison file, `rdm` from the dataset alone, `gratings` made at its image size.
FROM_SPLIT = ("novel", "known", "sample")


def write_probe(
    kind: str, dataset_path: Path, split_path: Path | None, out: Path, **options
) -> None:
    import json

    # A folder dataset's images are decoded at image_size only for the files a probe picks.
    data = with_lazy_images(io.load_npz(dataset_path))
    split = json.loads(Path(split_path).read_text()) if split_path else None
    if kind == "novel":
        probe = novel_probe(
            data, split, options["images_per_class"], options["source"], options["seed"]
        )
    elif kind == "human":
        probe = human_probe(data, options["images_per_class"], options["seed"])
    elif kind == "rdm" and options.get("images_dir"):
        from ssltrace.data.stimuli import stimulus_probe

        probe = stimulus_probe(options["images_dir"], side=int(data["test_images"].shape[1]))
    elif kind == "rdm":
        groups = options.get("groups") or default_groups(options["dataset"], data["coarse_names"])
        probe = rdm_probe(data, groups, options["n_images"], options["seed"])
    elif kind == "known":
        probe = known_probe(
            data, split, options["train_per_class"], options["test_per_class"], options["seed"]
        )
    elif kind == "sample":
        probe = sample_probe(
            data,
            split,
            options["n_images"],
            options["k_train"],
            options["k_test"],
            options["seed"],
            options.get("augment"),
        )
    elif kind == "objects":
        from ssltrace.analysis.transfer import object_probe

        probe = object_probe(**options)
    elif kind == "gratings":
        from ssltrace.analysis.orientation import grating_probe

        probe = grating_probe(int(data["train_images"].shape[1]), **options)
    else:
        raise ValueError(f"unknown probe set {kind!r}; expected one of {', '.join(PROBES)}")
    io.save_npz(out, {key: np.asarray(value) for key, value in probe.items()})
